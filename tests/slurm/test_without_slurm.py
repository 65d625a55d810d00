"""tests/slurm/without_slurm.sh: the command sees no SLURM program, and everything else as before."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("without_slurm.sh")


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {text}\n")
    path.chmod(0o755)


def test_slurm_programs_are_hidden_and_the_rest_found_first_wins(tmp_path):
    for name in ("sbatch", "srun", "slurmctld", "tool"):
        executable(tmp_path / "first" / name, f"first-{name}")
    for name in ("squeue", "scancel", "tool", "other"):
        executable(tmp_path / "second" / name, f"second-{name}")
    venv_bin = Path(sys.executable).parent  # dvc, installed in the environment, must stay reachable
    path = os.pathsep.join([str(tmp_path / "first"), str(tmp_path / "second"), str(venv_bin), os.environ["PATH"]])
    probe = ("for c in sbatch srun squeue scancel sacct sinfo scontrol slurmctld slurmd; do "
             "command -v $c && echo FOUND $c; done; tool; other; "
             "python -c 'import sys, torch; print(sys.prefix)'; git --version; make --version; dvc --version")
    out = subprocess.run(["bash", str(SCRIPT), "bash", "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PATH": path, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "FOUND" not in out.stdout, out.stdout
    lines = out.stdout.splitlines()
    assert lines[:2] == ["first-tool", "second-other"]
    # the environment's python, reached through PATH, still has its packages (torch)
    assert lines[2] == sys.prefix, out.stdout
    assert lines[3].startswith("git version") and "GNU Make" in out.stdout
    assert not list(tmp_path.glob("path-without-slurm.*")), "the temporary PATH directory was left behind"


def test_exit_status_is_the_commands_and_no_command_is_a_usage_error():
    assert subprocess.run(["bash", str(SCRIPT), "bash", "-c", "exit 7"], timeout=120).returncode == 7
    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
