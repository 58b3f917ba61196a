"""Errors with a one-line cause and fix; the CLI prints them without a traceback."""


class RecboleMambaError(ValueError):
    """Base class: ``str(error)`` is the whole message a user needs."""


class ConfigError(RecboleMambaError):
    """A config value the model cannot use (loss_type, fusion, pooling, ...)."""


class UnknownModelError(RecboleMambaError):
    """A model name that neither recbole-mamba nor RecBole defines."""


class BackendError(RecboleMambaError):
    """A requested selective-scan backend that cannot run here."""


class InputError(RecboleMambaError):
    """Input data no model can score: empty histories, over-long sequences, ..."""


class DatasetError(RecboleMambaError):
    """Dataset files that are missing or malformed (the message names file and line)."""


class CheckpointError(RecboleMambaError):
    """A checkpoint that is missing, not RecBole's, or saved by another model/config."""


class MissingDependencyError(RecboleMambaError, ImportError):
    """A required package that is not installed (the message says how to install it)."""
