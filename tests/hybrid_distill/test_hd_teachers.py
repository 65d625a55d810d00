"""Teachers by timm name from local files (random weights, never a download)."""

import pytest
import torch
from safetensors.torch import save_file

import timm
from hybrid_distill.teachers import Capture, load_teacher, load_timm_teacher

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 32}
CLIP = "vit_base_patch16_clip_quickgelu_224.openai"
MAE = "vit_base_patch16_224.mae"


def save_random(name, path, fmt):
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=0, **TINY)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(path))
    else:  # official MAE checkpoints wrap the weights in {"model": ...}
        torch.save({"model": state}, path)
    return state


@pytest.mark.parametrize("name,fmt", [(CLIP, "safetensors"), (MAE, "pth")])
def test_timm_teacher_round_trips_from_a_local_file(tmp_path, name, fmt):
    path = tmp_path / f"{name}.{fmt}"
    state = save_random(name, path, fmt)
    teacher = load_timm_teacher(name, weights_dir=str(tmp_path), **TINY)  # default path from the name
    loaded = teacher.net.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert teacher.source == str(path) and len(teacher.sha256) == 64
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.train().training


def test_clip_normalisation_differs_from_imagenet_and_is_applied(tmp_path):
    save_random(CLIP, tmp_path / f"{CLIP}.safetensors", "safetensors")
    save_random(MAE, tmp_path / f"{MAE}.safetensors", "safetensors")
    clip = load_timm_teacher(CLIP, weights_dir=str(tmp_path), **TINY)
    mae = load_timm_teacher(MAE, weights_dir=str(tmp_path), **TINY)
    assert clip.mean.flatten().tolist() == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert clip.std.flatten().tolist() == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert mae.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    images = torch.rand(2, 3, 32, 32)
    want = (images - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / \
        torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    torch.testing.assert_close(clip.prepare_input(images), want)
    # ... and the forward uses it: same as timm's own forward on the normalised input
    out = clip(images, Capture(final=True))
    torch.testing.assert_close(out.final, clip.net.forward_features(want), rtol=1e-4, atol=1e-5)


def test_grid_alignment_resizes_the_input_and_resamples_positions(tmp_path):
    # A /8 teacher at 32 px (4x4 grid) for a student with a 2x2 grid runs at 16 px.
    kwargs = dict(TINY, patch_size=8)
    torch.manual_seed(0)
    net = timm.create_model(MAE, pretrained=False, num_classes=0, **kwargs)
    save_file(net.state_dict(), str(tmp_path / "t.safetensors"))
    spec = {"kind": "timm", "name": MAE, "path": str(tmp_path / "t.safetensors"), "timm_kwargs": kwargs}
    teacher = load_teacher(spec, student_grid=(2, 2))
    assert teacher.input_size == 16 and teacher.grid_size == (2, 2)
    assert teacher(torch.rand(1, 3, 64, 64), Capture(final=True)).final.shape == (1, 1 + 4, 32)


def test_missing_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"not found at {tmp_path}/{MAE}.safetensors.*Nothing is downloaded"):
        load_timm_teacher(MAE, weights_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match="teacher kind 'hub'"):
        load_teacher({"kind": "hub", "name": MAE})


def test_pinned_sha256_mismatch_is_rejected(tmp_path):
    save_random(MAE, tmp_path / f"{MAE}.safetensors", "safetensors")
    with pytest.raises(ValueError, match="the config pins 0000"):
        load_timm_teacher(MAE, weights_dir=str(tmp_path), expected_sha256="0000", **TINY)
