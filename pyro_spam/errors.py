"""User-facing errors: the CLI prints their message (no traceback) and exits with code 2."""


class PyroSpamError(Exception):
    """A problem with the user's input or environment, explained in one message."""


class DataError(PyroSpamError):
    """The data file is missing, unreadable or not in the course format."""


class ConfigError(PyroSpamError):
    """An option value is out of range or unknown."""


class TrainingError(PyroSpamError):
    """Training stopped because a loss or parameter became non-finite."""


class ModelFileError(PyroSpamError):
    """A saved model or checkpoint is corrupt, from another version, or does not match."""
