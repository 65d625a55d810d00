"""The training monitors: the online k-NN is eval's k-NN, health lands in log.jsonl at the
configured steps without changing the trajectory, a collapse is announced once."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from common.checkpoint import load_encoder
from common.config import ConfigError, load_config
from common.train import run_dir_of, train
from eval.api import evaluate
from eval.monitor import KNN_KEY, HealthHook, KnnHook, eval_mode, plot_knn_curves

MONITOR = ["train.hooks=['eval.monitor:training_hooks']", "train.health.every=4", "train.health.probe_images=32",
           "train.knn_monitor.every=6", "train.knn_monitor.train_images=100", "train.knn_monitor.test_images=50"]


class Frozen:
    """What the monitors need of a method: the evaluated encoder and its export meta."""

    def __init__(self, vit, meta):
        self.vit, self.meta = vit, meta

    def encoder_for_eval(self):
        return self.vit

    def export_meta(self):
        return self.meta


def monitor_cfg(**train):
    return OmegaConf.create({"train": train, "eval": {"data": "digits", "progress": False,
                                                      "knn": {"k": [1, 5, 20], "report_k": 20}}})


def test_online_knn_equals_the_knn_protocol_on_the_same_subset(tiny_encoder, eval_cfg, tmp_path):
    vit, meta, _ = load_encoder(tiny_encoder)
    vit.train()  # as during training: the monitor must evaluate in eval mode and give the mode back
    hook = KnnHook(monitor_cfg(knn_monitor={"every": 5, "train_images": 200, "test_images": 100}))
    online = hook(0, Frozen(vit, meta), None)[KNN_KEY]
    assert vit.training
    record = evaluate(tiny_encoder, "knn", {**eval_cfg, "train_subset": 200, "val_subset": 100}, out_dir=tmp_path)[0]
    assert record["value"] == online
    assert 10.0 < online < 100.0  # a real number, not a degenerate one


def test_knn_monitor_subset_that_is_not_class_balanced_fails_naming_the_key():
    with pytest.raises(ConfigError, match="train.knn_monitor.train_images=105"):
        KnnHook(monitor_cfg(knn_monitor={"every": 5, "train_images": 105, "test_images": 100}))


def test_collapse_warning_is_printed_once_when_rankme_falls(capsys):
    torch.manual_seed(0)
    healthy = {"student": torch.randn(32, 16), "teacher": torch.randn(32, 16)}
    collapsed = {"student": torch.randn(32, 1) @ torch.randn(1, 16), "teacher": healthy["teacher"]}
    hook = HealthHook(monitor_cfg(health={"every": 1, "probe_images": 32, "collapse_fraction": 0.5}),
                      features=lambda features: features)
    first = hook(0, healthy, None)
    assert first["health/student/rankme"] > 10
    hook(1, healthy, first)
    assert "collapse" not in capsys.readouterr().err
    values = hook(2, collapsed, first)
    assert values["health/student/rankme"] < 0.5 * first["health/student/rankme"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "student" in err[0] and "collapse" in err[0] and "step 2" in err[0]
    hook(3, collapsed, first)
    assert capsys.readouterr().err == ""  # once per encoder


def test_eval_mode_gives_every_submodule_its_own_mode_back():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    net.train()
    net[0].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and not net[0].training and net[1].training


def test_smoke_run_logs_health_and_knn_at_the_configured_steps_without_changing_training(toy_overrides, tmp_path):
    cfg = load_config("toy_paper", [*toy_overrides, "run_name=monitored", *MONITOR])
    summary = train(cfg)
    run_dir = run_dir_of(cfg)
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    monitor = [r for r in lines if r.get("kind") == "monitor"]
    last = summary["steps"]
    assert last == 20
    assert [r["step"] for r in monitor if "health/encoder/rankme" in r] == [0, 4, 8, 12, 16, 20]
    assert [r["step"] for r in monitor if KNN_KEY in r] == [0, 6, 12, 18, 20]
    for r in monitor:
        if "health/encoder/rankme" in r:
            assert 1.0 <= r["health/encoder/rankme"] <= 32
            assert -1.0 <= r["health/encoder/cos_mean"] <= 1.0
            assert 0 <= r["health/encoder/std_min"] <= r["health/encoder/std_mean"]
    done = json.loads((run_dir / "done.json").read_text())
    assert done["health"]["step_0"] == {k: v for k, v in monitor[0].items() if k not in ("step", "epoch", "kind")}
    assert done["health"]["final"][KNN_KEY] == monitor[-1][KNN_KEY]
    # the monitors read the model without changing what it learns
    plain = load_config("toy_paper", [*toy_overrides, "run_name=plain"])
    train(plain)
    a = torch.load(run_dir / "encoder.pt", weights_only=False)["state_dict"]
    b = torch.load(run_dir_of(plain) / "encoder.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    png = plot_knn_curves(run_dir.parent, tmp_path / "knn.png")
    assert png.stat().st_size > 1000
