"""Random-init floors start from the init of the run they are the floor for, and say which."""
from __future__ import annotations

import json
import math

import pytest
import torch

from common.checkpoint import export_encoder, load_encoder
from common.config import load_config
from common.vit import ViT
from eval.encoders import floor_label, load
from eval.tables import Column, Table, make_floors, markdown, table_floors

ARCH = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=64, depth=4, num_heads=2,
            num_class_tokens=0, global_pool="avg", pos_embed="sincos")


def write_arch(tmp_path, name, **extra):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**ARCH, **extra}))
    return path


def test_floors_of_two_inits_differ_as_their_init_functions_prescribe(tmp_path):
    timm = load(f"random:{write_arch(tmp_path, 'timm')}", "fashion_mnist")
    ijepa = load(f"random:{write_arch(tmp_path, 'ijepa', weight_init='ijepa')}", "fashion_mnist")
    fan_in = 1 * 4 * 4
    # timm leaves the patch projection at PyTorch's conv default, kaiming-uniform(a=sqrt 5):
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in); I-JEPA draws trunc-normal 0.02
    assert timm.model.patch_embed.proj.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.15)
    assert ijepa.model.patch_embed.proj.weight.std().item() == pytest.approx(0.02, rel=0.15)
    for i, (a, b) in enumerate(zip(timm.model.blocks, ijepa.model.blocks), start=1):
        assert a.mlp.fc2.weight.std().item() == pytest.approx(0.02, rel=0.1)  # timm: trunc-normal 0.02
        assert b.mlp.fc2.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.1)  # / sqrt(2 i)
    # labelled with their init, and cached apart
    assert (timm.meta["init"], ijepa.meta["init"]) == ("timm", "ijepa")
    assert timm.meta["run"].startswith("random-timm-") and ijepa.meta["run"].startswith("random-ijepa-")
    assert timm.sha256 != ijepa.sha256
    assert floor_label("random", "ijepa") == "random init (ijepa init)"
    floors = make_floors(tmp_path / "floors", [("mae", timm.arch, {}), ("ijepa", ijepa.arch, {})])
    text = markdown(Table("t", [Column("k-NN", "knn")], []), floors)
    assert "| floor: random init (timm init) for mae |" in text and "| floor: random init (ijepa init) for ijepa |" in text


@pytest.mark.parametrize("tokens, pool, feature", [(0, "avg", "avgpool"), (1, "avg", "avgpool"), (1, "token", "cls"),
                                                   (2, "token", "cls"), (1, "", "avgpool")])
def test_a_random_arch_is_read_at_the_feature_its_global_pool_implies(tmp_path, tokens, pool, feature):
    """As trained encoders are exported: a Hybrid Distill student (class token, mean pooling) is
    read at its patch mean, so its floor must be too."""
    floor = load(f"random:{write_arch(tmp_path, 'a', num_class_tokens=tokens, global_pool=pool)}", "fashion_mnist")
    assert floor.meta["feature"] == feature and floor.model.num_class_tokens == tokens


@pytest.mark.parametrize("init, weight_init", [("ijepa", "ijepa"), ("timm", "")])
def test_bootleg_encoder_carries_its_init_to_its_floor(tmp_path, init, weight_init):
    from bootleg.model import build_method

    cfg = load_config("bootleg", ["scale=smoke", f"method.init={init}", "experiment=none"])
    torch.manual_seed(0)
    student = build_method(cfg, total_steps=4).student
    assert student.arch["weight_init"] == weight_init
    path = tmp_path / "encoder.pt"
    export_encoder(student, path, {"feature": "avgpool", "img_size": 28, "in_chans": 1, "mean": [0.5], "std": [0.5]})
    floor = load(f"random:{path}", "fashion_mnist")
    assert floor.meta["init"] == (init if weight_init else "timm")
    assert floor.model.arch == load_encoder(path)[0].arch
    # the floor's patch projection has the spread of its init, not of the other one
    std = floor.model.patch_embed.proj.weight.std().item()
    assert (std < 0.05) == (init == "ijepa")


def test_ijepa_weight_init_equals_timm_init_then_ijepa_init():
    """The same random draws as building with timm's init and re-initialising (the old path)."""
    from common.vit import ijepa_init

    torch.manual_seed(0)
    old = ViT(**ARCH)
    ijepa_init(old, old.blocks)
    torch.manual_seed(0)
    new = ViT(**ARCH, weight_init="ijepa")
    assert all(torch.equal(old.state_dict()[k], new.state_dict()[k]) for k in old.state_dict())


def test_bootleg_table_has_one_floor_per_init_built_from_the_run_configs(tmp_path):
    from common.launch import plan_runs
    from eval.encoders import random_spec

    floors = table_floors(plan_runs("bootleg", ["scale=smoke", f"results_root={tmp_path}"]))
    assert [f.label for f in floors] == ["raw pixels", "random init (ijepa init) for bootleg, ijepa",
                                         "random init (timm init) for mae"]
    assert [f.out_dir for f in floors] == [tmp_path / "bootleg/floors-compare-smoke" / name
                                           for name in ("pixels", "random-init-ijepa", "random-init-timm")]
    for floor in floors[1:]:
        loaded = load(random_spec(floor.arch, floor.out_dir), "fashion_mnist")
        assert floor.out_dir.name == f"random-init-{loaded.meta['init']}"
        assert (loaded.model.patch_embed.proj.weight.std().item() < 0.05) == (loaded.meta["init"] == "ijepa")


def test_rescaled_ijepa_patch_embedding_keeps_the_reference_output_scale(tmp_path):
    """patch_embed_ref_fan_in=768: a 4x4 grey patch (fan-in 16) gets std 0.02 * sqrt(768 / 16),
    so its embedding has the scale a 16x16 RGB patch has under std 0.02; nothing else moves."""
    plain = ViT(**ARCH, weight_init="ijepa")
    floor = load(f"random:{write_arch(tmp_path, 'fan', weight_init='ijepa', patch_embed_ref_fan_in=768)}",
                 "fashion_mnist")
    scaled = floor.model
    assert scaled.patch_embed.proj.weight.std().item() == pytest.approx(0.02 * math.sqrt(768 / 16), rel=0.15)
    assert plain.patch_embed.proj.weight.std().item() == pytest.approx(0.02, rel=0.15)
    for a, b in zip(plain.blocks, scaled.blocks):
        assert b.attn.qkv.weight.std().item() == pytest.approx(a.attn.qkv.weight.std().item(), rel=0.05)
    pixels = torch.randn(512, 16)  # unit-variance patches: the embedding's output std is std * sqrt(fan_in)
    out = pixels @ scaled.patch_embed.proj.weight.flatten(1).T
    assert out.std().item() == pytest.approx(0.02 * math.sqrt(768), rel=0.15)
    assert floor.meta["init"] == "ijepa-fan768"  # its floor row is labelled apart from plain I-JEPA's


def test_patch_embedding_rescale_needs_the_ijepa_init():
    with pytest.raises(ValueError, match="patch_embed_ref_fan_in=768 rescales I-JEPA's init only"):
        ViT(**ARCH, patch_embed_ref_fan_in=768)
