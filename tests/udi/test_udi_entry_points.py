"""Entry points: the paper-scale job array of `udi/launch.py --dry-run --slurm`, and the table
renderer reading records (no invented numbers)."""
from __future__ import annotations

import json

from common.launch import main, plan_runs
from eval.records import extra_records_dir, records_dir
from udi import tables


def test_dry_run_slurm_prints_the_paper_job_array(capsys):
    main(paper="udi", argv=["--dry-run", "--slurm", "experiment=ablation_window", "cost.measure=false"])
    out = capsys.readouterr().out
    for window in range(1, 5):
        assert f"# ---- run window{window}" in out
    assert "#SBATCH --array=0-3%4" in out and "#SBATCH --gpus-per-node=8" in out
    assert "global_size: 224" in out and "out_dim: 65536" in out and "n_local: 10" in out


def write(directory, protocol, metrics, value_key):
    directory.mkdir(parents=True, exist_ok=True)
    record = {"run": directory.name, "protocol": protocol, "metric": value_key, "value": metrics[value_key],
              "metrics": metrics, "checkpoint_sha256": "ab" * 32, "config_hash": "cafe", "git_commit": "deadbeef",
              "dataset_hash": "12" * 32, "wall_time_s": 1.0, "hardware": "cpu"}
    (directory / f"{protocol}.json").write_text(json.dumps(record))


def test_mini_table_shows_recorded_values_and_dashes_for_missing(tmp_path):
    overrides = ["scale=smoke", f"results_root={tmp_path}"]
    runs = {run.name: run for run in plan_runs("udi", overrides)}
    udi = records_dir(runs["udi"].cfg)
    write(udi, "knn", {"knn/cls/k20/top1": 71.25}, "knn/cls/k20/top1")
    write(udi, "linear", {"linear/cls_last4/best/top1": 80.0, "linear/cls_plus_last4/best/top1": 79.0,
                          "linear/cls_last4+cls_plus_last4/best/top1": 81.5}, "linear/cls_last4/best/top1")
    write(extra_records_dir(runs["udi"].cfg, "cls_plus"), "knn", {"knn/cls_plus/k20/top1": 66.0}, "knn/cls_plus/k20/top1")
    table = tables.render(overrides)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["UDI"].startswith("| UDI | 71.2 | 80.0 | — | — | — | 77.6 | 75.6 |")
    assert rows["UDI+"].startswith("| UDI+ | 66.0 | 79.0 | — |")  # k-NN on the extra token, its linear head
    assert rows["UDI cls + cls+"].startswith("| UDI cls + cls+ | — | 81.5 |")
    assert rows["DINO"].startswith("| DINO | — | — | — | — | — | 76.1 | 72.8 |")
    assert "abababababab" in table and "cafe" in table  # provenance of every shown record


def test_ablations_show_each_run_beside_the_papers_number(tmp_path):
    table = tables.render(["experiment=ablation_objective", f"results_root={tmp_path}"])
    assert "| mm_weight0 | — | — | — | 75.8 | 73.0 |" in table and "| local_patch | — | — | — | — | — |" in table
