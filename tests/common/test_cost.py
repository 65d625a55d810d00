"""The `--dry-run` cost table (common/cost.py): FLOPs counted on the real modules agree with a
closed-form count of a ViT, and the GPU-hours, images-seen and memory arithmetic."""
from __future__ import annotations

import pytest
import torch

from common.config import load_config
from common.cost import (OPTIMIZER_STATES, StepCost, counted_flops, epoch_images, gpu_hours, images_seen,
                         peak_memory_gb, per_gpu_batch, run_costs)
from common.launch import main, plan_runs
from common.vit import ViT


def vit_forward_flops(img: int, patch: int, chans: int, dim: int, depth: int, mlp_ratio: float, prefix: int) -> int:
    """Multiply-adds x 2 of a ViT forward for one image, written from the architecture:
    patch embedding, and per block the qkv projection, QK^T, attention x V, the output
    projection and the two MLP layers (norms, softmax and GELU are not matmuls)."""
    patches = (img // patch) ** 2
    tokens = patches + prefix
    hidden = int(dim * mlp_ratio)
    embed = 2 * patches * (chans * patch * patch) * dim
    block = (2 * tokens * dim * 3 * dim      # qkv
             + 2 * tokens * tokens * dim     # QK^T over all heads
             + 2 * tokens * tokens * dim     # attention x V
             + 2 * tokens * dim * dim        # output projection
             + 2 * 2 * tokens * dim * hidden)  # MLP up and down
    return embed + depth * block


@pytest.mark.parametrize("fused_attn", [True, False])
def test_counted_vit_forward_equals_the_closed_form(fused_attn):
    arch = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=3, num_heads=4, mlp_ratio=4.0,
                num_class_tokens=1, reg_tokens=2, fused_attn=fused_attn)
    vit = ViT(**arch).eval()
    with torch.no_grad():
        flops, _ = counted_flops(vit, torch.randn(2, 3, 32, 32))
    expected = 2 * vit_forward_flops(32, 8, 3, 64, 3, 4.0, prefix=3)
    assert flops == pytest.approx(expected, rel=0.02)


def test_gpu_hours_are_flops_over_delivered_throughput():
    # 1000 PFLOPs = 1e18 FLOPs at 100 TFLOP/s x 0.5 = 5e13 FLOP/s: 20000 s
    assert gpu_hours(1000.0, peak_tflops=100, utilisation=0.5) == pytest.approx(20000 / 3600)
    with pytest.raises(ValueError, match="cost.utilisation"):
        gpu_hours(1.0, peak_tflops=312, utilisation=1.5)


def test_images_seen_count_whole_global_batches_over_the_epochs():
    cfg = load_config("bootleg", ["experiment=main_table", "scale=paper"])
    assert epoch_images(cfg) == (1281167, "cost.dataset_images.imagenet")
    # 1,281,167 // 2048 = 625 batches of 2048 per epoch
    assert images_seen(cfg, 1281167) == int(cfg.train.epochs) * 625 * 2048
    cfg = load_config("bootleg", ["scale=paper", "data.name=imagefolder:/data/my_set"])
    count, why = epoch_images(cfg)
    assert count is None and "+cost.dataset_images.my_set=" in why
    cfg = load_config("bootleg", ["scale=paper", "data.train_subset=0.1"])
    assert epoch_images(cfg)[0] == 128117


def test_peak_memory_is_state_gradients_moments_and_scaled_activations():
    cfg = load_config("bootleg", ["scale=paper"])  # adamw, global batch 2048 over 2 x 8 processes
    assert per_gpu_batch(cfg) == 128
    step = StepCost(params=10, trainable=1_000_000, flops_per_image=1.0, state_bytes=8_000_000,
                    activation_bytes_per_image=2**20)
    assert OPTIMIZER_STATES["adamw"] == 2
    expected = 8_000_000 + 4 * 1_000_000 * 3 + 128 * 2**20  # grads + two moments, 128 images
    assert peak_memory_gb(cfg, step) == pytest.approx(expected / 2**30)


def test_a_step_is_measured_once_per_distinct_method(tmp_path):
    specs = [*plan_runs("bootleg", ["scale=smoke", "train.epochs=1"]), *plan_runs("bootleg", ["scale=smoke", "train.epochs=2"])]
    measured = []

    def fake(cfg):
        measured.append(cfg.method.name)
        return StepCost(1, 1, 1.0, 4, 1.0)

    costs = run_costs(specs, measure=fake)
    assert sorted(measured) == sorted(s.cfg.method.name for s in specs[:len(specs) // 2])
    half = len(specs) // 2
    assert [2 * c.images_seen for c in costs[:half]] == [c.images_seen for c in costs[half:]]


def test_dry_run_prints_the_cost_of_every_run_and_the_total(toy_overrides, capsys):
    main("toy_paper", ["--dry-run", "experiment=pair", *toy_overrides, "cost=h100", "cost.utilisation=0.5"])
    out = capsys.readouterr().out
    assert "GPU-hours on H100 (SXM, 80 GB) at 989 TFLOP/s bf16 dense peak x 0.5 assumed utilisation" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1:-1] == [" run ", " params (M) ", " GFLOPs / image ", " images seen ", " PFLOPs ",
                                         " GPU-hours ", " per-GPU batch ", " peak memory / GPU (GB, est.) "]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table[2:]}
    assert set(rows) == {"toy-a", "toy-b", "**total**"}
    for name in ("toy-a", "toy-b"):
        assert "?" not in "".join(rows[name]) and float(rows[name][1]) > 0, rows[name]


def test_a_training_step_counts_backward_and_the_teacher(toy_overrides):
    """The toy method's step: the student's forward on two views with their backward (about
    2x the forward) and the EMA teacher's forward on one view: about 7 student forwards."""
    from common.cost import measure_step

    cfg = load_config("toy_paper", toy_overrides)
    m = cfg.model
    forward = vit_forward_flops(m.img_size, m.patch_size, m.in_chans, m.embed_dim, m.depth, 4.0,
                                prefix=m.num_class_tokens)
    step = measure_step(cfg)
    assert 6.5 * forward < step.flops_per_image < 8 * forward, step.flops_per_image / forward
    assert step.activation_bytes_per_image > 0 and step.trainable < step.params  # the teacher is frozen
