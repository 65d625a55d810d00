"""Run an entry point as a user would, and see what it printed and what it left on disk.

Shared by the bad-input tables (tests/common/test_bad_inputs.py and the runtime ones):
`run_entry` calls a launcher's `main(argv)` in this process (fast), `run_cli` runs the real
command in a subprocess, `disk_snapshot` records a tree (names, sizes, mtimes) so a test can
assert that a refused command changed nothing, and `assert_one_line_error` checks the
contract of docs/ERRORS.md: a non-zero exit, no traceback, one line naming what was wrong.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        """Non-empty stderr lines, progress bars (tqdm's `\\r`-redrawn lines) aside."""
        lines = [part.strip() for line in self.stderr.split("\n") for part in line.split("\r")]
        return [line for line in lines if line and "it/s]" not in line and "s/it]" not in line]


def _entry(name: str):
    """The `run(argv)` of `<name>/launch.py` (`main` for eval's)."""
    launch = importlib.import_module(f"{name}.launch")
    return launch.main if name == "eval" else launch.run


def run_entry(name: str, argv: list[str]) -> Outcome:
    """`python <name>/launch.py argv` in this process: exit code, stdout, stderr.

    A `sys.exit("message")` is what the interpreter would print: the message on stderr
    and exit status 1.
    """
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            _entry(name)(list(argv))
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                code = 1
            else:
                code = exc.code or 0
    return Outcome(code, out.getvalue(), err.getvalue())


def run_cli(name: str, argv: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> Outcome:
    """The real command line, in a subprocess (the interpreter's own error printing included).

    Without `env`, this process's environment minus HYDRA_FULL_ERROR (which asks for tracebacks).
    """
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / name / "launch.py"), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def disk_snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under `roots`: path -> (size, mtime in ns)."""
    snap = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            snap[str(path)] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return snap


def assert_one_line_error(outcome: Outcome, *expected: str) -> str:
    """A refused command: non-zero exit, no traceback, exactly one stderr line holding `expected`."""
    assert outcome.code != 0, f"exit 0; stdout: {outcome.stdout[-500:]}"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.error_lines()
    assert len(lines) == 1, f"{len(lines)} stderr lines:\n" + "\n".join(lines)
    for text in expected:
        assert text in lines[0], f"{text!r} not in: {lines[0]}"
    return lines[0]
