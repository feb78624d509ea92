class TrainingError(RuntimeError):
    """Training that cannot go on (NaN loss, no data); the message says why and what to try."""
