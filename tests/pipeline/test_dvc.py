"""The DVC pipeline at smoke scale in a temporary copy: repro, no-op repro, push, pull, evaluate."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"

pytestmark = pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in the test environment")


def run(cmd, cwd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """A git copy of the repository's tracked files with a one-run smoke pipeline."""
    root = tmp_path_factory.mktemp("pipeline")
    repo = root / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    (repo / "params.yaml").write_text("scale: smoke\n")
    (repo / "dvc_runs.yaml").write_text("runs:\n  bootleg:\n    paper: bootleg\n    extra_dep: bootleg/configs\n")
    env = dict(os.environ)
    # stage commands run `python`: the test's interpreter, importing the copy, not the checkout;
    # a dead proxy makes any network access by dvc fail loudly instead of hanging.
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(repo), DVC_NO_ANALYTICS="",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run([*git, "init", "-q"], repo, env)
    run([*git, "add", "-A"], repo, env)
    run([*git, "commit", "-qm", "copy"], repo, env)
    run([str(DVC), "remote", "add", "-f", "-d", "local", str(root / "remote")], repo, env)
    return repo, env


def test_analytics_are_off_in_the_committed_config():
    config = (REPO / ".dvc/config").read_text()
    assert "analytics = false" in config


def test_smoke_repro_then_noop_then_push_pull_evaluate(copy):
    repo, env = copy
    out = run([str(DVC), "repro", "tables"], repo, env, timeout=1500)
    for stage in ("data", "pretrain@bootleg", "eval@bootleg", "floors", "tables"):
        assert f"Running stage '{stage}'" in out, stage
    encoder = repo / "runs/bootleg/bootleg/encoder.pt"
    done = repo / "runs/bootleg/bootleg/done.json"
    record = json.loads((repo / "results/cross/bootleg/knn.json").read_text())
    sha = (repo / "runs/bootleg/bootleg/encoder.pt.sha256").read_text().split()[0]
    assert record["checkpoint_sha256"] == sha == json.loads(done.read_text())["encoder_sha256"]
    # the tables read what the stages wrote: the run's row links its record, floors are measured
    results_md = (repo / "RESULTS.md").read_text()
    assert f"[{record['value']:.1f}](results/cross/bootleg/knn.json)" in results_md
    assert "| floor | pixels | pixels |" in results_md
    bootleg_table = (repo / "tables/bootleg.md").read_text()
    floor_row = next(line for line in bootleg_table.splitlines() if line.startswith("| raw pixels (floor)"))
    assert "missing" not in floor_row, bootleg_table
    floor_knn = json.loads((repo / "results/bootleg/floors-compare-smoke/pixels/knn.json").read_text())
    assert f"{floor_knn['value']:.1f}" in floor_row

    again = run([str(DVC), "repro", "tables"], repo, env)
    assert "Running stage" not in again and "up to date" in again

    run([str(DVC), "push"], repo, env)
    encoder.unlink()
    done.unlink()
    shutil.rmtree(repo / ".dvc/cache")
    run([str(DVC), "pull", "pretrain@bootleg"], repo, env)
    assert encoder.is_file() and json.loads(done.read_text())["encoder_sha256"] == sha

    pulled = run([sys.executable, "eval/launch.py", f"checkpoint={encoder}", "protocol=knn",
                  f"out={repo}/pulled", "train_subset=1000", "val_subset=200", "knn.k=[5]", "knn.report_k=5",
                  "progress=false"], repo, env)
    assert "knn" in pulled
    again_record = json.loads((repo / "pulled/knn.json").read_text())
    assert again_record["checkpoint_sha256"] == sha
    assert again_record["value"] == record["value"]
