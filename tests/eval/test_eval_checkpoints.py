"""Official checkpoint key maps: random state dicts written in each released layout by hand,
converted, and compared with a model built in the original (timm) layout."""
from functools import partial

import pytest
import torch
import torch.nn as nn
from timm.layers import LayerNorm
from timm.models.vision_transformer import VisionTransformer, _convert_openai_clip

from common.checkpoint import load_encoder
from common.vit import ViT
from eval.checkpoints import KEY_MAPS, key_map, load_official, main as convert_main

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)


def timm_model(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(SMALL, num_classes=0)
    args.update(kw)
    model = VisionTransformer(**args).eval()
    with torch.no_grad():  # timm inits class tokens ~1e-6; make every tensor matter
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def prefixed(sd, prefix):
    return {prefix + k: v.clone() for k, v in sd.items()}


def rand_like_entries(names):
    return {n: torch.randn(3, 4) for n in names}


def official_dino(seed=0):
    teacher, student = timm_model(seed), timm_model(seed + 1)
    ckpt = {"teacher": {**prefixed(teacher.state_dict(), "backbone."), **rand_like_entries(["head.mlp.0.weight", "head.last_layer.weight_g"])},
            "student": {**prefixed(student.state_dict(), "module.backbone."), **rand_like_entries(["module.head.mlp.0.weight"])},
            "epoch": 7, "args": None}
    return ckpt, teacher, student


def check_same_output(ours: ViT, reference: nn.Module):
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ours(x).tokens, reference.forward_features(x), atol=1e-5)


def test_dino_teacher_student_and_bare_backbone():
    ckpt, teacher, student = official_dino()
    vit, arch = load_official("dino", ckpt, num_heads=2)
    assert arch["embed_dim"] == 32 and arch["depth"] == 2 and arch["patch_size"] == 4 and arch["img_size"] == 16
    check_same_output(vit, teacher)
    check_same_output(load_official("dino", ckpt, which="student", num_heads=2)[0], student)
    check_same_output(load_official("dino", teacher.state_dict(), num_heads=2)[0], teacher)  # released backbone file


def test_mocov3_base_encoder_without_projector():
    base, momentum = timm_model(0), timm_model(1)
    ckpt = {"state_dict": {**prefixed(base.state_dict(), "module.base_encoder."),
                           **rand_like_entries(["module.base_encoder.head.0.weight", "module.predictor.0.weight"]),
                           **prefixed(momentum.state_dict(), "module.momentum_encoder.")}, "epoch": 300}
    vit, arch = load_official("mocov3", ckpt, num_heads=2)
    assert arch["pos_embed"] == "sincos"
    check_same_output(vit, base)
    assert not vit.pos_embed.requires_grad  # fixed sin-cos table, loaded values kept
    km = key_map("mocov3")
    check_same_output(load_official("mocov3", ckpt, num_heads=2)[0], base)
    sd = km.to_vit(ckpt, prefix="module.momentum_encoder.")
    assert torch.equal(sd["blocks.1.mlp.fc2.weight"], momentum.state_dict()["blocks.1.mlp.fc2.weight"])


def test_mae_pretrain_checkpoint_drops_decoder():
    enc = timm_model(0)
    ckpt = {"model": {**enc.state_dict(), "mask_token": torch.randn(1, 1, 16),
                      **rand_like_entries(["decoder_embed.weight", "decoder_blocks.0.norm1.weight", "decoder_pred.bias"])}}
    check_same_output(load_official("mae", ckpt, num_heads=2)[0], enc)


def test_deit_classifier_and_distilled_error():
    model = timm_model(0, num_classes=10)
    check_same_output(load_official("deit", {"model": model.state_dict()}, num_heads=2)[0], model)
    distilled = {"model": {**model.state_dict(), "dist_token": torch.zeros(1, 1, 32), "head_dist.weight": torch.zeros(10, 32)}}
    with pytest.raises(ValueError, match="distillation token"):
        load_official("deit", distilled, num_heads=2)


def test_ijepa_target_encoder_with_module_prefix():
    target = timm_model(0, class_token=False, global_pool="avg", fc_norm=False)
    context = timm_model(1, class_token=False, global_pool="avg", fc_norm=False)
    ckpt = {"encoder": prefixed(context.state_dict(), "module."), "target_encoder": prefixed(target.state_dict(), "module."),
            "predictor": rand_like_entries(["module.predictor_embed.weight"]), "epoch": 1}
    vit, arch = load_official("ijepa", ckpt, num_heads=2)
    assert arch["num_class_tokens"] == 0 and vit.num_prefix_tokens == 0
    check_same_output(vit, target)
    check_same_output(load_official("ijepa", ckpt, which="encoder", num_heads=2)[0], context)


def openai_clip_layout(model: VisionTransformer) -> dict:
    """OpenAI CLIP's visual keys, written from the CLIP repository's module names."""
    sd, out = model.state_dict(), {}
    out["conv1.weight"] = sd["patch_embed.proj.weight"]
    out["class_embedding"] = sd["cls_token"].reshape(-1)
    out["positional_embedding"] = sd["pos_embed"][0]
    for p in ("weight", "bias"):
        out[f"ln_pre.{p}"] = sd[f"norm_pre.{p}"]
        out[f"ln_post.{p}"] = sd[f"norm.{p}"]
        for i in range(SMALL["depth"]):
            b, r = f"blocks.{i}.", f"transformer.resblocks.{i}."
            out[f"{r}ln_1.{p}"] = sd[f"{b}norm1.{p}"]
            out[f"{r}attn.in_proj_{p}"] = sd[f"{b}attn.qkv.{p}"]
            out[f"{r}attn.out_proj.{p}"] = sd[f"{b}attn.proj.{p}"]
            out[f"{r}ln_2.{p}"] = sd[f"{b}norm2.{p}"]
            out[f"{r}mlp.c_fc.{p}"] = sd[f"{b}mlp.fc1.{p}"]
            out[f"{r}mlp.c_proj.{p}"] = sd[f"{b}mlp.fc2.{p}"]
    out["proj"] = torch.randn(32, 16)
    return {"visual." + k: v for k, v in out.items()} | {"token_embedding.weight": torch.randn(10, 16)}


def test_clip_map_agrees_with_timm_converter_and_output():
    ref = timm_model(0, pre_norm=True, norm_layer=partial(LayerNorm, eps=1e-5), act_layer="quick_gelu")
    official = openai_clip_layout(ref)
    ours = key_map("clip").to_vit(official)
    via_timm = {k: v for k, v in _convert_openai_clip(official, ref).items() if not k.startswith("head.")}
    assert ours.keys() == via_timm.keys()
    assert all(torch.equal(ours[k], via_timm[k]) for k in ours)
    vit, arch = load_official("clip", official, num_heads=2)
    assert arch["pre_norm"] and arch["act_layer"] == "quick_gelu"
    check_same_output(vit, ref)


def test_udi_two_class_tokens_in_one_tensor():
    torch.manual_seed(0)
    src = ViT(**SMALL, num_class_tokens=2)
    sd = src.state_dict()
    assert sd["cls_token"].shape == (1, 2, 32) and sd["pos_embed"].shape == (1, 2 + 16, 32)
    ckpt = {"teacher": {**prefixed(sd, "backbone."), **rand_like_entries(["head.last_layer.weight"])}}
    vit, arch = load_official("udi", ckpt, num_heads=2)
    assert arch["num_class_tokens"] == 2
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(vit(x).tokens, src(x).tokens)


def random_official(fmt: str) -> dict:
    if fmt == "udi":
        torch.manual_seed(0)
        return {"teacher": prefixed(ViT(**SMALL, num_class_tokens=2).state_dict(), "backbone.")}
    if fmt == "clip":
        ref = timm_model(0, pre_norm=True, norm_layer=partial(LayerNorm, eps=1e-5), act_layer="quick_gelu")
        return {k: v for k, v in openai_clip_layout(ref).items() if k.startswith("visual.") and k != "visual.proj"}
    if fmt == "ijepa":
        return {"target_encoder": prefixed(timm_model(0, class_token=False, global_pool="avg", fc_norm=False).state_dict(), "module.")}
    sd = timm_model(0).state_dict()
    return {"dino": {"teacher": prefixed(sd, "backbone.")}, "mocov3": {"state_dict": prefixed(sd, "module.base_encoder.")},
            "mae": {"model": sd}, "deit": {"model": sd}}[fmt]


@pytest.mark.parametrize("fmt", sorted(KEY_MAPS))
def test_every_key_map_round_trips(fmt):
    km = key_map(fmt)
    official = random_official(fmt)
    ours = km.to_vit(official)
    back = km.to_official(ours)
    flat = lambda d: d if km.containers[0] == "" else d[km.containers[0]]  # noqa: E731
    assert flat(back).keys() == flat(official).keys()
    assert all(torch.equal(flat(back)[k], flat(official)[k]) for k in flat(official))
    again = km.to_vit(back)
    assert all(torch.equal(again[k], ours[k]) for k in ours)


def test_bad_checkpoints_fail_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown checkpoint format 'swav'; known: clip, deit, dino"):
        key_map("swav")
    with pytest.raises(ValueError, match="no encoder state dict.*--which"):
        load_official("ijepa", {"optimizer": {}, "epoch": 3}, num_heads=2)
    with pytest.raises(ValueError, match="no key starts with"):
        load_official("mocov3", {"state_dict": {"encoder.blocks.0.norm1.weight": torch.zeros(3)}}, num_heads=2)


def test_convert_cli_writes_a_loadable_encoder(tmp_path):
    ckpt, teacher, _ = official_dino()
    torch.save(ckpt, tmp_path / "dino_full.pth")
    convert_main(["dino", str(tmp_path / "dino_full.pth"), str(tmp_path / "enc" / "encoder.pt"), "--num-heads", "2"])
    vit, meta, sha = load_encoder(tmp_path / "enc" / "encoder.pt")
    assert meta["method"] == "official-dino" and meta["feature"] == "cls" and meta["step"] == 7
    assert (tmp_path / "enc" / "encoder.pt.sha256").read_text().startswith(sha)
    check_same_output(vit, teacher)
