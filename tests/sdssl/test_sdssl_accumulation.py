"""Gradient accumulation for SDSSL. Its losses share batch statistics (BatchNorm in every head,
in-batch negatives for MoCo v3 and SimCLR), so micro-batches do not give the whole batch's
gradient; what must hold is that each micro-batch pairs the two views of the same images: the
accumulated gradient is the mean of the gradients of the two half batches taken alone."""
import pytest
import torch
from torch.utils.data import default_collate

from accumulation import assert_same_gradients, mean_gradients, step_gradients
from common.config import load_config
from sdssl.model import build_method, build_train_data

BATCH = 8


@pytest.mark.parametrize("method_name", ["sd_moco_v3", "sd_byol", "sd_simclr"])
def test_micro_batches_pair_the_views_of_their_own_images(method_name):
    cfg = load_config("sdssl", ["scale=smoke", f"method={method_name}"])
    dataset, _ = build_train_data(cfg)
    torch.manual_seed(0)
    batch = default_collate([dataset[i] for i in range(BATCH)])
    method = build_method(cfg, total_steps=10)
    (view1, view2), labels = batch
    h = BATCH // 2
    halves = [((view1[:h], view2[:h]), labels[:h]), ((view1[h:], view2[h:]), labels[h:])]
    accumulated = step_gradients(method, batch, BATCH, accum_steps=2)
    assert_same_gradients(accumulated, mean_gradients(method, halves, h))
    # and the batch statistics do make the whole batch's gradient another one
    whole = step_gradients(method, batch, BATCH)
    assert not torch.allclose(accumulated["student.cls_token"], whole["student.cls_token"], rtol=1e-3)
