class ModelError(ValueError):
    """A model or reduction request that cannot be honoured; the message says why and what to do."""
