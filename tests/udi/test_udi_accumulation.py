"""Gradient accumulation for DINO and UDI. The centers are fixed during a step, so DINO's loss
is a mean over images and two micro-batches give the whole batch's gradient; UDI's patch term
averages over the valid SRS slots of the batch it sees, so there each micro-batch must at
least see its own crops and maps. The centers move towards the mean of the whole step."""
import pytest
import torch

from accumulation import assert_same_gradients, mean_gradients, step_gradients
from common.config import load_config
from udi.model import build_method, build_train_data

BATCH = 6


def smoke_cfg(method, *overrides):
    return load_config("udi", ["scale=smoke", f"method={method}", *overrides])


@pytest.fixture(scope="module")
def batch():
    """Crops, boxes and SRS maps (local patch loss on, so every map is in the batch)."""
    dataset, collate = build_train_data(smoke_cfg("udi", "method.local_patch_loss=true"))
    torch.manual_seed(0)
    return collate([dataset[i] for i in range(BATCH)])


def halves(batch):
    return [{k: v[:BATCH // 2] for k, v in batch.items()}, {k: v[BATCH // 2:] for k, v in batch.items()}]


def test_dino_gradient_of_two_micro_batches_is_the_whole_batch_gradient(batch):
    torch.manual_seed(0)
    method = build_method(smoke_cfg("dino"), total_steps=10)
    assert_same_gradients(step_gradients(method, batch, BATCH, accum_steps=2), step_gradients(method, batch, BATCH))


def test_udi_micro_batches_see_their_own_crops_and_maps(batch):
    torch.manual_seed(0)
    method = build_method(smoke_cfg("udi", "method.local_patch_loss=true"), total_steps=10)
    assert_same_gradients(step_gradients(method, batch, BATCH, accum_steps=2),
                          mean_gradients(method, halves(batch), BATCH // 2))


@pytest.mark.parametrize("method_name", ["dino", "udi"])
def test_centers_move_towards_the_mean_of_the_whole_step(method_name, batch):
    overrides = ["method.local_patch_loss=true"] if method_name == "udi" else []
    centers = []
    for accum_steps in (1, 2):
        torch.manual_seed(0)
        method = build_method(smoke_cfg(method_name, *overrides), total_steps=10)
        method.loss.centers.center.normal_()  # a non-zero start, so the momentum matters
        step_gradients(method, batch, BATCH, accum_steps)
        method.after_step(0)
        centers.append(method.loss.centers.center)
    assert centers[0].abs().sum(-1).min() > 0
    torch.testing.assert_close(centers[1], centers[0], rtol=1e-5, atol=1e-6)
