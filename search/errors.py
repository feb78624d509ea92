"""The search layer's user error, apart from its modules so that the CLI can catch it without
importing pydantic, Optuna or Lightning."""


class StudyConfigError(ValueError):
    """A study file or flag that cannot be used; the message names the field and the fix."""
