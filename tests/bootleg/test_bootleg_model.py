"""The masked-prediction method: targets, predictor, gradient flow, EMA, config errors."""
import functools

import pytest
import torch
import torch.nn.functional as F

from bootleg.masks import BootlegMaskGenerator
from bootleg.model import Predictor, build_method, gather_tokens, resolve_target_layers
from common.config import ConfigError, load_config


@functools.lru_cache(maxsize=None)
def make_cfg(*overrides):
    return load_config("bootleg", ["scale=smoke", *overrides])


def make_batch(method, batch=4, seed=0):
    torch.manual_seed(seed)
    student = method.student
    grid = student.grid_size
    masks = BootlegMaskGenerator(grid, npred=2)(batch, torch.Generator().manual_seed(seed))
    images = torch.randn(batch, student.in_chans, grid[0] * student.patch_size, grid[1] * student.patch_size)
    return {"images": images, "context": masks.context, "targets": masks.targets}


def test_even_target_layers_end_at_the_last_block():
    assert resolve_target_layers(["even:4"], 12) == [3, 6, 9, 12]
    assert resolve_target_layers("even:4", 24) == [6, 12, 18, 24]
    assert resolve_target_layers("even:3", 6) == [2, 4, 6]
    assert resolve_target_layers([5], 12, include_final=True) == [5, "final"]
    assert resolve_target_layers([2, "final"], 12) == [2, "final"]
    assert resolve_target_layers("all", 3) == [1, 2, 3]
    assert resolve_target_layers("even:4", 2) == [1, 2]


def test_target_layer_beyond_depth_is_rejected():
    with pytest.raises(ValueError, match="13 is not a block of the depth-12 encoder"):
        resolve_target_layers([3, 13], 12)
    with pytest.raises(ValueError, match="not a block of the depth-2 encoder"):
        build_method(make_cfg("method.target_layers=[3]"), total_steps=10)


def test_bootleg_targets_are_per_layer_normalised_teacher_hidden_states():
    method = build_method(make_cfg("method.target_layers=[1,2]"), total_steps=10)
    teacher = method.teacher
    images = make_batch(method)["images"]
    y = method.hidden_targets(teacher, images)
    # independent forward through the teacher's modules
    x = teacher.patch_embed(images) + teacher.pos_embed
    h1 = teacher.blocks[0](x)
    h2 = teacher.blocks[1](h1)  # the last block, taken before the final norm (default)
    D = teacher.embed_dim
    assert y.shape == (4, 49, 2 * D)
    assert torch.allclose(y[..., :D], F.layer_norm(h1, (D,)), atol=1e-5)
    assert torch.allclose(y[..., D:], F.layer_norm(h2, (D,)), atol=1e-5)


def test_ijepa_target_is_the_layer_normed_final_output():
    method = build_method(make_cfg("method=ijepa"), total_steps=10)
    images = make_batch(method)["images"]
    y = method.hidden_targets(method.teacher, images)
    final = method.teacher.forward_features(images)
    assert torch.allclose(y, F.layer_norm(final, final.shape[-1:]), atol=1e-5)


def test_predictor_blocks_do_not_see_each_other():
    pred = Predictor(embed_dim=16, grid=(4, 4), out_dim=8, width=16, depth=2, num_heads=2)
    z = torch.randn(2, 5, 16)
    context = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[[10, 11], [12, 13]], [[14, 15], [10, 15]]])
    out = pred(z, context, targets)
    assert out.shape == (2, 2, 2, 8)
    moved = targets.clone()
    moved[1] = torch.tensor([[12, 14], [11, 13]])
    out2 = pred(z, context, moved)
    assert torch.allclose(out[0], out2[0]) and not torch.allclose(out[1], out2[1])


def test_gather_tokens():
    x = torch.arange(2 * 5 * 3).float().view(2, 5, 3)
    idx = torch.tensor([[[4, 0], [1, 1]]])
    g = gather_tokens(x, idx)
    assert torch.equal(g[0, 0], x[0, [4, 0]]) and torch.equal(g[0, 1], x[1, [1, 1]])


@pytest.mark.parametrize("method_name", ["bootleg", "ijepa", "mae_ema"])
def test_gradient_reaches_student_and_predictor_only(method_name):
    method = build_method(make_cfg(f"method={method_name}"), total_steps=10)
    out = method.training_step(make_batch(method), step=0)
    out["loss"].backward()
    for name, p in method.named_parameters():
        if name.startswith("teacher."):
            assert p.grad is None and not p.requires_grad, name
    student_grads = [p.grad for p in method.student.parameters() if p.requires_grad]
    assert all(g is not None for g in student_grads)
    assert method.student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.predictor.mask_token.grad.abs().sum() > 0
    trainable = {id(p) for g in method.param_groups() for p in g["params"]}
    assert trainable == {id(p) for n, p in method.named_parameters()
                         if p.requires_grad and not n.startswith("teacher.")}


def test_mae_has_no_teacher_and_regresses_pixels():
    method = build_method(make_cfg("method=mae"), total_steps=10)
    assert method.teacher is None and method.encoder_for_eval() is method.student
    out = method.training_step(make_batch(method), step=0)
    assert set(out) == {"loss", "loss_pixels"}


def test_ema_teacher_moves_by_the_scheduled_momentum():
    total = 10
    method = build_method(make_cfg(), total_steps=total)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(torch.randn_like(p))
    before = [t.clone() for t in method.teacher.parameters()]
    step = 4
    method.after_step(step)
    m = 0.996 + step * (1.0 - 0.996) / total  # I-JEPA's linear ramp
    for old, new, s in zip(before, method.teacher.parameters(), method.student.parameters()):
        assert torch.allclose(new, m * old + (1 - m) * s, atol=1e-6)


def test_mask_token_weight_decay_switch():
    def decayed_mask_token(flag):
        method = build_method(make_cfg(f"method.wd_mask_token={flag}"), total_steps=10)
        group = next(g for g in method.param_groups()
                     if any(p is method.predictor.mask_token for p in g["params"]))
        return group["wd_scale"] > 0
    assert decayed_mask_token(True) and not decayed_mask_token(False)


def test_export_encoder_switch_and_missing_teacher_error():
    method = build_method(make_cfg("method.export_encoder=student"), total_steps=10)
    assert method.encoder_for_eval() is method.student
    method = build_method(make_cfg("method.export_encoder=target"), total_steps=10)  # I-JEPA's name
    assert method.encoder_for_eval() is method.teacher and method.export_meta()["encoder"] == "teacher"
    assert build_method(make_cfg("method.export_encoder=null"), total_steps=10).export_encoder == "teacher"
    mae = build_method(make_cfg("method=mae", "method.export_encoder=null"), total_steps=10)
    assert mae.export_encoder == "student"
    with pytest.raises(ConfigError, match="has no EMA teacher; use method.export_encoder=student"):
        make_cfg("method=mae", "method.export_encoder=teacher")
