"""Parameter groups, layer-wise lr decay, optimizer builders, LARS and the lr scaling rule."""
import math

import pytest
import torch
from torch import nn

from common.optim import (
    LARS, apply_schedule, build_optimizer, param_groups_layer_decay, param_groups_weight_decay, scaled_lr,
    vit_layer_id,
)
from common.vit import ViT


def _vit(depth=2):
    torch.manual_seed(0)
    return ViT(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=depth, num_heads=2)


def _ids(params):
    return {id(p) for p in params}


def test_no_weight_decay_on_biases_and_1d_params():
    model = _vit()
    decay, no_decay = param_groups_weight_decay(model)
    assert (decay["wd_scale"], no_decay["wd_scale"]) == (1.0, 0.0)
    named = dict(model.named_parameters())
    expected_exempt = {n for n, p in named.items() if p.ndim == 1}
    assert {n for n, p in named.items() if id(p) in _ids(no_decay["params"])} == expected_exempt
    assert any(n.endswith(".bias") for n in expected_exempt) and "norm.weight" in expected_exempt
    assert "cls_token" not in expected_exempt and "pos_embed" not in expected_exempt  # DINO decays them
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)


def test_named_exemptions_frozen_params_and_moco_v3_mode():
    model = _vit()
    model.patch_embed.proj.weight.requires_grad_(False)
    decay, no_decay = param_groups_weight_decay(model, no_decay_names=("pos_embed", "cls_token"))
    named = dict(model.named_parameters())
    assert _ids([named["pos_embed"], named["cls_token"]]) <= _ids(no_decay["params"])
    assert id(named["patch_embed.proj.weight"]) not in _ids(decay["params"] + no_decay["params"])
    wrapped = nn.ModuleDict({"encoder": model})  # names match as dotted suffixes
    groups = param_groups_weight_decay(wrapped, no_decay_names=("pos_embed",))
    assert id(named["pos_embed"]) in _ids(groups[1]["params"])
    (everything,) = param_groups_weight_decay(model, exclude_1d=False, lr_scale=0.1)
    assert everything["wd_scale"] == 1.0 and len(everything["params"]) == len(named) - 1
    assert everything["lr_scale"] == 0.1


def test_layer_ids_follow_beit_convention():
    depth = 3
    assert vit_layer_id("cls_token", depth) == 0 and vit_layer_id("patch_embed.proj.weight", depth) == 0
    assert vit_layer_id("pos_embed", depth) == 0 and vit_layer_id("encoder.reg_token", depth) == 0
    assert vit_layer_id("blocks.0.attn.qkv.weight", depth) == 1
    assert vit_layer_id("backbone.blocks.2.mlp.fc2.bias", depth) == 3
    assert vit_layer_id("norm.weight", depth) == 4 and vit_layer_id("head.weight", depth) == 4


def test_layer_decay_scales():
    depth, decay = 3, 0.65
    model = nn.ModuleDict({"vit": _vit(depth), "head": nn.Linear(32, 5)})
    groups = param_groups_layer_decay(model, depth=depth, layer_decay=decay, no_decay_names=("pos_embed", "cls_token"))
    named = {id(p): n for n, p in model.named_parameters()}
    seen = 0
    for g in groups:
        for p in g["params"]:
            seen += 1
            name = named[id(p)]
            layer = vit_layer_id(name, depth)
            assert g["lr_scale"] == pytest.approx(decay ** (depth + 1 - layer)), name
            exempt = p.ndim == 1 or name.split(".")[-1] in ("pos_embed", "cls_token")
            assert g["wd_scale"] == (0.0 if exempt else 1.0), name
    assert seen == len(named)
    head = next(g for g in groups if id(model["head"].weight) in _ids(g["params"]))
    assert head["lr_scale"] == 1.0
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        param_groups_layer_decay(model, depth=depth, layer_decay=0.0)


def test_apply_schedule_scales_per_group():
    w, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))
    opt = build_optimizer([{"params": [w], "wd_scale": 1.0, "lr_scale": 0.5},
                           {"params": [b], "wd_scale": 0.0, "lr_scale": 1.0}],
                          {"name": "adamw", "lr": 1.0, "weight_decay": 0.3, "betas": [0.9, 0.95]})
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    apply_schedule(opt, lr=2e-3, weight_decay=0.05)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 2e-3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_build_optimizer_kinds_and_errors():
    p = [nn.Parameter(torch.ones(3))]
    assert isinstance(build_optimizer([{"params": p}], {"name": "sgd", "lr": 0.1, "momentum": 0.8}), torch.optim.SGD)
    assert isinstance(build_optimizer([{"params": p}], {"name": "lars", "lr": 0.1}), LARS)
    with pytest.raises(ValueError, match=r"use one of \['adamw', 'sgd', 'lars'\]"):
        build_optimizer([{"params": p}], {"name": "adam"})
    with pytest.raises(ValueError, match="no parameters"):
        build_optimizer([{"params": []}], {"name": "sgd"})


def test_adamw_decays_only_the_decay_group():
    w, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))
    opt = build_optimizer([{"params": [w], "wd_scale": 1.0}, {"params": [b], "wd_scale": 0.0}],
                          {"name": "adamw", "lr": 0.1, "weight_decay": 0.5})
    w.grad, b.grad = torch.zeros(2, 2), torch.zeros(2)
    opt.step()  # zero gradients: only decoupled decay moves the weights
    assert torch.allclose(w, torch.full((2, 2), 1 - 0.1 * 0.5)) and torch.equal(b, torch.ones(2))


def test_lars_matches_reference_update():
    torch.manual_seed(0)
    w, b = nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(4))
    w0, b0 = w.detach().clone(), b.detach().clone()
    lr, wd, m, eta = 0.5, 0.1, 0.9, 0.001
    opt = LARS([w, b], lr=lr, weight_decay=wd, momentum=m, trust_coefficient=eta)
    grads = [(torch.randn(4, 3), torch.randn(4)) for _ in range(2)]
    mu_w, mu_b = torch.zeros(4, 3), torch.zeros(4)
    ref_w, ref_b = w0, b0
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        dw = gw + wd * ref_w
        dw = dw * (eta * ref_w.norm() / dw.norm())
        mu_w = m * mu_w + dw
        mu_b = m * mu_b + gb  # 1-D: no decay, no adaptation
        ref_w, ref_b = ref_w - lr * mu_w, ref_b - lr * mu_b
    torch.testing.assert_close(w.detach(), ref_w)
    torch.testing.assert_close(b.detach(), ref_b)


def test_lars_trust_ratio_is_one_for_zero_weights():
    w = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=1.0, weight_decay=0.0, momentum=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(w.detach(), -torch.ones(2, 2))


def test_scaled_lr():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(1.5e-4 * 16)
    assert scaled_lr(5e-4, 1024, ref=256) == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 1024, rule="sqrt") == pytest.approx(1e-3 * math.sqrt(4))
    assert scaled_lr(1e-3, 1024, rule="none") == 1e-3
    with pytest.raises(ValueError, match="'linear', 'sqrt' or 'none'"):
        scaled_lr(1e-3, 256, rule="cubic")
