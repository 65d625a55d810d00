"""The DVC pipeline at smoke scale in a temporary copy: repro, no-op repro, push, pull, evaluate."""
from __future__ import annotations

import json
import shutil
import sys

from dvc_copy import DVC, REPO, run


def test_analytics_are_off_in_the_committed_config():
    config = (REPO / ".dvc/config").read_text()
    assert "analytics = false" in config


def test_smoke_repro_then_noop_then_push_pull_evaluate(copy):
    repo, env = copy
    out = run([str(DVC), "repro", "tables"], repo, env, timeout=1500)
    for stage in ("data", "pretrain@bootleg", "eval@bootleg", "floors@bootleg", "floors_cross", "table@bootleg", "tables"):
        assert f"Running stage '{stage}'" in out, stage
    encoder = repo / "runs/bootleg/smoke/bootleg/encoder.pt"
    done = repo / "runs/bootleg/smoke/bootleg/done.json"
    record = json.loads((repo / "results/cross/smoke/bootleg/knn.json").read_text())
    assert (repo / "results/bootleg/smoke/bootleg/knn.json").is_file()  # the paper's own protocols
    sha = (repo / "runs/bootleg/smoke/bootleg/encoder.pt.sha256").read_text().split()[0]
    assert record["checkpoint_sha256"] == sha == json.loads(done.read_text())["encoder_sha256"]
    # the tables read what the stages wrote: the run's row links its record, floors are measured
    results_md = (repo / "RESULTS.md").read_text()
    assert f"[{record['value']:.1f}](results/cross/smoke/bootleg/knn.json)" in results_md
    assert "| floor | pixels | pixels |" in results_md
    bootleg_table = (repo / "tables/bootleg.md").read_text()
    floor_row = next(line for line in bootleg_table.splitlines() if line.startswith("| floor: raw pixels |"))
    assert "—" not in floor_row.split("|")[2], bootleg_table
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
