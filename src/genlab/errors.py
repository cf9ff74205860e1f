"""genlab's error types. Every expected failure is a GenlabError whose message says what was wrong,
where (the file or field), and what would be right; the CLI prints it as one line and exits 1.
Anything else that reaches the CLI is a bug, and the CLI says so.

This module is the bottom of the import graph: it imports nothing from genlab.
"""

from __future__ import annotations


class GenlabError(Exception):
    """An expected failure with a message for the user (bad input, bad config, a damaged run)."""


class ConfigError(GenlabError, ValueError):
    """A config key or value that does not fit the schema; the message says what would."""


class DataError(GenlabError, ValueError):
    """Bad input data; the message names the file and what was expected."""


class RunError(GenlabError, ValueError):
    """A run folder that is missing, incomplete, tampered with, or locked by another writer."""


class ControlError(GenlabError, ValueError):
    """A sampling control with a value the model cannot use; `field` names the control."""

    def __init__(self, field: str, msg: str):
        super().__init__(msg)
        self.field = field


class ExportError(GenlabError, ValueError):
    """A run that cannot be exported, or an export that does not match PyTorch."""


class TrainingDiverged(GenlabError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class UsageError(GenlabError, ValueError):
    """An argument or setting that the operation cannot take (a label out of range, a bad count)."""


class UnsupportedError(GenlabError, TypeError):
    """An operation or sampling control that this model does not have."""
