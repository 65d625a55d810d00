"""Smoke pretraining of each method through the common loop: the loss goes down and the
exported encoder is one that eval/ accepts."""
import pytest
import torch

from bootleg.model import build_method, build_train_data
from common.checkpoint import CheckpointManager, load_encoder
from common.config import load_config
from common.train import seed_everything, train
from eval.api import evaluate

STEPS = 20  # 100 images / batch 20 x 4 epochs


@pytest.mark.parametrize("method", ["bootleg", "ijepa", "mae", "mae_ema", "crossmae", "data2vec"])
def test_smoke_pretraining_lowers_the_loss_and_exports_an_evaluable_encoder(method, tmp_path):
    torch.set_num_threads(1)  # tiny matrices: threads only add synchronisation
    overrides = ["scale=smoke", f"method={method}", f"run_name=smoke-{method}",
                 f"train.out_root={tmp_path}", "data.train_subset=100", "data.batch_size=20",
                 "train.epochs=4", "optim.lr=2e-3", "train.progress=false"]
    if method in ("mae", "crossmae"):
        # per-patch normalised pixels barely move in 20 steps; raw pixels show learning
        overrides.append("method.norm_pix_loss=false")
    cfg = load_config("bootleg", overrides)
    # the same initial weights as train() builds, and one fixed batch to compare on
    seed_everything(int(cfg.train.seed))
    dataset, collate = build_train_data(cfg)
    initial = build_method(cfg, STEPS)
    torch.manual_seed(1)
    batch = collate([dataset[i] for i in range(40)])

    summary = train(cfg)
    assert summary["steps"] == STEPS
    state, _ = CheckpointManager(summary["run_dir"]).load_latest()
    trained = build_method(cfg, STEPS)
    trained.load_state_dict(state["method"])
    with torch.no_grad():
        before = initial.training_step(batch, 0)["loss"].item()
        after = trained.training_step(batch, 0)["loss"].item()
    assert after < 0.99 * before, (before, after)

    encoder, meta, _ = load_encoder(summary["encoder"])
    assert meta["method"] == method and meta["feature"] == "avgpool"
    assert meta["encoder"] == ("student" if method in ("mae", "crossmae") else "teacher")
    assert encoder.num_prefix_tokens == 0 and encoder.grid_size == (7, 7)
    records = evaluate(summary["encoder"], "knn",
                       {"train_subset": 100, "val_subset": 50, "knn": {"k": [5], "report_k": 5},
                        "cache_dir": None, "progress": False},
                       out_dir=tmp_path / "results")
    assert 0.0 <= records[0]["value"] <= 100.0 and records[0]["method"] == method
