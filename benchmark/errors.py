"""Exception hierarchy of CompressBench.

User errors (a bad suite, a corrupt dataset file, an unknown method) derive from
:class:`CompressBenchError`, so the command line can print them without a traceback. Anything
else that escapes is a bug in CompressBench or in a method plugin.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "CompressBenchError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "ExportError",
    "MethodError",
    "ResultsError",
    "TrainingDivergedError",
]


class CompressBenchError(Exception):
    """Base class of every error that CompressBench raises on purpose."""


class ConfigError(CompressBenchError):
    """A suite file or a command-line option has an invalid value."""


class DataError(CompressBenchError):
    """A dataset file is missing, truncated or malformed."""


class BudgetError(CompressBenchError):
    """A method tried to train for more epochs than the suite's budget allows."""


class MethodError(CompressBenchError):
    """A method is unknown, unavailable, or was given invalid parameters."""


class ExportError(CompressBenchError):
    """ONNX export or the ONNX Runtime parity check failed."""


class DeviceError(CompressBenchError):
    """A profiling device is missing, unreachable or misconfigured."""


class ResultsError(CompressBenchError):
    """A results file is unreadable or was written by another schema version."""


class TrainingDivergedError(CompressBenchError):
    """The training loss became NaN or infinite."""
