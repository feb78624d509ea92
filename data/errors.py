class DataError(ValueError):
    """Unusable input data; the message names the file (and line) and how to fix it."""
