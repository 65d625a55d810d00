"""Helpers of the DVC tests: a git copy of the repository with a one-run smoke pipeline, and
the settings of the local SSH server of tests/dvc/sshd.sh."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from common.launch import plan_runs
from scripts.pipeline import floors

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
SSHD_SH = REPO / "tests/dvc/sshd.sh"
SSHD_STATE = Path(os.environ.get("SSHD_STATE_DIR", "/run/ssl-vit-test-sshd"))
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def run(cmd, cwd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def make_copy(root: Path) -> tuple[Path, dict]:
    """A git copy of the repository's tracked files under `root/repo`, with a one-run smoke
    pipeline (bootleg only, scale=smoke) committed, and its environment."""
    repo = root / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    (repo / "params.yaml").write_text("scale: smoke\nseeds: 1\n")
    table = {"papers": {"bootleg": {"experiment": "compare"}},
             "runs": {"bootleg": {"paper": "bootleg", "extra_dep": "bootleg/configs"}},
             "seed_runs": {}}
    table["floor_archs"], table["run_floors"] = floors(plan_runs("bootleg", [], only="bootleg"))
    (repo / "dvc_runs.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
    env = dict(os.environ)
    # stage commands run `python`: the test's interpreter, importing the copy, not the checkout;
    # a dead proxy makes any HTTP access by dvc fail loudly instead of hanging.
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(repo), DVC_NO_ANALYTICS="",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="")
    run([*GIT, "init", "-q"], repo, env)
    run([*GIT, "add", "-A"], repo, env)
    run([*GIT, "commit", "-qm", "copy"], repo, env)
    return repo, env


def sshd_settings() -> dict[str, str]:
    """SSHD_HOST, SSHD_PORT, SSHD_USER, SSHD_KEY, SSHD_KNOWN_HOSTS of the running test server."""
    return dict(line.split("=", 1) for line in (SSHD_STATE / "env").read_text().splitlines() if "=" in line)
