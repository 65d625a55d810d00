"""The mini table reads eval/ records: final-layer numbers, SD - baseline deltas, per-block rows."""

import json

import pytest

from sdssl import tables

DEPTH = 3


def _write(results, run, protocol, metrics, features=None, feature="cls"):
    record = {"protocol": protocol, "metrics": metrics, "feature": feature, "checkpoint_sha256": "ab" * 32, "config_hash": "cd" * 8,
              "git_commit": "0123456789", "hardware": "cpu"}
    if features:
        record["features"] = features
    (results / run).mkdir(parents=True, exist_ok=True)
    (results / run / f"{protocol}.json").write_text(json.dumps(record))


def _run(results, method, knn_layers, linear_layers):
    knn = {f"knn/cls@{l + 1}/k20/top1": v for l, v in enumerate(knn_layers)}
    knn["knn/cls/k20/top1"] = knn_layers[-1]
    linear = {f"linear/cls@{l + 1}/best/top1": v for l, v in enumerate(linear_layers)}
    _write(results, method, "knn", knn)
    _write(results, method, "linear", linear, features=[f"cls@{l}" for l in range(1, DEPTH + 1)])


def test_mini_table_reports_final_layer_deltas_and_every_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here: depth comes from the linear record's features
    results = tmp_path / "results"
    _run(results, "moco_v3", [40.0, 50.0, 60.0], [45.0, 55.0, 65.0])
    _run(results, "sd_moco_v3", [52.0, 58.0, 61.5], [50.0, 60.0, 66.0])
    _write(results, "floor-pixels", "knn", {"knn/pixels/k20/top1": 30.0}, feature="pixels")
    _write(results, "floor-pixels", "linear", {"linear/best/top1": 35.0, "linear/pixels/best/top1": 35.0},
           features=["pixels"], feature="pixels")
    text = tables.render_mini(results)
    assert "| raw pixels | 30.0 | 35.0 |" in text
    assert "| MoCo v3 | 60.0 | 65.0 | 66.5 | 70.0 |" in text
    assert "| SD-MoCo v3 | 61.5 (+1.5) | 66.0 (+1.0) | 68.0 (+1.5) | 71.5 (+1.5) |" in text
    assert "| Δ SD-MoCo v3 | +5.0 | +5.0 | +1.0 |" in text  # linear per block
    assert "| Δ SD-MoCo v3 | +12.0 | +8.0 | +1.5 |" in text  # k-NN per block
    assert "| SimCLR | - | - |" in text  # runs not evaluated show as missing, not as zero


def test_unknown_experiment_names_the_valid_ones():
    with pytest.raises(ValueError, match="use mini, table1, table5, table6 or fig9"):
        tables.render("table9")
