"""User-facing errors.

A :class:`MangoError` carries one line that names the file or field at fault and what is wrong.
The command line prints that line and exits non-zero (with a traceback only under ``--debug``).
Library code raises it for bad input; programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class MangoError(Exception):
    """Bad input from the user: a file, a field or a value, named in a one-line message.

    ``duplicate``: the same error stops the other processes of a distributed run too, and rank 0
    reports it; the command line prints nothing for the duplicates (exit code 2 all the same).
    """

    def __init__(self, message: str, *, duplicate: bool = False) -> None:
        super().__init__(" ".join(message.split()))  # always a single line
        self.duplicate = duplicate


class DataError(MangoError, ValueError):
    """A data file or folder is missing, unreadable or inconsistent."""


class ConfigError(MangoError, ValueError):
    """A configuration file, field or override is invalid."""


class CheckpointError(MangoError):
    """A checkpoint cannot be used with the current model or version."""


class OutputError(MangoError, OSError):
    """An output file cannot be written (a full disk, no permission); what it replaces is kept."""


class Interrupted(MangoError):
    """The user stopped a command (Ctrl-C); what was saved is kept and named in the message."""
