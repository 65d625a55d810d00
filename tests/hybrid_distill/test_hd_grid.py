"""Token-map resampling between a teacher grid and the student grid (method.grid_align)."""

import pytest
import torch

from common.checkpoint import export_encoder
from common.config import load_config
from common.vit import ViT
from hybrid_distill.grid import resample_token_map
from hybrid_distill.masking import gather_tokens
from hybrid_distill.model import build_method


def ramp_map(grid, a, b, d, channels=3, prefix_value=7.0):
    """[1, 1 + h*w, C]: class row = prefix_value, patch (r, c) = a*r + b*c + d (raster order)."""
    h, w = grid
    r, c = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    patches = (a * r + b * c + d).reshape(1, h * w, 1).expand(1, h * w, channels)
    return torch.cat([torch.full((1, 1, channels), prefix_value, dtype=torch.float64), patches], dim=1)


def test_equal_grids_are_the_identity():
    tokens = torch.randn(2, 1 + 16, 5)
    assert resample_token_map(tokens, (4, 4), (4, 4), 1) is tokens


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("src,dst", [((16, 16), (14, 14)), ((5, 7), (4, 4)), ((14, 14), (16, 16))])
def test_constant_map_stays_constant_and_class_token_is_untouched(mode, src, dst):
    tokens = torch.full((2, 1 + src[0] * src[1], 4), 3.25, dtype=torch.float64)
    tokens[:, 0] = torch.tensor([1.0, -2.0, 0.5, 9.0], dtype=torch.float64)
    out = resample_token_map(tokens, src, dst, 1, mode)
    assert out.shape == (2, 1 + dst[0] * dst[1], 4)
    torch.testing.assert_close(out[:, 0], tokens[:, 0])
    torch.testing.assert_close(out[:, 1:], torch.full_like(out[:, 1:], 3.25))


def test_linear_ramp_is_sampled_at_the_student_patch_centres():
    # CLIP-L/14 at 224 px (16x16 tokens, 14 px patches) -> ViT-L/16 student (14x14, 16 px patches).
    # Student token j covers pixels [16j, 16j+16), centre 16(j + 0.5); teacher token i has its
    # centre at 14(i + 0.5), so the centre of student token j is at teacher coordinate
    # 16(j + 0.5)/14 - 0.5. A linear map must be exactly that linear function there.
    a, b, d = 0.75, -1.5, 2.0
    out = resample_token_map(ramp_map((16, 16), a, b, d), (16, 16), (14, 14), 1, "bilinear")
    coord = torch.tensor([16 * (j + 0.5) / 14 - 0.5 for j in range(14)], dtype=torch.float64)
    want = (a * coord[:, None] + b * coord[None, :] + d).reshape(14 * 14)
    torch.testing.assert_close(out[0, 1:, 0], want)
    torch.testing.assert_close(out[0, 0], torch.full((3,), 7.0, dtype=torch.float64))


def test_wrong_row_count_is_rejected():
    with pytest.raises(ValueError, match="15 patch rows, grid 4x4 needs 16"):
        resample_token_map(torch.randn(1, 16, 3), (4, 4), (2, 2), 1)


# ---------------------------------------------------------------- in the method
def save_encoder(path, seed, img_size, depth=3, embed_dim=48, num_heads=2):
    torch.manual_seed(seed)
    vit = ViT(img_size=img_size, patch_size=4, in_chans=1, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    meta = {"method": "random", "paper": "test", "run": path.parent.name, "config_hash": "x", "git_commit": "x",
            "step": 0, "feature": "cls", "img_size": img_size, "in_chans": 1, "mean": [0.3], "std": [0.35]}
    export_encoder(vit, path, meta)
    return str(path)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """On-grid teachers (16 px / patch 4 = 4x4, the smoke student's grid) and an off-grid one
    (20 px = 5x5)."""
    root = tmp_path_factory.mktemp("grid_teachers")
    return {"deit": save_encoder(root / "deit" / "encoder.pt", 0, 16),
            "clip": save_encoder(root / "clip" / "encoder.pt", 1, 20),
            "mae": save_encoder(root / "mae" / "encoder.pt", 2, 16)}


def method_for(teachers, tmp_path, *extra):
    cfg = load_config("hybrid_distill", ["scale=smoke", f"train.out_root={tmp_path}", "method.tc=clip",
                                          *[f"teachers.{n}.path={p}" for n, p in teachers.items()], *extra])
    return build_method(cfg, total_steps=4)


def test_teacher_map_resampled_to_student_grid_then_gathered_at_kept_rows(teachers, tmp_path):
    method = method_for(teachers, tmp_path, "method.grid_align=teacher_to_student")
    images = torch.rand(2, 1, 16, 16)
    targets, keep = method.teacher_targets(images, None)
    assert keep is not None and keep.shape == (2, 6)  # progressive masking on the 4x4 MAE grid
    clip = method.teachers["clip"]
    with torch.no_grad():  # independent path: the whole 5x5 map from timm's forward, resampled, gathered
        full = clip.net.forward_features(clip.prepare_input(images))
    want = gather_tokens(resample_token_map(full, (5, 5), (4, 4), 1), keep, 1)
    torch.testing.assert_close(targets["clip"].final, want, rtol=1e-5, atol=1e-5)
    logs = method.training_step({"images": images}, 0)
    assert torch.isfinite(logs["loss"]) and logs["kept_patches"] == 6


def test_student_map_resampled_to_teacher_grid(teachers, tmp_path):
    method = method_for(teachers, tmp_path, "method=distill", "method.grid_align=student_to_teacher",
                        "method.grid_interp=bicubic")
    logs = method.training_step({"images": torch.rand(2, 1, 16, 16)}, 0)
    logs["loss"].backward()
    assert torch.isfinite(logs["loss"]) and method.student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("extra,message", [
    ([], r"teacher token grid \(5, 5\) != student grid \(4, 4\) \(method.grid_align=resize_input\); set "
         r"method.grid_align=teacher_to_student"),
    (["method.grid_align=student_to_teacher"], "needs the student's whole token map, but method.mask.strategy=progressive"),
    (["method.grid_align=teacher_to_student", "method.tm=clip", "method.mask.teacher=mae"],
     r"relations \(token x token\) are not resampled"),
    (["method.grid_align=teacher_to_student", "method.tc=deit", "method.tm=clip", "method.mask.teacher=clip",
      "method.terms.tm_relation.kind=msa"], "method.mask.teacher='clip' has token grid"),
    (["method.grid_align=sideways"], "method.grid_align='sideways'; choose one of resize_input"),
])
def test_unusable_alignments_fail_with_the_fix(teachers, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        method_for(teachers, tmp_path, *extra)
