"""Errors a user causes and can fix, as opposed to bugs.

The launchers (`common.launch.main`, `eval/launch.py`) print a `UserError` as its one-line
message, which names the key or file, the bad value and the fix, and exit 1; any other
exception is a bug and keeps its traceback. A `TrainingInterrupted` (Ctrl-C) is printed the
same way and exits 130, the shell's code for SIGINT.

The data errors live beside their loaders (`common.data.DatasetNotFoundError`,
`ChecksumError`, `CorruptImageError`) and `ConfigError` in `common.config`; all derive from
`UserError`.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user fixes from the command line or the shell; str() is one line."""


class NonFiniteLossError(UserError, RuntimeError):
    """The loss or the training state became NaN or infinite; the run stops before saving it."""


class CorruptCheckpointError(UserError, ValueError):
    """A checkpoint or encoder file cannot be read (truncated, not a torch file)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run; the message says where it stopped and how to resume."""


def first_sentence(text) -> str:
    """The first sentence of a library's error message (torch's run over several lines)."""
    line = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return line.split(". ")[0].rstrip(".")
