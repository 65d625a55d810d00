"""Tests marked `slurm` run against the real single-node cluster of tests/slurm/cluster.sh.

They are skipped, with the reason printed at the end of the session, when SLURM is not installed
(no `sbatch` on PATH), when this machine is not one the script may touch (not root, not
Debian/Ubuntu, a foreign slurm.conf) or when the cluster is not up (`tests/slurm/cluster.sh start`
first; .ci/run does it).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER_SH = Path(__file__).resolve().with_name("cluster.sh")
REPO = CLUSTER_SH.parents[2]


@functools.cache
def unavailable_reason() -> str | None:
    """Why the SLURM tests cannot run here, or None when the cluster is up."""
    if shutil.which("sbatch") is None:
        return ("SLURM is not installed here (no sbatch on PATH): "
                "`sudo tests/slurm/cluster.sh start` installs and starts a test cluster")
    try:
        status = subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`tests/slurm/cluster.sh status` did not run: {exc}"
    if status.returncode == 0:
        return None
    lines = status.stdout.strip().splitlines()
    skipped = [line for line in lines if line.startswith("skipped:")]
    if skipped:
        return f"this machine is not for the test cluster ({skipped[0]})"
    down = ", ".join(line.split()[0] for line in lines if line.endswith("not running"))
    return ("the test cluster is not up" + (f" ({down} not running)" if down else "") +
            ": run `sudo tests/slurm/cluster.sh start` first")


@pytest.fixture(autouse=True)
def _require_cluster(request):
    """Tests marked `slurm` need the cluster up; the others here test the script itself."""
    if request.node.get_closest_marker("slurm") is None:
        return
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"SLURM tests skipped: {reason}")


def pytest_terminal_summary(terminalreporter):
    # Printed without -rs as well: a silently skipped SLURM suite looks like a passing one.
    if unavailable_reason.cache_info().currsize and unavailable_reason():
        terminalreporter.write_line(f"SLURM tests skipped: {unavailable_reason()}", yellow=True)


@pytest.fixture
def job_env(tmp_path) -> dict[str, str]:
    """Environment of the submitting command; sbatch passes it on to the jobs (--export=ALL)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "tests"), str(REPO), env.get("PYTHONPATH")]
                                        if p)
    env["OMP_NUM_THREADS"] = "1"  # two cores shared by every task of the test cluster
    return env

