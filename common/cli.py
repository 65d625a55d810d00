"""What the command-line entry points share: user errors end in one line, bugs in a traceback.

A user error (a bad override, a wrong flag, a run directory that belongs to another config)
is printed as one line on stderr naming the key, the bad value and the fix, with a non-zero
exit. `--debug` or `HYDRA_FULL_ERROR=1` shows the traceback of a user error as well.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from common.config import ConfigError


def one_line(message: str) -> str:
    """A message folded onto one line (multi-line details become `; `-separated)."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of the usage block + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (as does HYDRA_FULL_ERROR=1)")


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextlib.contextmanager
def user_errors(prefix: str = "config error", debug: bool = False, kinds: tuple = (ConfigError,)):
    """Turn the user errors `kinds` raised inside into `prefix: <one line>` and exit status 1."""
    try:
        yield
    except kinds as exc:
        if debug_requested(debug):
            raise
        text = exc.args[0] if exc.args else type(exc).__name__
        raise SystemExit(f"{prefix}: {one_line(text)}") from None


def exit_interrupted(message: str) -> None:
    """Ctrl-C ends in one line and exit status 130. Further Ctrl-Cs are ignored from here on:
    one that lands while the message is printed would otherwise escape as a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(message, file=sys.stderr)
    sys.exit(130)
