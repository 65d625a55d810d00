"""The SDSSL tables read eval/ records: final-layer numbers, SD - baseline deltas, per-block rows."""

import json

from common.launch import plan_runs
from eval.records import records_dir
from eval.tables import table_floors
from sdssl import tables

DEPTH = 3
OVERRIDES = ["scale=smoke", "model.depth=3"]


def _write(directory, protocol, metrics, features=None, feature="cls"):
    record = {"protocol": protocol, "metric": f"{protocol}/best/top1" if protocol == "linear" else "knn/cls/k20/top1",
              "value": max(metrics.values()), "metrics": metrics, "feature": feature, "checkpoint_sha256": "ab" * 32,
              "config_hash": "cd" * 8, "git_commit": "0123456789", "hardware": "cpu"}
    if features:
        record["features"] = features
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{protocol}.json").write_text(json.dumps(record))


def _run(run, knn_layers, linear_layers):
    knn = {f"knn/cls@{l + 1}/k20/top1": v for l, v in enumerate(knn_layers)}
    knn["knn/cls/k20/top1"] = knn_layers[-1]
    linear = {f"linear/cls@{l + 1}/best/top1": v for l, v in enumerate(linear_layers)}
    linear["linear/best/top1"] = max(linear_layers)  # the headline: best block, not the final one
    _write(records_dir(run.cfg), "knn", knn)
    _write(records_dir(run.cfg), "linear", linear, features=[f"cls@{l}" for l in range(1, DEPTH + 1)])


def test_mini_table_reports_final_layer_deltas_and_every_block(tmp_path):
    overrides = [*OVERRIDES, f"results_root={tmp_path}"]
    runs = {run.cfg.method.name: run for run in plan_runs("sdssl", overrides)}
    _run(runs["moco_v3"], [40.0, 50.0, 60.0], [45.0, 67.0, 65.0])
    _run(runs["sd_moco_v3"], [52.0, 58.0, 61.5], [50.0, 60.0, 66.0])
    pixels = table_floors(list(runs.values()))[0].out_dir
    _write(pixels, "knn", {"knn/pixels/k20/top1": 30.0}, feature="pixels")
    _write(pixels, "linear", {"linear/best/top1": 35.0, "linear/pixels/best/top1": 35.0}, features=["pixels"], feature="pixels")
    text = tables.render(overrides)
    assert "| floor: raw pixels | 30.0 | 35.0 | — | — | — |" in text
    assert "| MoCo v3 | 60.0 | 65.0 | — | 66.5 | 70.0 |" in text  # the last block's head, not the best one
    assert "| SD-MoCo v3 | 61.5 (+1.5) | 66.0 (+1.0) | — | 68.0 (+1.5) | 71.5 (+1.5) |" in text
    assert "| Δ SD-MoCo v3 | +5.0 | -7.0 | +1.0 |" in text  # linear per block
    assert "| Δ SD-MoCo v3 | +12.0 | +8.0 | +1.5 |" in text  # k-NN per block
    assert "| SimCLR | — | — |" in text  # runs not evaluated show as missing, not as zero


def test_paper_scale_ablations_list_the_papers_rows_with_ours_beside_them(tmp_path):
    text = tables.render(["experiment=table6", f"results_root={tmp_path}"])
    assert "| MLP/1 | — | — | 62.6 |" in text and "| w/o MLP | — | — | 60.3 |" in text
    assert "| floor: raw pixels | — |" in text


def _seed(run, index, knn, last_linear):
    """Seed `index` of a run (scripts/seeds.py): k-NN on the final token and the last block's head only."""
    directory = records_dir(run.cfg).with_name(f"{run.name}-seed{index}")
    _write(directory, "knn", {"knn/cls/k20/top1": knn})
    _write(directory, "linear", {f"linear/cls@{DEPTH}/best/top1": last_linear, "linear/best/top1": last_linear},
           features=[f"cls@{DEPTH}"])


def test_mini_table_shows_mean_std_over_seeds_and_the_difference_of_the_means(tmp_path):
    overrides = [*OVERRIDES, f"results_root={tmp_path}"]
    runs = {run.cfg.method.name: run for run in plan_runs("sdssl", overrides)}
    _run(runs["moco_v3"], [40.0, 50.0, 60.0], [45.0, 67.0, 65.0])
    _run(runs["sd_moco_v3"], [52.0, 58.0, 61.5], [50.0, 60.0, 66.0])
    _run(runs["byol"], [40.0, 50.0, 55.0], [45.0, 67.0, 56.0])
    for index, (base, sd) in enumerate(((62.0, 63.5), (64.0, 65.5)), start=1):
        _seed(runs["moco_v3"], index, base, base + 5)
        _seed(runs["sd_moco_v3"], index, sd, sd + 4)
    text = tables.render(overrides)
    # k-NN 60, 62, 64 and 61.5, 63.5, 65.5; linear 65, 67, 69 and 66, 67.5, 69.5
    assert "| MoCo v3 | 62.0 ± 2.0 (n=3) | 67.0 ± 2.0 (n=3) | — | 66.5 | 70.0 |" in text
    assert "| SD-MoCo v3 | 63.5 ± 2.0 (n=3) (+1.5) | 67.7 ± 1.8 (n=3) (+0.7) | — | 68.0 (+1.5) | 71.5 (+1.5) |" in text
    assert "| BYOL | 55.0 | 56.0 | — | 66.0 | 70.3 |" in text  # no seeds: as before
    assert "| Δ SD-MoCo v3 | +5.0 | -7.0 | +1.0 |" in text  # the per-block tables stay seed 0's
    assert "mean ± std (n=K): mean and sample standard deviation" in text
    assert f"`{records_dir(runs['moco_v3'].cfg).with_name('moco_v3-seed2')}/linear.json`: linear/best/top1=69.00" in text
