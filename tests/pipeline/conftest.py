"""Shared set-up of the DVC tests: a git copy of the repository with a one-run smoke pipeline,
and the `dvcremote` marker: tests that need the local SSH server of tests/dvc/sshd.sh.

The `dvcremote` tests are skipped, with the reason printed at the end of the session, when
this machine is not one the script may touch (not root, not Debian/Ubuntu) or when the server
is not up (`tests/dvc/sshd.sh start` first; .ci/run does it).
"""
from __future__ import annotations

import functools
import subprocess

import pytest

from dvc_copy import DVC, SSHD_SH, make_copy, run


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """`make_copy` with its default remote a local directory beside it (`../remote`)."""
    if not DVC.exists():
        pytest.skip("dvc is not installed in the test environment")
    root = tmp_path_factory.mktemp("pipeline")
    repo, env = make_copy(root)
    run([str(DVC), "remote", "add", "-f", "-d", "local", str(root / "remote")], repo, env)
    return repo, env


@functools.cache
def sshd_unavailable_reason() -> str | None:
    """Why the SSH-remote tests cannot run here, or None when the test server is up."""
    if not DVC.exists():
        return "dvc is not installed in the test environment"
    try:
        status = subprocess.run(["bash", str(SSHD_SH), "status"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`tests/dvc/sshd.sh status` did not run: {exc}"
    if status.returncode == 0:
        return None
    skipped = [line for line in status.stdout.splitlines() if line.startswith("skipped:")]
    if skipped:
        return f"this machine is not for the test SSH server ({skipped[0]})"
    return "the test SSH server is not up: run `sudo tests/dvc/sshd.sh start` first"


@pytest.fixture(autouse=True)
def _require_sshd(request):
    if request.node.get_closest_marker("dvcremote") is None:
        return
    reason = sshd_unavailable_reason()
    if reason:
        pytest.skip(f"DVC SSH-remote tests skipped: {reason}")


def pytest_terminal_summary(terminalreporter):
    # Printed without -rs as well: a silently skipped remote test looks like a passing one.
    if sshd_unavailable_reason.cache_info().currsize and sshd_unavailable_reason():
        terminalreporter.write_line(f"DVC SSH-remote tests skipped: {sshd_unavailable_reason()}", yellow=True)
