"""DINO / UDI methods: one teacher pass, no teacher gradient, hooks, smoke pretraining + export."""
from __future__ import annotations


import pytest
import torch

from common.checkpoint import load_encoder
from common.config import load_config
from common.train import final_loss, run_dir_of, train, training_log
from udi.heads import DINOHead, SRSAttention
from udi.model import build_method, build_train_data, teacher_temperature


def smoke_cfg(method: str = "udi", *overrides: str):
    return load_config("udi", ["scale=smoke", f"method={method}", *overrides])


@pytest.fixture(scope="module")
def batch():
    """One smoke batch (crops + SRS maps) shared by the tests; DINO ignores the maps."""
    dataset, collate = build_train_data(smoke_cfg("udi"))
    torch.manual_seed(0)
    return collate([dataset[i] for i in range(6)])


def count_calls(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("single_pass, expected_calls", [(True, 1), (False, 2)])
def test_teacher_backbone_runs_once_per_step(single_pass, expected_calls, batch):
    cfg = smoke_cfg("udi", f"method.teacher_single_pass={str(single_pass).lower()}")
    torch.manual_seed(0)
    method = build_method(cfg, 10)
    teacher_calls, student_calls = count_calls(method.teacher.backbone), count_calls(method.student.backbone)
    method.training_step(batch, 0)
    assert len(teacher_calls) == expected_calls
    assert len(student_calls) == 2  # globals and locals: one call per resolution


def test_single_pass_teacher_gives_the_official_twice_run_loss(batch):
    losses = []
    for single_pass in ("true", "false"):
        cfg = smoke_cfg("udi", f"method.teacher_single_pass={single_pass}")
        torch.manual_seed(0)
        method = build_method(cfg, 10)
        losses.append(method.training_step(batch, 0))
    for key in ("loss", "loss_cls", "loss_cls_plus", "loss_patch"):
        assert torch.allclose(losses[0][key], losses[1][key], rtol=1e-5), key


@pytest.mark.parametrize("blend_space", ["logit", "prob"])
def test_chunked_teacher_reduction_equals_unchunked(blend_space, batch):
    outs = []
    for rows in (1, 100000):
        cfg = smoke_cfg("udi", f"method.teacher_chunk_rows={rows}", f"method.blend_space={blend_space}")
        torch.manual_seed(0)
        outs.append(build_method(cfg, 10).training_step(batch, 0)["loss"])
    assert torch.allclose(outs[0], outs[1], rtol=1e-5)


def test_teacher_gets_no_gradient_and_student_learns_both_class_tokens(batch):
    cfg = smoke_cfg("udi")
    method = build_method(cfg, 10)
    method.training_step(batch, 0)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    s = method.student
    assert s.backbone.cls_token.grad[0, 0].abs().sum() > 0 and s.backbone.cls_token.grad[0, 1].abs().sum() > 0
    assert s.backbone.pos_embed.grad[0, :2].abs().sum(-1).min() > 0  # each class token has its own slot
    assert all(p.grad is not None for p in s.srs.parameters())
    assert s.heads[0].last_layer.parametrizations.weight.original1.grad.abs().sum() > 0


def test_last_layer_frozen_in_first_epoch_then_ema_and_centers_move(batch):
    cfg = smoke_cfg("udi", "method.freeze_last_layer=1", "train.epochs=2")
    method = build_method(cfg, total_steps=10)  # 5 steps per epoch
    method.training_step(batch, 0)["loss"].backward()
    method.cancel_gradients(4)
    assert all(p.grad is None for p in method.student.heads[0].last_layer.parameters())
    assert method.student.heads[0].mlp[0].weight.grad is not None
    method.training_step(batch, 5)["loss"].backward()
    method.cancel_gradients(5)
    assert all(p.grad is not None for p in method.student.heads[0].last_layer.parameters())
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.teacher.parameters()]
    method.after_step(5)
    assert all(not torch.equal(a, b) for a, b in zip(before, method.teacher.parameters()))
    assert method.loss.centers.center.abs().sum(-1).min() > 0  # all three centers updated


def test_dino_has_one_class_token_and_no_patch_branch(batch):
    cfg = smoke_cfg("dino")
    method = build_method(cfg, 10)
    assert method.student.backbone.num_class_tokens == 1 and method.student.srs is None
    out = method.training_step(batch, 0)
    assert set(out) == {"loss", "loss_cls", "teacher_temp", "teacher_entropy", "teacher_batch_entropy"}


def test_teacher_temperature_warms_up_per_epoch():
    values = [teacher_temperature(s, 10, 0.04, 0.07, 30) for s in (0, 9, 10, 290, 299, 300, 5000)]
    assert values[0] == values[1] == 0.04
    assert values[2] == pytest.approx(0.04 + 0.03 / 29)
    assert values[3] == values[4] == pytest.approx(0.07)
    assert values[5] == values[6] == 0.07


def test_head_and_srs_module_shapes_and_switches():
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, norm_last_layer=True)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    assert head(torch.randn(5, 16)).shape == (5, 32)
    assert DINOHead(16, 32, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad
    x = torch.randn(2, 9, 16)
    index = torch.tensor([[[0], [4]], [[8], [3]]])
    with_skip, without = SRSAttention(16, 4, skip_connection=True), SRSAttention(16, 4, skip_connection=False)
    without.load_state_dict(with_skip.state_dict())
    w = torch.ones(2, 2, 1)
    assert with_skip(x, index, w).shape == (2, 2, 16)
    assert not torch.allclose(with_skip(x, index, w), without(x, index, w))
    # bilinear queries: a map that puts all weight on one token equals the one-hot query
    idx4 = index.expand(-1, -1, 4)
    w4 = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(2, 2, 4)
    assert torch.allclose(with_skip(x, idx4, w4), with_skip(x, index, w), atol=1e-6)


@pytest.mark.parametrize("override, match", [
    ("method.blend_alpha=1.5", r"blend_alpha must lie in \[0, 1\]"),
    ("model.num_class_tokens=1", "set them equal"),
])
def test_bad_method_settings_fail_with_the_fix(override, match):
    with pytest.raises(ValueError, match=match):
        build_method(smoke_cfg("udi", override), 10)


def test_window_larger_than_grid_fails_when_building_the_data():
    with pytest.raises(ValueError, match="SRS window 8 is larger than the global token grid 7x7"):
        build_train_data(smoke_cfg("udi", "method.window_global=8"))
    with pytest.raises(ValueError, match="local token grid 4x4"):
        build_train_data(smoke_cfg("udi", "method.window_local=5"))


@pytest.mark.parametrize("method", ["udi", "dino"])
def test_smoke_pretraining_lowers_loss_and_exports_an_encoder_eval_accepts(method, tmp_path):
    """With the teacher and the centers held fixed the targets are stationary, so a working
    student update must lower the logged loss (with a moving teacher and centering the loss
    tracks the target entropy instead)."""
    cfg = smoke_cfg(method, f"train.out_root={tmp_path}/runs", f"run_name={method}", "train.epochs=2",
                    "optim.lr=5e-3", "method.warmup_teacher_temp=0.07", "method.momentum_teacher=1.0",
                    "method.center_momentum=1.0", "data.batch_size=16", "data.train_subset=100")
    summary = train(cfg)
    run_dir = run_dir_of(cfg)
    assert final_loss(run_dir) < training_log(run_dir)[0]["loss"]
    vit, meta, _ = load_encoder(summary["encoder"])
    n_tokens = 2 if method == "udi" else 1
    assert vit.num_class_tokens == n_tokens and meta["class_tokens"] == ["cls", "cls_plus"][:n_tokens]
    assert meta["feature"] == "cls" and meta["img_size"] == 28 and meta["in_chans"] == 1
    from eval.api import evaluate
    token = "cls_plus" if method == "udi" else "cls"
    eval_cfg = {"data": "fashion_mnist", "train_subset": 100, "val_subset": 50, "token": token,
                "knn": {"k": [5]}, "cache_dir": None, "progress": False, "device": "cpu"}
    eval_cfg["knn"]["report_k"] = 5
    record = evaluate(summary["encoder"], "knn", eval_cfg, out_dir=tmp_path / "results")[0]
    assert record["metric"] == f"knn/{token}/k5/top1" and 0.0 <= record["value"] <= 100.0


def test_head_batchnorm_switch_normalises_each_hidden_unit_over_all_rows():
    """``use_bn`` (official --use_bn_in_head): a BatchNorm after each hidden Linear, whose
    statistics run over every row of a [R, M, D] patch input, as over a [R * M, D] batch."""
    torch.manual_seed(0)
    plain = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, nlayers=3)
    with_bn = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, nlayers=3, use_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in with_bn.modules()) == 2
    seen = {}
    first_bn = next(m for m in with_bn.modules() if isinstance(m, torch.nn.BatchNorm1d))
    first_bn.register_forward_hook(lambda mod, inp, out: seen.setdefault("out", out))
    x = torch.randn(3, 5, 16) * 4 + 2
    out = with_bn(x)
    assert out.shape == (3, 5, 32)
    normalised = seen["out"]
    assert normalised.shape == (15, 24)
    assert torch.allclose(normalised.mean(0), torch.zeros(24), atol=1e-5)
    assert torch.allclose(normalised.var(0, unbiased=False), torch.ones(24), atol=1e-3)
    assert torch.allclose(with_bn(x.flatten(0, 1)), out.flatten(0, 1), atol=1e-6)
