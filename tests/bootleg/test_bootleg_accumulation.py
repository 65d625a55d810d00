"""Gradient accumulation is exact for every masked-prediction method: the losses are means
over equal-sized samples, so two micro-batches give the gradient of the whole batch, provided
each micro-batch keeps its images with their masks (targets are ``[M, B, Nt]``)."""

from pathlib import Path

import pytest
import torch

from accumulation import assert_same_gradients, step_gradients
from bootleg.model import build_method, build_train_data
from common.config import load_config
from common.train import train, training_log

BATCH = 8
# data2vec 2.0's decoder fills masked positions with noise, drawn differently per call: off
NOISELESS_CLONES = ["mask.clones=2", "predictor.noise_std=0"]


def smoke(method, *extra):
    return load_config("bootleg", ["scale=smoke", f"method={method}", *extra])


@pytest.mark.parametrize("method, extra", [("bootleg", []), ("ijepa", []), ("mae", []), ("mae_ema", []),
                                           ("crossmae", []), ("data2vec", NOISELESS_CLONES)])
def test_two_micro_batches_give_the_whole_batch_gradient(method, extra):
    torch.set_num_threads(1)
    cfg = smoke(method, *extra)
    dataset, collate = build_train_data(cfg)
    torch.manual_seed(0)
    batch = collate([dataset[i] for i in range(BATCH)])
    model = build_method(cfg, total_steps=10)
    whole = step_gradients(model, batch, BATCH)
    accumulated = step_gradients(model, batch, BATCH, accum_steps=2, batch_dims=collate.batch_dims)
    assert_same_gradients(accumulated, whole)


def first_step_log(tmp_path, method, accum_steps, *extra):
    cfg = smoke(method, f"optim.accum_steps={accum_steps}", f"run_name=accum{accum_steps}",
                f"train.out_root={tmp_path}", "data.train_subset=20", "data.batch_size=20", "train.epochs=1",
                "train.progress=false", *extra)
    summary = train(cfg)
    assert summary["steps"] == 1
    return training_log(Path(summary["run_dir"]))[0]


@pytest.mark.parametrize("method, extra", [("bootleg", []), ("data2vec", NOISELESS_CLONES)])
def test_training_loop_accumulates_with_the_collator_layout(method, extra, tmp_path):
    """Through ``common.train``: the first step's loss and (pre-clip) gradient norm do not
    depend on optim.accum_steps, with several target blocks and with mask clones."""
    torch.set_num_threads(1)
    whole = first_step_log(tmp_path, method, 1, *extra)
    accumulated = first_step_log(tmp_path, method, 2, *extra)
    for key in ("loss", "grad_norm"):
        assert accumulated[key] == pytest.approx(whole[key], rel=1e-5), key
