"""Golden and behaviour tests of common.vit (timm equivalence, token subsets, relations,
sin-cos table, class tokens, frozen projection, error messages)."""

import json
import math

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from common.vit import ViT, attention_probs, load_state_dict_checked, set_fused_attention, sincos_pos_embed_2d

SMOKE = dict(img_size=32, patch_size=4, embed_dim=64, depth=3, num_heads=4)


def smoke_vit(**overrides) -> ViT:
    torch.manual_seed(0)
    return ViT(**{**SMOKE, **overrides}).eval()


def images(batch=2, size=32, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def timm_twin(vit: ViT, **timm_kwargs) -> VisionTransformer:
    """A plain timm VisionTransformer holding the wrapper's weights."""
    a = vit.arch
    ref = VisionTransformer(
        img_size=a["img_size"], patch_size=a["patch_size"], embed_dim=a["embed_dim"], depth=a["depth"],
        num_heads=a["num_heads"], num_classes=0, **timm_kwargs,
    ).eval()
    ref.load_state_dict(vit.state_dict(), strict=True)
    return ref


# ---------------------------------------------------------------- timm equivalence
def test_all_tokens_kept_equals_timm_forward_features():
    vit = smoke_vit()
    ref = timm_twin(vit)
    x = images()
    with torch.no_grad():
        expected = ref.forward_features(x)
        out = vit(x)
    torch.testing.assert_close(out.tokens, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vit.forward_features(x), expected, rtol=1e-5, atol=1e-5)
    assert out.prefix.shape == (2, 1, 64) and out.patches.shape == (2, 64, 64)
    assert out.prefix.data_ptr() == out.tokens.data_ptr()  # a view, not a copy


def test_timm_vit_small_state_dict_loads_and_matches():
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    vit = ViT(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6).eval()
    assert set(vit.state_dict()) == {k for k in ref.state_dict() if not k.startswith("head.")}
    assert not torch.equal(vit.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)  # the load matters
    load_state_dict_checked(vit, ref.state_dict(), ignore_prefixes=("head.",))
    x = images(batch=1, size=224)
    with torch.no_grad():
        torch.testing.assert_close(vit(x).tokens, ref.forward_features(x), rtol=1e-5, atol=1e-5)


def test_seeded_init_equals_timm_init():
    torch.manual_seed(3)
    ref = VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=3, num_heads=4, num_classes=0)
    torch.manual_seed(3)
    vit = ViT(**SMOKE)
    for (name, a), (_, b) in zip(ref.state_dict().items(), vit.state_dict().items()):
        assert torch.equal(a, b), name


def test_clip_style_tower_loads_and_matches():
    from functools import partial

    from timm.layers import LayerNorm

    torch.manual_seed(0)
    # built the way timm builds vit_base_patch16_clip_quickgelu_224, at smoke size, with
    # the 768->512 style projection as `head`
    ref = VisionTransformer(
        img_size=32, patch_size=4, embed_dim=64, depth=3, num_heads=4, num_classes=16, pre_norm=True,
        norm_layer=partial(LayerNorm, eps=1e-5), act_layer="quick_gelu",
    ).eval()
    vit = ViT(**SMOKE, pre_norm=True, norm_eps=1e-5, act_layer="quick_gelu").eval()
    load_state_dict_checked(vit, ref.state_dict(), ignore_prefixes=("head.",))
    assert vit.norm_pre.eps == 1e-5 and type(vit.blocks[0].mlp.act).__name__ == "QuickGELU"
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(vit(x).tokens, ref.forward_features(x), rtol=1e-5, atol=1e-5)


def test_dynamic_img_size_matches_timm_interpolation():
    vit = smoke_vit(dynamic_img_size=True)
    ref = timm_twin(vit, dynamic_img_size=True)
    x = images(size=16)
    with torch.no_grad():
        out = vit(x)
        torch.testing.assert_close(out.tokens, ref.forward_features(x), rtol=1e-5, atol=1e-5)
    assert out.patches.shape[1] == 16


# ---------------------------------------------------------------- token subset
def test_subset_forward_equals_blocks_on_gathered_tokens():
    vit = smoke_vit(num_class_tokens=2, reg_tokens=1)
    x = images()
    keep = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(s))[:10] for s in range(2)])
    with torch.no_grad():
        out = vit(x, keep=keep)
        # Reference written from the ViT recipe: embed patches, add each token's position
        # embedding, pick the kept patches per sample, then blocks and final norm.
        P = 3
        patches = vit.patch_embed.proj(x).flatten(2).transpose(1, 2) + vit.pos_embed[:, P:]
        prefix = torch.cat([vit.cls_token, vit.reg_token], dim=1) + vit.pos_embed[:, :P]
        kept = torch.stack([patches[b, keep[b]] for b in range(2)])
        h = torch.cat([prefix.expand(2, -1, -1), kept], dim=1)
        for block in vit.blocks:
            h = block(h)
        expected = vit.norm(h)
    assert out.tokens.shape == (2, P + 10, 64)
    torch.testing.assert_close(out.tokens, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        everything = torch.arange(64).expand(2, -1)
        torch.testing.assert_close(vit(x, keep=everything).tokens, vit(x).tokens)


# ---------------------------------------------------------------- hidden states
def test_hidden_states_are_residual_stream_after_block_i():
    vit = smoke_vit()
    x = images()
    with torch.no_grad():
        raw = vit(x, layers=[0, 1, 2, 3], norm_layers=False)
        normed = vit(x, layers=[1, 3])
        h = vit.embed(x)
        torch.testing.assert_close(raw.hidden[0], h)
        for i, block in enumerate(vit.blocks, start=1):
            h = block(h)
            torch.testing.assert_close(raw.hidden[i], h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normed.hidden[1], vit.norm(raw.hidden[1]))
    torch.testing.assert_close(normed.hidden[3], normed.tokens)
    assert set(normed.hidden) == {1, 3}
    # per-layer class tokens are the first token of each hidden state
    assert normed.hidden[1][:, 0].shape == (2, 64)


# ---------------------------------------------------------------- relations
def test_relations_equal_qk_from_qkv_weights_and_carry_gradient():
    vit = smoke_vit()
    x = images()
    out = vit(x, layers=[1], norm_layers=False, relations=[2])
    block = vit.blocks[1]
    with torch.no_grad():
        h = block.norm1(out.hidden[1])
        D, H = 64, 4
        d = D // H
        W, b = block.attn.qkv.weight, block.attn.qkv.bias
        q = (h @ W[:D].T + b[:D]).reshape(2, -1, H, d).transpose(1, 2)
        k = (h @ W[D : 2 * D].T + b[D : 2 * D]).reshape(2, -1, H, d).transpose(1, 2)
        expected = q @ k.transpose(-1, -2) / math.sqrt(d)
    assert set(out.relations) == {2}
    assert out.relations[2].shape == (2, H, 65, 65)
    torch.testing.assert_close(out.relations[2], expected, rtol=1e-4, atol=1e-5)

    out.relations[2].square().mean().backward()
    assert block.attn.qkv.weight.grad.abs().sum() > 0
    assert vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # flows into earlier blocks


def test_relation_path_output_equals_fused_path_and_only_requested_blocks_materialise(monkeypatch):
    vit = smoke_vit()
    x = images()
    called = []
    for i, block in enumerate(vit.blocks, start=1):
        assert block.attn.fused_attn
        original = block.attn.forward_with_relations
        monkeypatch.setattr(
            block.attn, "forward_with_relations", lambda h, i=i, f=original: (called.append(i), f(h))[1]
        )
    with torch.no_grad():
        plain = vit(x).tokens
        with_rel = vit(x, relations=[1, 3]).tokens
    assert called == [1, 3]
    torch.testing.assert_close(with_rel, plain, rtol=1e-5, atol=1e-5)


def test_attention_probs_are_softmax_of_relations():
    vit = smoke_vit()
    x = images()
    probs = attention_probs(vit, x, layers=[3])
    rel = vit(x, relations=[3]).relations[3]
    torch.testing.assert_close(probs[3], rel.softmax(-1))
    torch.testing.assert_close(probs[3].sum(-1), torch.ones(2, 4, 65))
    assert not probs[3].requires_grad


# ---------------------------------------------------------------- position embedding
def test_sincos_table_matches_formula():
    D, gh, gw = 16, 3, 5  # non-square grid catches a row/column swap
    table = sincos_pos_embed_2d(D, (gh, gw))
    q = D // 4
    for r in range(gh):
        for c in range(gw):
            for j in range(q):
                w = 1.0 / 10000 ** (j / q)
                row = table[r * gw + c]
                assert row[j].item() == pytest.approx(math.sin(c * w), abs=1e-6)
                assert row[q + j].item() == pytest.approx(math.cos(c * w), abs=1e-6)
                assert row[2 * q + j].item() == pytest.approx(math.sin(r * w), abs=1e-6)
                assert row[3 * q + j].item() == pytest.approx(math.cos(r * w), abs=1e-6)


def test_sincos_model_table_is_fixed():
    vit = smoke_vit(pos_embed="sincos")
    assert not vit.pos_embed.requires_grad
    torch.testing.assert_close(vit.pos_embed[0, 1:], sincos_pos_embed_2d(64, (8, 8)))
    assert vit.pos_embed[0, 0].abs().sum() == 0  # class slot is zero (MAE, MoCo v3)
    vit.init_weights()  # re-initialising keeps the table fixed
    assert not vit.pos_embed.requires_grad
    torch.testing.assert_close(vit.pos_embed[0, 1:], sincos_pos_embed_2d(64, (8, 8)))
    vit.train()
    vit(images()).tokens.sum().backward()
    assert vit.pos_embed.grad is None


def test_two_class_tokens_have_distinct_position_embeddings():
    vit = smoke_vit(num_class_tokens=2)
    assert vit.cls_token.shape == (1, 2, 64)
    assert vit.pos_embed.shape == (1, 2 + 64, 64)
    assert not torch.allclose(vit.pos_embed[0, 0], vit.pos_embed[0, 1])
    with torch.no_grad():
        out = vit(images())
    assert out.num_prefix_tokens == 2 and out.class_tokens.shape == (2, 2, 64)
    assert not torch.allclose(out.class_tokens[:, 0], out.class_tokens[:, 1])


def test_multi_crop_resizes_only_the_patch_part_of_the_table():
    from timm.layers import resample_abs_pos_embed

    vit = smoke_vit(num_class_tokens=2, reg_tokens=1, dynamic_img_size=True)
    x = images(size=16)
    with torch.no_grad():
        out = vit(x, layers=[0], norm_layers=False)
        patch_table = resample_abs_pos_embed(vit.pos_embed[:, 3:], (4, 4), (8, 8), num_prefix_tokens=0)
        prefix = torch.cat([vit.cls_token, vit.reg_token], dim=1) + vit.pos_embed[:, :3]
        patches = vit.patch_embed.proj(x).flatten(2).transpose(1, 2) + patch_table
    torch.testing.assert_close(out.hidden[0], torch.cat([prefix.expand(2, -1, -1), patches], dim=1))


def test_multi_crop_without_antialias_is_plain_bicubic():
    import torch.nn.functional as F

    vit = smoke_vit(dynamic_img_size=True, pos_interp_antialias=False)
    x = images(size=16)
    with torch.no_grad():
        out = vit(x, layers=[0], norm_layers=False)
        grid = vit.pos_embed[0, 1:].reshape(1, 8, 8, 64).permute(0, 3, 1, 2)
        table = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
        table = table.permute(0, 2, 3, 1).reshape(16, 64)
    patches = out.hidden[0][:, 1:] - vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(patches, table.expand(2, -1, -1), rtol=1e-5, atol=1e-5)


def test_registers_count_as_prefix_tokens():
    vit = smoke_vit(num_class_tokens=0, reg_tokens=2, global_pool="avg")
    out = vit(images(), keep=torch.zeros(2, 3, dtype=torch.long))
    assert vit.num_prefix_tokens == 2 and out.tokens.shape == (2, 5, 64)
    assert out.class_tokens.shape == (2, 0, 64)


# ---------------------------------------------------------------- frozen projection
def test_frozen_patch_projection_gets_no_gradient():
    vit = smoke_vit(freeze_patch_embed=True, pos_embed="sincos").train()
    proj = vit.patch_embed.proj
    bound = math.sqrt(6.0 / (3 * 4 * 4 + 64))  # MoCo v3: xavier over fan_in + fan_out
    assert proj.weight.abs().max() <= bound and proj.weight.abs().max() > 0.9 * bound
    assert proj.bias.abs().sum() == 0
    vit(images()).tokens.sum().backward()
    assert proj.weight.grad is None and proj.bias.grad is None
    assert vit.blocks[0].attn.qkv.weight.grad is not None
    vit.init_weights()  # re-initialising draws a new random projection, still frozen
    assert not proj.weight.requires_grad and not proj.bias.requires_grad


# ---------------------------------------------------------------- switches
def test_grad_checkpointing_gives_same_values_and_gradients():
    x = images()
    grads = []
    for ckpt in (False, True):
        vit = smoke_vit(grad_checkpointing=ckpt).train()
        out = vit(x, relations=[2], layers=[1])
        (out.tokens.sum() + out.relations[2].mean() + out.hidden[1].mean()).backward()
        grads.append((out.tokens.detach(), vit.blocks[0].attn.qkv.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_drop_path_is_active_in_train_mode_only():
    vit = smoke_vit(drop_path_rate=0.5)
    x = images(batch=8)
    with torch.no_grad():
        assert torch.equal(vit(x).tokens, vit(x).tokens)
        vit.train()
        torch.manual_seed(0)
        a = vit(x).tokens
        torch.manual_seed(1)
        assert not torch.allclose(a, vit(x).tokens)


def test_unfused_attention_gives_the_same_tokens():
    fused = smoke_vit()
    unfused = smoke_vit(fused_attn=False)
    unfused.load_state_dict(fused.state_dict())
    assert not any(b.attn.fused_attn for b in unfused.blocks)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(unfused(x).tokens, fused(x).tokens, rtol=1e-5, atol=1e-5)


def test_avg_pool_keeps_the_final_norm_as_norm():
    vit = smoke_vit(num_class_tokens=0, global_pool="avg")
    keys = set(vit.state_dict())
    assert "norm.weight" in keys and not any(k.startswith("fc_norm.") for k in keys)
    out = vit(images())
    torch.testing.assert_close(out.tokens.mean(-1), torch.zeros(2, 64), atol=1e-5, rtol=0)  # LayerNorm at init


def test_arch_is_json_and_rebuilds_the_model():
    vit = smoke_vit(num_class_tokens=2, reg_tokens=1, pos_embed="sincos", freeze_patch_embed=True)
    arch = json.loads(json.dumps(vit.arch))
    rebuilt = ViT(**arch).eval()
    load_state_dict_checked(rebuilt, vit.state_dict())
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x).tokens, vit(x).tokens)
    assert rebuilt.arch == vit.arch
    assert (vit.embed_dim, vit.depth, vit.num_heads, vit.patch_size, vit.grid_size) == (64, 3, 4, 4, (8, 8))
    assert (vit.num_prefix_tokens, vit.num_class_tokens) == (3, 2)


# ---------------------------------------------------------------- errors
def test_image_size_not_divisible_by_patch_size():
    vit = smoke_vit(dynamic_img_size=True)
    with pytest.raises(ValueError, match=r"30x30 is not divisible by patch size 4"):
        vit(torch.zeros(1, 3, 30, 30))
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        ViT(**{**SMOKE, "img_size": 30})


def test_other_image_size_needs_dynamic_img_size():
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        smoke_vit()(torch.zeros(1, 3, 16, 16))


def test_keep_index_out_of_range():
    vit = smoke_vit()
    with pytest.raises(ValueError, match=r"keep indices must lie in 0\.\.63.*max 64"):
        vit(images(), keep=torch.tensor([[0, 64], [1, 2]]))
    with pytest.raises(ValueError, match=r"keep indices must lie in 0\.\.63.*min -1"):
        vit(images(), keep=torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(ValueError, match=r"\[B=2, n\]"):
        vit(images(), keep=torch.tensor([0, 1]))


def test_masked_forward_traces_without_graph_breaks():
    # the eager range check reads the indices on the host; under torch.compile it must not split
    # the masked encoder into several graphs (it did: 4 breaks per forward)
    vit = smoke_vit()
    keep = torch.stack([torch.randperm(64)[:10] for _ in range(2)])
    explained = torch._dynamo.explain(lambda x, k: vit(x, keep=k).tokens)(images(), keep)
    assert explained.graph_break_count == 0, [b.reason.splitlines()[0] for b in explained.break_reasons]


def test_relation_and_hidden_layers_that_do_not_exist():
    vit = smoke_vit()
    with pytest.raises(ValueError, match=r"relation layer 4 does not exist: allowed 1\.\.3"):
        vit(images(), relations=[4])
    with pytest.raises(ValueError, match=r"relation layer 0 does not exist: allowed 1\.\.3"):
        vit(images(), relations=[0])
    with pytest.raises(ValueError, match=r"hidden layer -1 does not exist: allowed 0\.\.3"):
        vit(images(), layers=[-1])
    with pytest.raises(TypeError, match="must be a list of block numbers"):
        vit(images(), layers=3)


def test_state_dict_of_other_architecture_lists_problems():
    vit = smoke_vit()
    other = smoke_vit(embed_dim=32, depth=2).state_dict()
    other["decoder.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_state_dict_checked(vit, other)
    msg = str(err.value)
    assert "missing (" in msg and "blocks.2.norm1.weight" in msg
    assert "unexpected (1): decoder.weight" in msg
    assert "mis-shaped" in msg and "cls_token: checkpoint (1, 1, 32) vs model (1, 1, 64)" in msg


def test_classifier_checkpoint_hint_and_ignore_prefixes():
    vit = smoke_vit()
    sd = dict(vit.state_dict(), **{"head.weight": torch.zeros(10, 64), "head.bias": torch.zeros(10)})
    with pytest.raises(ValueError, match=r"ignore_prefixes=\('head\.',\)"):
        load_state_dict_checked(vit, sd)
    load_state_dict_checked(vit, sd, ignore_prefixes=("head.",))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_class_tokens must be 0, 1 or 2"):
        ViT(**SMOKE, num_class_tokens=3)
    with pytest.raises(ValueError, match="global_pool='avg'"):
        ViT(**SMOKE, num_class_tokens=0)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        ViT(**SMOKE, pos_embed="rope")
    with pytest.raises(ValueError, match="weight_init must be one of"):
        ViT(**SMOKE, weight_init="xavier")


def test_take_tokens_picks_positions_along_the_token_dimension():
    from common.vit import take_tokens
    x = torch.randn(2, 3, 5, 4)  # [M, B, N, D]
    index = torch.randint(0, 5, (2, 3, 6))  # repeats allowed
    picked = take_tokens(x, index)
    assert picked.shape == (2, 3, 6, 4)
    for m in range(2):
        for b in range(3):
            assert torch.equal(picked[m, b], x[m, b][index[m, b]])
    assert torch.equal(take_tokens(x[0], index[0, :, :2]), torch.stack([x[0, b][index[0, b, :2]] for b in range(3)]))


def test_explicit_attention_computes_what_fused_attention_computes():
    vit = smoke_vit()
    x = images()
    with torch.no_grad():
        fused = vit(x).tokens
        assert set_fused_attention(vit, False) == SMOKE["depth"]
        assert not any(block.attn.fused_attn for block in vit.blocks)
        explicit = vit(x).tokens
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
