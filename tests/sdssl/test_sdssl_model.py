"""SDSSL heads and method: widths, batching, gradient flow, EMA, errors."""

import pytest
import torch
import torch.nn as nn

from common.config import load_config
from sdssl.heads import StackedLinear, StackedMLP
from sdssl.model import SDSSL, build_method, distilled_layers

SMOKE = ["scale=smoke"]


def _method(name, *extra, total_steps=10):
    cfg = load_config("sdssl", [*SMOKE, f"method={name}", *extra])
    torch.manual_seed(0)
    return build_method(cfg, total_steps)


def _batch(batch_size=8, size=28):
    g = torch.Generator().manual_seed(1)
    views = torch.randn(2, batch_size, 1, size, size, generator=g)
    return (views[0], views[1]), torch.zeros(batch_size, dtype=torch.long)


def _grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


# ---------------------------------------------------------------------------- heads
def test_stacked_mlp_equals_separate_mlps_with_the_same_weights():
    torch.manual_seed(0)
    n, dims = 3, [5, 7, 7, 4]
    stacked = StackedMLP(n, dims, last_bn=True).train()
    x = torch.randn(6, n, dims[0])
    out = stacked(x)
    linears = [m for m in stacked.layers if isinstance(m, StackedLinear)]
    for i in range(n):
        separate = []
        for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            lin = nn.Linear(a, b, bias=False)
            lin.weight.data = linears[k].weight[i].t().clone()
            separate.append(lin)
            if k < len(dims) - 2:
                separate += [nn.BatchNorm1d(b), nn.ReLU()]
        separate.append(nn.BatchNorm1d(dims[-1], affine=False))
        reference = nn.Sequential(*separate).train()
        torch.testing.assert_close(out[:, i], reference(x[:, i]), rtol=1e-4, atol=1e-5)


def test_per_layer_heads_have_the_paper_widths():
    # Paper widths (config.yaml) on a shallow ViT: intermediate projectors D-2048-2048-256,
    # last projector D-4096-4096-256, one 256-4096-256 predictor per block.
    cfg = load_config("sdssl", ["scale=smoke", "method=sd_moco_v3", "method.out_dim=256",
                                "method.proj_hidden_last=4096", "method.inter_proj_hidden=2048",
                                "method.pred_hidden=4096"])
    method = build_method(cfg, 10)
    d, depth = method.student.embed_dim, method.student.depth
    assert method.layers == list(range(1, depth))
    assert (method.inter_projectors.n, method.inter_projectors.dims) == (depth - 1, [d, 2048, 2048, 256])
    assert (method.last_projector.n, method.last_projector.dims) == (1, [d, 4096, 4096, 256])
    assert (method.inter_predictors.n, method.inter_predictors.dims) == (depth - 1, [256, 4096, 256])
    assert method.last_predictor.dims == [256, 4096, 256]
    assert method.teacher_projector.dims == method.last_projector.dims
    assert isinstance(method.inter_projectors.layers[-1], nn.BatchNorm1d)  # last_bn for MoCo v3


def test_head_variants_of_table_6_and_byol_has_no_output_bn():
    two = _method("sd_moco_v3", "method.inter_head=mlp2")
    assert len(two.inter_projectors.dims) == 3
    none = _method("sd_moco_v3", "method.inter_head=none")
    assert none.inter_projectors is None and none.inter_predictors.in_features == none.student.embed_dim
    every2 = _method("sd_moco_v3", "method.every_n=2")
    assert every2.layers == [2]
    byol = _method("sd_byol")
    assert not isinstance(byol.last_projector.layers[-1], nn.BatchNorm1d)
    assert _method("moco_v3").inter_projectors is None and _method("simclr").last_predictor is None


# ---------------------------------------------------------------------------- gradient flow
@pytest.mark.parametrize("name", ["sd_moco_v3", "sd_byol"])
def test_pred_loss_reaches_only_the_predictors(name):
    method = _method(name).train()
    method.losses(_batch(), step=5)["loss_pred"].backward()
    for module_name, module in method.named_children():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        if module_name in ("inter_predictors", "last_predictor"):
            assert all(g is not None and g.abs().sum() > 0 for g in grads), module_name
        else:
            assert all(g is None for g in grads), module_name


@pytest.mark.parametrize("name", ["sd_moco_v3", "sd_byol", "sd_simclr"])
def test_teacher_and_frozen_patch_projection_get_no_gradient(name):
    method = _method(name).train()
    method.losses(_batch(), step=5)["loss"].backward()
    if method.teacher is not None:
        assert all(not p.requires_grad and p.grad is None for p in method.teacher.parameters())
        assert all(p.grad is None for p in method.teacher_projector.parameters())
    patch = method.student.patch_embed.proj
    assert not patch.weight.requires_grad and patch.weight.grad is None
    trainable = {id(p) for g in method.param_groups() for p in g["params"]}
    assert id(patch.weight) not in trainable
    assert method.student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_isd_trains_intermediate_heads_and_backbone_but_not_the_final_target():
    # SimCLR's L_isd target is sg(final projection): its gradient must not reach g_L.
    method = _method("sd_simclr").train()
    method.losses(_batch(), step=5)["loss_isd"].backward()
    assert all(p.grad is None for p in method.last_projector.parameters())
    assert all(p.grad.abs().sum() > 0 for p in method.inter_projectors.parameters())
    # The last block's parameters only feed the final projection, which is detached here.
    last_block = method.student.blocks[-1]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in last_block.parameters())
    assert method.student.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_frozen_patch_projection_stays_frozen_through_training_steps():
    method = _method("sd_moco_v3").train()
    before = method.student.patch_embed.proj.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for g in method.param_groups() for p in g["params"]], lr=1e-2)
    for step in range(3):
        method.losses(_batch(), step)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        method.after_step(step)
    torch.testing.assert_close(method.student.patch_embed.proj.weight, before, rtol=0, atol=0)
    torch.testing.assert_close(method.teacher.patch_embed.proj.weight, before, rtol=0, atol=0)


def test_ema_teacher_projector_follows_only_the_last_student_projector():
    method = _method("sd_byol", total_steps=100)
    old = [p.detach().clone() for p in method.teacher_projector.parameters()]
    with torch.no_grad():
        for p in method.last_projector.parameters():
            p.add_(1.0)
        for p in method.inter_projectors.parameters():
            p.mul_(-3.0)  # must not matter
    step = 40
    m = method.momentum(step)
    assert method.momentum_base < m < 1.0
    method.after_step(step)
    for t, o, s in zip(method.teacher_projector.parameters(), old, method.last_projector.parameters()):
        torch.testing.assert_close(t, m * o + (1 - m) * s)
    for t, s in zip(method.teacher.parameters(), method.student.parameters()):
        torch.testing.assert_close(t, s)  # teacher started as a copy of the unchanged student


def test_byol_loss_is_grill_eq2_symmetrised_with_the_ema_target_of_the_other_view():
    """BYOL (Grill et al. 2020, Eq. 2): L = ||q_bar - z_bar'||^2 with q = p(g(f(v))) online and
    z' = g_xi(f_xi(v')) of the target on the *other* view, plus the symmetric term; the target
    is the EMA network (here made to differ from the online one), gets no gradient, and has no
    predictor.  Written from the paper, not from sdssl.loss."""
    method = _method("byol").train()
    with torch.no_grad():  # a target network that is not the online one
        for p in [*method.teacher.parameters(), *method.teacher_projector.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    (v1, v2), labels = _batch(batch_size=16)

    def online(v):
        y = method.student(v).tokens[:, 0]
        return method.last_predictor(method.last_projector(y[:, None]))[:, 0]

    def target(v):
        with torch.no_grad():
            return method.teacher_projector(method.teacher(v).tokens[:, :1])[:, 0]

    def eq2(q, z):
        q_bar, z_bar = q / q.norm(dim=-1, keepdim=True), z / z.norm(dim=-1, keepdim=True)
        return ((q_bar - z_bar) ** 2).sum(dim=-1).mean()

    trainable = [p for m in (method.student, method.last_projector, method.last_predictor)
                 for p in m.parameters() if p.requires_grad]
    reference = eq2(online(v1), target(v2)) + eq2(online(v2), target(v1))
    ref_grads = torch.autograd.grad(reference, trainable, allow_unused=True)
    out = method.losses(((v1, v2), labels), step=3)
    torch.testing.assert_close(out["loss"], reference)
    out["loss"].backward()
    got = [p.grad for p in trainable]
    for g, r in zip(got, ref_grads):
        if r is None:
            assert g is None
        else:
            torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4)  # float32 sums, views batched vs apart
    assert all(p.grad is None for p in [*method.teacher.parameters(), *method.teacher_projector.parameters()])


def test_baselines_have_no_intermediate_terms():
    for name in ("moco_v3", "byol", "simclr"):
        out = _method(name).train().losses(_batch(), step=9)
        assert out["loss_isd"].item() == 0 and out["loss_pred"].item() == 0
        torch.testing.assert_close(out["loss"], out["loss_ssl"])


def test_total_loss_combines_terms_with_alpha_and_layer_count():
    method = _method("sd_moco_v3", total_steps=10).train()
    out = method.losses(_batch(), step=5)
    alpha = method.alpha(5)
    assert 0 < alpha < method.alpha_max
    torch.testing.assert_close(out["loss"], out["loss_ssl"] + alpha * out["loss_isd"] + out["loss_pred"])
    # L_pred = (number of predictor layers) x mean over layers: with "mean" it shrinks by that count.
    torch.manual_seed(0)
    mean_method = _method("sd_moco_v3", "method.pred_loss_reduction=mean", total_steps=10).train()
    mean_method.load_state_dict(method.state_dict())
    out_mean = mean_method.losses(_batch(), step=5)
    torch.testing.assert_close(out["loss_pred"], method.student.depth * out_mean["loss_pred"])


# ---------------------------------------------------------------------------- errors
def test_distilled_layers_outside_the_depth_are_rejected():
    with pytest.raises(ValueError, match=r"intermediate_layers \[6\] outside 1..5"):
        distilled_layers(6, [2, 6], 1)
    with pytest.raises(ValueError, match="outside 1..2"):
        _method("sd_moco_v3", "method.intermediate_layers=[0,1]")
    with pytest.raises(ValueError, match="every_n must be >= 1"):
        distilled_layers(6, None, 0)


def test_negative_alpha_max_and_unknown_framework_are_rejected():
    with pytest.raises(ValueError, match="alpha_max must be >= 0"):
        _method("sd_byol", "method.alpha_max=-0.5")
    with pytest.raises(ValueError, match="framework must be one of"):
        _method("sd_byol", "method.framework=dino")
    with pytest.raises(ValueError, match="set method.out_dim=64"):
        _method("sd_simclr", "method.inter_head=none")


def test_sdssl_constructor_checks_layers_itself():
    method = _method("moco_v3")
    with pytest.raises(ValueError, match="distilled layers"):
        SDSSL(method.student, "moco_v3", [3], 10, out_dim=8, proj_hidden_last=8, inter_proj_hidden=8, pred_hidden=8,
              inter_head="mlp3", last_bn=True, temperature=0.2, alpha_max=1.0, alpha_schedule="cosine",
              pred_loss_weight=1.0, pred_loss_reduction="sum", shared_final_norm=True, momentum_base=0.99,
              wd_exclude_1d=True)


@pytest.mark.parametrize("name", ["sd_byol", "sd_simclr"])
def test_predictor_lr_scale_applies_to_the_predictors_only(name):
    method = _method(name, "method.predictor_lr_scale=10")
    predictor_ids = {id(p) for m in method.predictors() for p in m.parameters()}
    scales = {id(p): g["lr_scale"] for g in method.param_groups() for p in g["params"]}
    trainable = {id(p) for m in method.trainable_modules() for p in m.parameters() if p.requires_grad}
    assert set(scales) == trainable and len(scales) == sum(len(g["params"]) for g in method.param_groups())
    assert {scales[i] for i in predictor_ids} == ({10.0} if name == "sd_byol" else set())
    assert {s for i, s in scales.items() if i not in predictor_ids} == {1.0}


def test_predictor_lr_scale_must_be_positive():
    with pytest.raises(ValueError, match="method.predictor_lr_scale must be > 0"):
        _method("byol", "method.predictor_lr_scale=0")
