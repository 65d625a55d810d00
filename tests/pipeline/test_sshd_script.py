"""tests/dvc/sshd.sh itself: usage, refusal where it must not run, idempotent start."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from dvc_copy import SSHD_SH, SSHD_STATE


def sshd_sh(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", str(SSHD_SH), *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_unknown_command_is_a_usage_error():
    out = sshd_sh("restart")
    assert out.returncode == 2
    assert "usage:" in out.stderr and "start|stop|status" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="needs root (to run the script as an unprivileged user) and runuser")
def test_without_root_every_command_refuses_and_touches_nothing():
    before = sorted(SSHD_STATE.iterdir()) if SSHD_STATE.is_dir() else None
    for command, expected_code in (("start", 0), ("stop", 0), ("status", 1)):
        out = sshd_sh(command, user="nobody")
        assert out.returncode == expected_code, (command, out.stdout, out.stderr)
        assert out.stdout.startswith("skipped: not root"), (command, out.stdout)
    assert (sorted(SSHD_STATE.iterdir()) if SSHD_STATE.is_dir() else None) == before


@pytest.mark.dvcremote
def test_start_on_a_running_server_keeps_it_and_its_keys():
    pid = (SSHD_STATE / "sshd.pid").read_text()
    key = (SSHD_STATE / "client_ed25519").read_bytes()
    out = sshd_sh("start")
    assert out.returncode == 0 and out.stdout.startswith("already up: ssh -i "), out
    assert (SSHD_STATE / "sshd.pid").read_text() == pid and (SSHD_STATE / "client_ed25519").read_bytes() == key
