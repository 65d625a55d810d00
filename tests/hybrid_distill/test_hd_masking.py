"""Progressive redundant token masking: counts, class token, redundancy ranking, composition."""

import math

import pytest
import torch

from common.vit import ViT
from hybrid_distill.masking import (MaskPlan, compose, kept_counts, least_redundant, random_keep,
                                    tokens_after_drop)
from hybrid_distill.teachers import Capture, FrozenTeacher


def tiny_teacher(depth=6, seed=0):
    torch.manual_seed(seed)
    net = ViT(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=depth, num_heads=2)
    return FrozenTeacher(net, [0.5], [0.25], 16, "tiny", "test", None)


def test_paper_counts_for_vit_b():
    # "34% (70%^3)": 196 -> 137 -> 96 -> 67 with round-half-up of K * n dropped per stage.
    assert kept_counts(196, 0.3, 3) == [137, 96, 67]
    assert kept_counts(196, 0.3, 3, rounding="floor") == [138, 97, 68]
    assert tokens_after_drop(10, 0.25) == 7  # 2.5 rounds up (not banker's rounding to 2)
    assert tokens_after_drop(10, 0.0) == 10


@pytest.mark.parametrize("K", [-0.1, 1.0, 1.5])
def test_drop_ratio_outside_unit_interval_is_rejected(K):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\)"):
        MaskPlan("progressive", num_patches=16, depth=6, K=K)


def test_direct_masking_needs_full_teacher_pass():
    with pytest.raises(ValueError, match="teacher_tokens=full"):
        MaskPlan("direct", num_patches=16, depth=6, reduce_tokens=True)


def test_mask_layer_beyond_depth_is_rejected():
    with pytest.raises(ValueError, match=r"hd.mask.layers=\[0, 4, 9\]"):
        MaskPlan("progressive", num_patches=16, depth=6, layers=[0, 4, 9])


def test_most_similar_tokens_to_the_mean_are_dropped():
    # Tokens (1, a_j): the mean is (1, 0.2), so by angle the three closest to it are
    # a = 0.1 (index 1), 0 (index 0) and 0.5 (index 7); K = 0.3 of 10 drops exactly those.
    a = torch.tensor([0.0, 0.1, -0.1, 1.0, -1.0, 3.0, -3.0, 0.5, -0.5, 2.0])
    patches = torch.stack([torch.ones(10), a], dim=1)[None]
    keep = least_redundant(patches, tokens_after_drop(10, 0.3))
    assert keep.tolist() == [[2, 3, 4, 5, 6, 8, 9]]


def test_compose_maps_positions_to_raster_indices():
    keep = torch.tensor([[3, 5, 7, 9], [0, 1, 2, 3]])
    assert compose(keep, torch.tensor([[1, 3], [0, 2]])).tolist() == [[5, 9], [0, 2]]


def manual_progressive_keep(teacher, images, K, layers):
    """Independent re-implementation: run the teacher block by block, at each masking layer
    drop the round(K * n) kept patches with the largest cosine similarity to their mean."""
    net = teacher.net
    h = net.norm_pre(net._pos_embed(net.patch_embed(teacher.prepare_input(images))))
    keep = [list(range(h.shape[1] - 1)) for _ in range(h.shape[0])]
    for i in range(teacher.depth + 1):
        if i > 0:
            h = net.blocks[i - 1](h)
        if i in layers:
            rows = []
            for b in range(h.shape[0]):
                patches = h[b, 1:]
                mean = patches.mean(0)
                sim = [float(p @ mean / (p.norm() * mean.norm())) for p in patches]
                n_drop = math.floor(K * len(sim) + 0.5)
                drop = set(sorted(range(len(sim)), key=lambda j: -sim[j])[:n_drop])
                kept_local = [j for j in range(len(sim)) if j not in drop]
                rows.append(kept_local)
                keep[b] = [keep[b][j] for j in kept_local]
            h = torch.stack([torch.cat([h[b, :1], h[b, 1:][rows[b]]]) for b in range(h.shape[0])])
    return keep, net.norm(h)


@torch.no_grad()
def test_reduced_teacher_matches_manual_three_stage_dropping():
    teacher = tiny_teacher()
    images = torch.rand(3, 1, 16, 16)
    plan = MaskPlan("progressive", num_patches=16, depth=6, K=0.3, reduce_tokens=True)
    out = teacher(images, Capture(final=True), plan)
    want_keep, want_final = manual_progressive_keep(teacher, images, 0.3, [0, 2, 4])
    assert out.keep.tolist() == want_keep
    assert out.keep.shape[1] == kept_counts(16, 0.3, 3)[-1] == 6  # 16 -> 11 -> 8 -> 6
    torch.testing.assert_close(out.final, want_final)  # class token row first, then the survivors


@torch.no_grad()
def test_full_pass_keeps_class_token_and_indexes_rows_and_columns():
    teacher = tiny_teacher()
    images = torch.rand(2, 1, 16, 16)
    plan = MaskPlan("progressive", num_patches=16, depth=6, K=0.3, reduce_tokens=False)
    out = teacher(images, Capture(relations=(5, 6), final=True), plan)
    full = teacher(images, Capture(relations=(5, 6), final=True))
    assert out.keep.shape == (2, 6)
    assert bool((out.keep[:, 1:] > out.keep[:, :-1]).all())  # sorted raster order
    rows = torch.cat([torch.zeros(2, 1, dtype=torch.long), out.keep + 1], dim=1)
    for b in range(2):
        torch.testing.assert_close(out.final[b], full.final[b, rows[b]])
        torch.testing.assert_close(out.relations[6][b], full.relations[6][b][:, rows[b]][:, :, rows[b]])
    torch.testing.assert_close(out.final[:, 0], full.final[:, 0])  # the class token is always kept


@torch.no_grad()
def test_random_and_direct_baselines_keep_the_progressive_count():
    teacher = tiny_teacher()
    images = torch.rand(2, 1, 16, 16)
    direct = MaskPlan("direct", num_patches=16, depth=6, K=0.3, reduce_tokens=False)
    assert direct.layers == [6] and direct.final_count == 6
    assert teacher(images, Capture(final=True), direct).keep.shape == (2, 6)
    keep = random_keep(2, 16, direct.final_count, torch.Generator().manual_seed(0))
    assert keep.shape == (2, 6) and len(set(keep[0].tolist())) == 6
    out = teacher(images, Capture(final=True), MaskPlan("random", 16, 6, reduce_tokens=True), keep=keep)
    assert out.final.shape[1] == 1 + 6 and torch.equal(out.keep, keep)


def test_teacher_without_class_token_is_rejected():
    net = ViT(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, num_class_tokens=0,
              global_pool="avg")
    with pytest.raises(ValueError, match="no class token.*model.num_class_tokens=1"):
        FrozenTeacher(net, [0.5], [0.25], 16, "ijepa-like", "test", None)
