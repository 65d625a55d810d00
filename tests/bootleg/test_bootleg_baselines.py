"""The main table's CrossMAE and data2vec 2.0 rows: decoders, targets, masks, clones."""
import functools

import pytest
import torch

from bootleg.decoders import ConvDecoder, CrossDecoder, resolve_mix_layers
from bootleg.masks import MaskCollator, RandomMaskGenerator
from bootleg.model import build_method, resolve_target_layers
from common.config import load_config


@functools.lru_cache(maxsize=None)
def make_cfg(*overrides):
    return load_config("bootleg", ["scale=smoke", *overrides])


def random_batch(method, batch=3, clones=1, mask_ratio=0.75, predict_ratio=None, seed=0):
    student = method.student
    torch.manual_seed(seed)
    images = torch.randn(batch, student.in_chans, *(g * student.patch_size for g in student.grid_size))
    masks = RandomMaskGenerator(student.grid_size, mask_ratio, predict_ratio)(
        batch * clones, torch.Generator().manual_seed(seed))
    return {"images": images, "context": masks.context, "targets": masks.targets}


# ------------------------------------------------------------------ CrossMAE
def tiny_cross_decoder(self_attn=False, layers=(0, 1, 2)):
    torch.manual_seed(0)
    return CrossDecoder(16, (4, 4), out_dim=5, width=8, depth=2, num_heads=2, self_attn=self_attn,
                        encoder_layers=None if layers is None else list(layers)).eval()


@pytest.mark.parametrize("layers", [None, (0, 1, 2)])
def test_cross_decoder_query_ignores_the_other_queries(layers):
    dec = tiny_cross_decoder(layers=layers)
    z = torch.randn(2, 6, 16) if layers is None else [torch.randn(2, 6, 16) for _ in layers]
    context = torch.arange(6).expand(2, -1)
    targets = torch.tensor([[[7, 9, 12, 15], [6, 8, 10, 11]]])
    full = dec(z, context, targets)
    # the same query alone, and among other queries in another order
    alone = dec(z, context, targets[:, :, 1:2])
    shuffled = dec(z, context, targets[:, :, [3, 1, 0]])
    assert torch.allclose(full[:, :, 1], alone[:, :, 0], atol=1e-6)
    assert torch.allclose(full[:, :, [3, 1, 0]], shuffled, atol=1e-6)


def test_cross_decoder_with_self_attention_makes_queries_interact():
    dec = tiny_cross_decoder(self_attn=True)
    z = [torch.randn(2, 6, 16) for _ in range(3)]
    context = torch.arange(6).expand(2, -1)
    targets = torch.tensor([[[7, 9, 12, 15], [6, 8, 10, 11]]])
    full = dec(z, context, targets)
    alone = dec(z, context, targets[:, :, 1:2])
    assert not torch.allclose(full[:, :, 1], alone[:, :, 0], atol=1e-4)


def test_feature_mixing_is_a_learned_linear_mix_normalised_per_decoder_block():
    dec = tiny_cross_decoder()
    z = [torch.randn(2, 6, 16) for _ in range(3)]
    memories = dec.memories(z)
    for j, memory in enumerate(memories):
        mixed = sum(dec.mix[j, k] * z[k] for k in range(3))
        mean = mixed.mean(-1, keepdim=True)
        var = mixed.var(-1, unbiased=False, keepdim=True)
        expected = (mixed - mean) / torch.sqrt(var + 1e-6) * dec.mix_norms[j].weight + dec.mix_norms[j].bias
        assert torch.allclose(memory, expected, atol=1e-5)
    assert not torch.allclose(memories[0], memories[1])  # each block reads its own mix


def test_mix_layers_resolve_like_crossmae_use_fm():
    assert resolve_mix_layers("all", 4, with_input=True) == [0, 1, 2, 3, 4]
    assert resolve_mix_layers([-1], 12, with_input=False) == [12]
    assert resolve_mix_layers([2, -2], 12, with_input=False) == [2, 11]
    with pytest.raises(ValueError, match="predictor.mix_layers"):
        resolve_mix_layers([13], 12, with_input=False)


def test_predict_ratio_keeps_crossmae_counts_and_a_subset_of_the_masked_tokens():
    gen = RandomMaskGenerator((14, 14), mask_ratio=0.75, predict_ratio=0.25)
    masks = gen(8, torch.Generator().manual_seed(0))
    # CrossMAE: len_keep = int(196 * 0.25) = 49; predicted = 196 - 49 - int(196 * 0.5) = 49
    assert masks.context.shape == (8, 49) and masks.targets.shape == (1, 8, 49)
    for ctx, tgt in zip(masks.context, masks.targets[0]):
        assert len(set(ctx.tolist()) | set(tgt.tolist())) == 98  # disjoint
    assert RandomMaskGenerator((14, 14), 0.75, 0.75)(2).targets.shape == (1, 2, 147)
    with pytest.raises(ValueError, match="mask.predict_ratio=0.8"):
        RandomMaskGenerator((14, 14), 0.75, 0.8)


def test_crossmae_method_regresses_pixels_of_the_predicted_subset_from_every_encoder_layer():
    method = build_method(make_cfg("method=crossmae"), total_steps=10)
    assert method.teacher is None and method.encoder_for_eval() is method.student
    assert isinstance(method.predictor, CrossDecoder)
    assert method.predictor.encoder_layers == [0, 1, 2]  # the input and both blocks
    out = method.training_step(random_batch(method, predict_ratio=0.25), step=0)
    out["loss"].backward()
    assert set(out) == {"loss", "loss_pixels"}
    assert method.student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.predictor.mix.grad.abs().sum() > 0


# ------------------------------------------------------------------ data2vec 2.0
def test_top_k_layers_are_the_last_k_blocks():
    assert resolve_target_layers("top:10", 12) == list(range(3, 13))
    assert resolve_target_layers(["top:10"], 2) == [1, 2]


def test_data2vec_target_is_the_layer_normed_mean_of_instance_normed_ffn_outputs():
    method = build_method(make_cfg("method=data2vec"), total_steps=10)
    teacher = method.teacher
    images = random_batch(method)["images"]
    y = method.hidden_targets(teacher, images)
    # independent forward: pre-norm blocks, recording each block's MLP output
    x = teacher.patch_embed(images) + teacher.pos_embed
    ffn = []
    for block in teacher.blocks:
        x = x + block.attn(block.norm1(x))
        f = block.mlp(block.norm2(x))
        ffn.append(f)
        x = x + f

    def instance_norm(h):  # per image and channel, over the tokens
        return (h - h.mean(1, keepdim=True)) / torch.sqrt(h.var(1, unbiased=False, keepdim=True) + 1e-5)

    avg = sum(instance_norm(f) for f in ffn) / len(ffn)
    expected = (avg - avg.mean(-1, keepdim=True)) / torch.sqrt(avg.var(-1, unbiased=False, keepdim=True) + 1e-5)
    assert y.shape == (3, 49, teacher.embed_dim)
    assert torch.allclose(y, expected, atol=1e-4)


def test_conv_decoder_puts_visible_tokens_on_the_grid_and_noise_elsewhere():
    dec = ConvDecoder(16, (4, 4), out_dim=16, width=16, depth=2, groups=4, noise_std=0.5)
    z = torch.randn(2, 5, 16)
    context = torch.tensor([[0, 3, 5, 9, 15], [1, 2, 4, 8, 12]])
    full = dec.fill_grid(z, context)
    assert torch.equal(full.gather(1, context.unsqueeze(-1).expand(-1, -1, 16)), z)
    masked = torch.ones(2, 16, dtype=torch.bool)
    masked[torch.arange(2).unsqueeze(1), context] = False
    assert 0.3 < full[masked].std() < 0.7
    targets = torch.tensor([[[2, 4], [0, 3]]])
    assert dec(z, context, targets).shape == (1, 2, 2, 16)
    with pytest.raises(ValueError, match="not divisible by predictor.groups=16"):
        ConvDecoder(24, (4, 4), out_dim=24, width=32, depth=1, groups=16)


def test_data2vec_gradient_reaches_student_and_decoder_only_and_the_teacher_follows_by_ema():
    method = build_method(make_cfg("method=data2vec"), total_steps=10)
    out = method.training_step(random_batch(method, clones=2, mask_ratio=0.8), step=0)
    out["loss"].backward()
    for name, p in method.named_parameters():
        if name.startswith("teacher."):
            assert p.grad is None and not p.requires_grad, name
    assert method.student.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert method.predictor.convs[0].weight.grad.abs().sum() > 0
    before = [t.clone() for t in method.teacher.parameters()]
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    method.after_step(0)
    m = 0.9998  # ema[0] at step 0
    for old, new, s in zip(before, method.teacher.parameters(), method.student.parameters()):
        assert torch.allclose(new, m * old + (1 - m) * s, atol=1e-6)


def test_clones_loss_is_the_mean_of_each_masks_loss_with_one_teacher_pass():
    method = build_method(make_cfg("method=data2vec", "predictor.noise_std=0.0"), total_steps=10)
    batch = random_batch(method, batch=3, clones=2, mask_ratio=0.8)
    loss = method.training_step(batch, 0)["loss"]
    per_clone = []
    for r in range(2):
        rows = torch.arange(3) * 2 + r  # image i owns rows 2i, 2i + 1
        single = {"images": batch["images"], "context": batch["context"][rows],
                  "targets": batch["targets"][:, rows]}
        per_clone.append(method.training_step(single, 0)["loss"])
    assert torch.allclose(loss, torch.stack(per_clone).mean(), atol=1e-6)


def test_collator_gives_each_image_its_clones_and_rejects_bad_counts():
    collate = MaskCollator(RandomMaskGenerator((7, 7), 0.8), clones=4)
    batch = collate([(torch.zeros(1, 28, 28), 0)] * 3, torch.Generator().manual_seed(0))
    assert batch["images"].shape[0] == 3 and batch["context"].shape == (12, 9)
    assert batch["targets"].shape == (1, 12, 40)
    assert not torch.equal(batch["context"][0], batch["context"][1])  # independent masks
    with pytest.raises(ValueError, match="mask.clones=0"):
        MaskCollator(RandomMaskGenerator((7, 7), 0.8), clones=0)


def test_ffn_targets_reject_the_final_output():
    with pytest.raises(ValueError, match="target_source=ffn"):
        build_method(make_cfg("method=data2vec", "method.include_final_output=true"), total_steps=10)
