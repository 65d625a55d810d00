"""Smoke pretraining of the six methods through the common loop, then eval/ on the export."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from common.checkpoint import load_encoder
from common.config import load_config
from common.train import make_plan, seed_everything, train
from sdssl.model import build_method, build_train_data

METHODS = ["simclr", "sd_simclr", "byol", "sd_byol", "moco_v3", "sd_moco_v3"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _config(name, tmp_path, data_root):
    return load_config("sdssl", ["scale=smoke", f"method={name}", f"run_name={name}",
                                 f"train.out_root={tmp_path / 'runs'}", f"data.root={data_root}",
                                 f"eval.root={data_root}", "train.epochs=3"])


def _fixed_batch(dataset, n=64):
    torch.manual_seed(123)
    items = [dataset[i] for i in range(n)]
    view1 = torch.stack([views[0] for views, _ in items])
    view2 = torch.stack([views[1] for views, _ in items])
    return (view1, view2), torch.tensor([label for _, label in items])


@torch.no_grad()
def _objective(method, batch, step):
    torch.manual_seed(0)
    return method.train().losses(batch, step)["loss"].item()


@pytest.mark.parametrize("name", METHODS)
def test_smoke_pretraining_lowers_the_loss_and_exports_an_encoder_eval_accepts(name, tmp_path, data_root):
    cfg = _config(name, tmp_path, data_root)
    # The loop seeds once, builds the data (no global RNG draws), then the method: replay it.
    seed_everything(int(cfg.train.seed))
    dataset, _ = build_train_data(cfg)
    total = make_plan(cfg, len(dataset), 1).total_steps
    initial = build_method(cfg, total)
    batch = _fixed_batch(dataset)
    before = _objective(initial, batch, step=total)  # alpha at its maximum: every term counts

    summary = train(cfg)
    state = torch.load(sorted((Path(summary["run_dir"]) / "checkpoints").glob("*.pt"))[-1],
                       weights_only=False)
    initial.load_state_dict(state["method"])
    after = _objective(initial, batch, step=total)
    assert after < before, f"{name}: objective on a fixed batch went {before:.4f} -> {after:.4f}"

    vit, meta, sha = load_encoder(summary["encoder"])
    assert meta["method"] == name and meta["feature"] == "cls" and meta["in_chans"] == 1
    assert sha == summary["encoder_sha256"]
    assert not vit.patch_embed.proj.weight.requires_grad

    from eval.api import evaluate

    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    eval_cfg.update(protocols=["knn"], cache_dir=None, progress=False)
    [record] = evaluate(summary["encoder"], "knn", eval_cfg, out_dir=tmp_path / "results")
    depth = int(cfg.model.depth)
    per_layer = [k for k in record["metrics"] if k.startswith("knn/cls@") and k.endswith("/k20/top1")]
    assert len(per_layer) == depth and 0.0 <= record["value"] <= 100.0
    assert json.loads((tmp_path / "results" / "knn.json").read_text())["checkpoint_sha256"] == sha
