"""The errors lowdiff raises for problems a user can fix. The command line prints them as
one line (`lowdiff COMMAND: error: ...`) and exits with status 2; nothing else is caught."""
from __future__ import annotations


class LowdiffError(Exception):
    """Base class: the message says what is wrong and what to change."""


class ConfigError(LowdiffError, ValueError):
    """A configuration, stage plan or option that cannot work."""


class DatasetError(LowdiffError, ValueError):
    """A problem with dataset files or arguments."""


class CheckpointError(LowdiffError, RuntimeError):
    """A model directory or training state that is missing, truncated or corrupt."""


class MetricError(LowdiffError, ValueError):
    """Statistics that cannot give a meaningful FID / IS (non-finite, not a covariance, mismatched)."""


class WriteError(LowdiffError, OSError):
    """A file that could not be written (a full disk, no permission); nothing torn is left behind."""
