"""tests/slurm/cluster.sh itself: usage, refusal where it must not run, idempotent start."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER_SH = Path(__file__).resolve().with_name("cluster.sh")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


def cluster_sh(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", str(CLUSTER_SH), *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def running_daemons() -> dict[str, list[str]]:
    return {name: subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()
            for name in DAEMONS}


def test_unknown_command_is_a_usage_error():
    out = cluster_sh("restart")
    assert out.returncode == 2
    assert "usage:" in out.stderr and "start|stop|status" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="needs root (to run the script as an unprivileged user) and runuser")
def test_without_root_every_command_refuses_and_touches_nothing():
    conf = Path("/etc/slurm/slurm.conf")
    before_conf = conf.read_bytes() if conf.exists() else None
    before = running_daemons()
    for command, expected_code in (("start", 0), ("stop", 0), ("status", 1)):
        out = cluster_sh(command, user="nobody")
        assert out.returncode == expected_code, (command, out.stdout, out.stderr)
        assert out.stdout.startswith("skipped: not root"), (command, out.stdout)
    assert (conf.read_bytes() if conf.exists() else None) == before_conf
    assert running_daemons() == before


@pytest.mark.slurm
def test_start_on_a_running_cluster_keeps_its_daemons():
    before = running_daemons()
    assert all(before.values()), before
    out = cluster_sh("start")
    assert out.returncode == 0, out.stderr
    assert re.match(r"already up: node \S+ is (idle|mixed|allocated)", out.stdout), out.stdout
    assert running_daemons() == before
