"""The Hybrid Distill method: relation capture, frozen teachers, bad input, smoke training."""

import json
import math

import pytest
import torch

from accumulation import assert_same_gradients, step_gradients
from common.checkpoint import load_encoder
from common.config import load_config
from common.vit import ViT
from hd_smoke_teachers import FM_MEAN, save_teacher, smoke_teachers, teacher_overrides
from hybrid_distill.model import build_method, build_train_data


@pytest.fixture(scope="module")
def teacher_paths(tmp_path_factory):
    return smoke_teachers(tmp_path_factory.mktemp("teachers"))


def smoke_cfg(teacher_paths, tmp_path, *extra):
    overrides = ["scale=smoke", f"train.out_root={tmp_path / 'runs'}", f"results_root={tmp_path / 'results'}",
                 *teacher_overrides(teacher_paths), *extra]
    return load_config("hybrid_distill", overrides)


def test_student_relations_equal_qk_recomputed_and_carry_gradient(teacher_paths, tmp_path):
    method = build_method(smoke_cfg(teacher_paths, tmp_path), total_steps=10)
    method.train()
    images = torch.rand(3, 1, 16, 16)
    keep = torch.tensor([[0, 2, 5, 9, 15]] * 3)
    out, _ = method._student_forward(images, keep)
    s = method.student
    # Independent recomputation from the weights: tokens before block 1 (L-1 = block 1 here).
    with torch.no_grad():
        h = s.embed((images - method.mean) / method.std, keep)
        attn = s.blocks[0].attn
        qkv = attn.qkv(s.blocks[0].norm1(h)).reshape(3, 6, 3, attn.num_heads, attn.head_dim)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        want = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    torch.testing.assert_close(out.relations[1], want, rtol=1e-4, atol=1e-5)
    out.relations[1].square().mean().backward()
    assert s.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_teachers_get_no_gradient_and_stay_in_eval_mode(teacher_paths, tmp_path):
    method = build_method(smoke_cfg(teacher_paths, tmp_path), total_steps=10)
    method.train()
    assert all(not t.training for t in method.teachers.values())
    assert all(not m.training for t in method.teachers.values() for m in t.modules())
    logs = method.training_step({"images": torch.rand(4, 1, 16, 16)}, 0)
    logs["loss"].backward()
    teacher_params = [p for t in method.teachers.values() for p in t.parameters()]
    assert teacher_params and all(p.grad is None and not p.requires_grad for p in teacher_params)
    assert {"loss_tc_feature", "loss_tm_relation"} <= set(logs)
    assert logs["kept_patches"] == 6  # 16 -> 11 -> 8 -> 6 with K = 0.3
    # teachers are referenced by path, not copied into every checkpoint
    assert not any(k.startswith("teachers.") for k in method.state_dict())
    method.load_state_dict(method.state_dict())


def test_head_count_mismatch_is_rejected(teacher_paths, tmp_path):
    paths = dict(teacher_paths, mae=save_teacher(tmp_path / "mae3" / "encoder.pt", 5, embed_dim=48, num_heads=3))
    with pytest.raises(ValueError, match="same number of heads, teacher has 3 .*set model.num_heads=3"):
        build_method(smoke_cfg(paths, tmp_path), total_steps=10)


def test_relation_layer_outside_teacher_depth_is_rejected(teacher_paths, tmp_path):
    cfg = smoke_cfg(teacher_paths, tmp_path, "method.terms.tm_relation.layers=[5]")
    with pytest.raises(ValueError, match=r"method.terms.tm_relation .*outside 1..3"):
        build_method(cfg, total_steps=10)


def test_identity_head_needs_equal_width_and_missing_teacher_file(teacher_paths, tmp_path):
    with pytest.raises(ValueError, match="feat_head=identity needs teacher width 48 == student width 64"):
        build_method(smoke_cfg(teacher_paths, tmp_path, "method.feat_head=identity"), total_steps=10)
    with pytest.raises(FileNotFoundError, match=r"teachers.mae.path=.*nope.pt does not exist; point it to an encoder.pt"):
        build_method(smoke_cfg(dict(teacher_paths, mae=tmp_path / "nope.pt"), tmp_path), total_steps=10)


def test_eval_feature_is_what_the_exported_encoder_is_read_at(teacher_paths, tmp_path):
    from common.checkpoint import export_encoder
    from eval.encoders import load as load_eval_encoder
    from eval.features import resolve_token

    method = build_method(smoke_cfg(teacher_paths, tmp_path, "method.eval_feature=avgpool"), total_steps=10)
    path = tmp_path / "student" / "encoder.pt"
    export_encoder(method.encoder_for_eval(), path, {**method.export_meta(), "method": "distill",
                                                     "paper": "hybrid_distill", "run": "t", "step": 0})
    assert resolve_token(load_eval_encoder(str(path)), None) == "avgpool"
    with pytest.raises(ValueError, match=r"method.eval_feature='mean'; choose one of \('cls', 'avgpool'\)"):
        build_method(smoke_cfg(teacher_paths, tmp_path, "method.eval_feature=mean"), total_steps=10)


@pytest.mark.parametrize("extra", [["method.mask.strategy=random"],
                                   ["method.mask.strategy=direct", "method.mask.teacher_tokens=full"],
                                   ["method.terms.tm_relation.kind=msa", "method.relation_form=softmax"]])
def test_variants_run_one_step(teacher_paths, tmp_path, extra):
    from hybrid_distill.model import build_train_data
    cfg = smoke_cfg(teacher_paths, tmp_path, *extra)
    dataset, collate = build_train_data(cfg)
    batch = collate([dataset[i] for i in range(4)])
    assert batch["images"].shape == (4, 1, 16, 16) and 0 <= batch["images"].min() <= batch["images"].max() <= 1
    logs = build_method(cfg, total_steps=10).training_step(batch, 0)
    assert torch.isfinite(logs["loss"]) and logs["kept_patches"] == 6


def test_smoke_distillation_lowers_loss_and_exports_an_encoder(teacher_paths, tmp_path):
    from common.train import train
    cfg = smoke_cfg(teacher_paths, tmp_path, "run_name=smoke")
    summary = train(cfg)
    log = [json.loads(line) for line in open(f"{summary['run_dir']}/log.jsonl")]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.9 * losses[0]
    vit, meta, sha = load_encoder(summary["encoder"])
    assert isinstance(vit, ViT) and meta["mean"] == pytest.approx(FM_MEAN) and meta["feature"] == "cls"
    assert meta["teachers"]["mae"]["sha256"] == load_encoder(teacher_paths["mae"])[2]
    try:
        from eval.api import evaluate
    except ImportError:
        pytest.skip("eval.api not available yet")
    records = evaluate(summary["encoder"], "knn", cfg.eval, out_dir=tmp_path / "results", run_info={})
    assert records and all(0.0 <= r.get("value", 0) <= 100 for r in records)


@pytest.mark.parametrize("strategy", ["progressive", "random"])
def test_two_micro_batches_give_the_whole_batch_gradient(strategy, teacher_paths, tmp_path):
    """The distillation losses are means over images (token dropping is decided per image), so
    gradient accumulation is exact; `random` draws its keep sets in the collator."""
    cfg = smoke_cfg(teacher_paths, tmp_path, f"method.mask.strategy={strategy}")
    dataset, collate = build_train_data(cfg)
    torch.manual_seed(0)
    batch = collate([dataset[i] for i in range(8)])
    assert ("keep" in batch) == (strategy == "random")
    method = build_method(cfg, total_steps=10)
    assert_same_gradients(step_gradients(method, batch, 8, accum_steps=2), step_gradients(method, batch, 8))


@pytest.mark.parametrize("cls_weight", [1.0, 7.0])
def test_distill_loss_is_eq1_on_the_feature_eval_reads(teacher_paths, tmp_path, cls_weight):
    """Distill-X (one teacher, no mask): the training loss equals Eq. 1 recomputed independently
    from (a) the student as eval extracts it after export (class token = eval's `cls` feature,
    patches = eval's patch tokens), (b) the teacher file's own final-norm tokens and (c) the
    linear head: smooth-L1 (beta 2) to per-token whitened targets, class row weighted cls_weight.
    So what k-NN reads is exactly the row the loss aligns (through the head), in the same token order."""
    from common.checkpoint import export_encoder
    from eval.encoders import load as load_eval_encoder
    from eval.features import Preprocess, compute_atoms, parse_feature

    cfg = smoke_cfg(teacher_paths, tmp_path, "method=distill", "method.tc=clip", f"method.cls_weight={cls_weight}")
    method = build_method(cfg, total_steps=10)
    torch.manual_seed(3)
    with torch.no_grad():  # a student and head away from their init
        for p in list(method.student.parameters()) + list(method.heads.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    method.eval()
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        loss = method.training_step({"images": images.float() / 255}, 0)["loss"]

        path = tmp_path / "student" / "encoder.pt"
        export_encoder(method.encoder_for_eval(), path, {**method.export_meta(), "method": "distill",
                                                         "paper": "hybrid_distill", "run": "t", "step": 0})
        enc = load_eval_encoder(str(path))
        x = Preprocess(enc.meta)(images)
        (cls_atom,) = parse_feature(enc.meta["feature"], enc.model.depth)
        feats = compute_atoms(enc.model, x, [cls_atom])
        student_rows = torch.cat([feats[cls_atom][:, None], enc.model(x).patches], dim=1)  # [B, 1 + N, D]

        teacher, tmeta, _ = load_encoder(teacher_paths["clip"])
        tx = (images.float() / 255 - torch.tensor(tmeta["mean"]).view(1, -1, 1, 1)) / torch.tensor(tmeta["std"]).view(1, -1, 1, 1)
        t = teacher.eval()(tx).tokens  # after the teacher's final norm: [class token, patches in raster order]
        target = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-6)

        head = method.heads["feature"]
        d = (student_rows @ head.weight.T + head.bias - target).abs()
        per_row = torch.where(d < 2.0, 0.5 * d ** 2 / 2.0, d - 1.0).mean(-1)  # [B, 1 + N]
        w = torch.ones(per_row.shape[1])
        w[0] = cls_weight
        want = (per_row * w).sum(1).mean() / w.sum()
    assert enc.meta["feature"] == "cls" and cls_atom.token == "cls"
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["batch", "batch_std"])
def test_target_center_defaults_to_the_paper_and_batch_centers_the_whitened_targets(teacher_paths, tmp_path, mode):
    """method.target_center: none (config.yaml's default) = the paper's whitened targets; batch subtracts each channel's mean over the batch's images and
    rows from the whitened T_c targets before the smooth-L1, batch_std also divides by the
    channel's std over them."""
    from hybrid_distill.loss import feature_distance, whiten

    assert build_method(smoke_cfg(teacher_paths, tmp_path), total_steps=10).target_center == "none"
    cfg = smoke_cfg(teacher_paths, tmp_path, "method=distill", "method.tc=clip", f"method.target_center={mode}")
    method = build_method(cfg, total_steps=10)
    assert method.target_center == mode
    method.eval()
    images = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        loss = method.training_step({"images": images}, 0)["loss"]
        targets, keep = method.teacher_targets(images, None)
        t = whiten(targets["clip"].final)
        t = t - t.mean(dim=(0, 1), keepdim=True)
        if mode == "batch_std":
            t = t / torch.sqrt(t.square().mean(dim=(0, 1), keepdim=True) + 1e-6)
        out, _ = method._student_forward(images, keep)
        pred = method.heads["feature"](out.hidden[method.student.depth])
        want = feature_distance(pred, t, 2.0, 1.0)
    torch.testing.assert_close(loss, want)
    with pytest.raises(ValueError, match="target_center='nope'"):
        build_method(smoke_cfg(teacher_paths, tmp_path, "method.target_center=nope"), total_steps=10)
