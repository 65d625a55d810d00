"""Invariants of the I-JEPA and Bootleg mask generators over many seeds."""
import pytest
import torch

from bootleg.masks import (BootlegMaskGenerator, IJepaMaskGenerator, MaskCollator,
                           RandomMaskGenerator, build_mask_generator, visibility_rate)

GRID = (14, 14)
N = GRID[0] * GRID[1]
SEEDS = range(40)


def draw(gen, batch, seed):
    return gen(batch, torch.Generator().manual_seed(seed))


def assert_valid(masks, batch, npred, disjoint):
    ctx, tgt = masks.context, masks.targets
    assert ctx.dtype == tgt.dtype == torch.long
    assert ctx.shape[0] == batch and tgt.shape[:2] == (npred, batch)
    for x in (ctx, tgt):
        assert x.min() >= 0 and x.max() < N
    for b in range(batch):
        assert len(set(ctx[b].tolist())) == ctx.shape[1], "context indices repeat"
        assert torch.equal(ctx[b], ctx[b].sort().values)
        targets_b = set()
        for m in range(npred):
            assert len(set(tgt[m, b].tolist())) == tgt.shape[2], "a target block repeats an index"
            targets_b |= set(tgt[m, b].tolist())
        if disjoint:
            assert not targets_b & set(ctx[b].tolist()), "context overlaps a target"


IJEPA_VARIANTS = [
    dict(),  # the reference, every quirk on
    dict(fix_edges=True),
    dict(truncate="random"),
    dict(joint_scale_aspect=False),
    dict(fix_edges=True, truncate="random", joint_scale_aspect=False, allow_overlap=True),
]


@pytest.mark.parametrize("kwargs", IJEPA_VARIANTS)
def test_ijepa_masks_valid_over_seeds(kwargs):
    gen = IJepaMaskGenerator(GRID, **kwargs)
    for seed in SEEDS:
        masks = draw(gen, 8, seed)
        assert_valid(masks, 8, 4, disjoint=not kwargs.get("allow_overlap", False))
        assert masks.context.shape[1] > gen.min_keep


@pytest.mark.parametrize("kwargs", [dict(), dict(spread="density"), dict(spread="coverage"),
                                    dict(aspect_sampling="log_uniform"),
                                    dict(allow_overlap=True)])
def test_bootleg_masks_valid_over_seeds(kwargs):
    gen = BootlegMaskGenerator(GRID, **kwargs)
    for seed in SEEDS:
        masks = draw(gen, 8, seed)
        assert_valid(masks, 8, 4, disjoint=not kwargs.get("allow_overlap", False))
        assert masks.context.shape[1] == int(0.25 * N)


def test_bootleg_targets_are_full_rectangles():
    gen = BootlegMaskGenerator(GRID)
    for seed in SEEDS:
        tgt = draw(gen, 4, seed).targets
        rows, cols = tgt // GRID[1], tgt % GRID[1]
        h = rows.amax(-1) - rows.amin(-1) + 1
        w = cols.amax(-1) - cols.amin(-1) + 1
        assert torch.all(h * w == tgt.shape[-1]), "a target block is not an h x w rectangle"


def test_ijepa_reference_never_touches_last_row_or_column():
    gen = IJepaMaskGenerator(GRID)
    used = torch.zeros(N, dtype=torch.bool)
    for seed in SEEDS:
        masks = draw(gen, 16, seed)
        used[masks.context.flatten()] = True
        used[masks.targets.flatten()] = True
    grid = used.view(GRID)
    assert not grid[-1].any() and not grid[:, -1].any()
    assert grid[:-1, :-1].all(), "every other position should be reachable"


def test_fix_edges_reaches_last_row_and_column():
    gen = IJepaMaskGenerator(GRID, fix_edges=True)
    used = torch.zeros(N, dtype=torch.bool)
    for seed in SEEDS:
        masks = draw(gen, 16, seed)
        used[masks.targets.flatten()] = True
    assert used.view(GRID)[-1].any() and used.view(GRID)[:, -1].any()


def test_ijepa_context_shrinks_with_batch_size_and_starves_bottom_rows():
    gen = IJepaMaskGenerator(GRID)
    small = visibility_rate(gen, 1, 512, GRID)
    large = visibility_rate(gen, 128, 512, GRID)
    assert large.sum() < 0.8 * small.sum(), "prefix truncation should shrink the context"
    # Rows 10-12 lose most of their visibility (paper Fig. 5), the top row does not.
    assert large[10:13].mean() < 0.5 * small[10:13].mean()
    assert large[0].mean() > 0.9 * small[0].mean()


def test_bootleg_context_size_does_not_depend_on_batch_size():
    gen = BootlegMaskGenerator(GRID)
    sizes = {b: draw(gen, b, 0).context.shape[1] for b in (1, 4, 64, 512)}
    assert set(sizes.values()) == {int(0.25 * N)}, sizes


def test_bootleg_reaches_every_position():
    gen = BootlegMaskGenerator(GRID)
    ctx_seen = torch.zeros(N, dtype=torch.bool)
    tgt_seen = torch.zeros(N, dtype=torch.bool)
    for seed in range(10):
        masks = draw(gen, 32, seed)
        ctx_seen[masks.context.flatten()] = True
        tgt_seen[masks.targets.flatten()] = True
    assert ctx_seen.all() and tgt_seen.all()


def test_bootleg_visibility_is_flatter_than_ijepa():
    ijepa = visibility_rate(IJepaMaskGenerator(GRID), 128, 1024, GRID)
    bootleg = visibility_rate(BootlegMaskGenerator(GRID), 128, 1024, GRID)
    assert ijepa.min() == 0.0 and bootleg.min() > 0.0
    assert bootleg.std() / bootleg.mean() < ijepa.std() / ijepa.mean()


def test_coverage_spread_flattens_the_visibility_map():
    def spread_of(mode):
        rate = visibility_rate(BootlegMaskGenerator(GRID, spread=mode), 128, 1024, GRID)
        return float(rate.std() / rate.mean())
    assert spread_of("coverage") < 0.7 * spread_of("none")


def test_joint_draw_makes_larger_targets_taller():
    def aspect_area_correlation(gen):
        shapes = []
        for seed in range(300):
            tgt = draw(gen, 1, seed).targets[0, 0]
            rows, cols = tgt // GRID[1], tgt % GRID[1]
            h, w = float(rows.max() - rows.min() + 1), float(cols.max() - cols.min() + 1)
            shapes.append((h / w, h * w))
        return torch.corrcoef(torch.tensor(shapes).T)[0, 1]

    assert aspect_area_correlation(IJepaMaskGenerator(GRID, fix_edges=True)) > 0.4
    independent = IJepaMaskGenerator(GRID, fix_edges=True, joint_scale_aspect=False)
    assert abs(aspect_area_correlation(independent)) < 0.2


def test_truncate_random_keeps_bottom_rows():
    prefix = visibility_rate(IJepaMaskGenerator(GRID, fix_edges=True), 128, 512, GRID)
    random = visibility_rate(IJepaMaskGenerator(GRID, fix_edges=True, truncate="random"), 128, 512, GRID)
    assert random[-2:].mean() > 3 * prefix[-2:].mean()


def test_generators_terminate_on_small_grids():
    for grid in [(4, 4), (7, 7), (8, 8)]:
        n = grid[0] * grid[1]
        boot = BootlegMaskGenerator(grid, npred=2)
        assert_valid_grid = boot(16, torch.Generator().manual_seed(0))
        assert assert_valid_grid.context.max() < n
        ijepa = IJepaMaskGenerator(grid, npred=2, pred_scale=(0.2, 0.3), min_keep=1)
        masks = ijepa(16, torch.Generator().manual_seed(0))
        assert masks.context.shape[1] > 1 and masks.targets.max() < n


def test_random_generator_partitions_the_grid():
    gen = RandomMaskGenerator(GRID, mask_ratio=0.75)
    masks = draw(gen, 8, 0)
    assert masks.context.shape == (8, int(N * 0.25)) and masks.targets.shape == (1, 8, N - int(N * 0.25))
    for b in range(8):
        both = torch.cat([masks.context[b], masks.targets[0, b]]).sort().values
        assert torch.equal(both, torch.arange(N))


def test_same_generator_seed_gives_same_masks():
    for gen in (IJepaMaskGenerator(GRID), BootlegMaskGenerator(GRID, spread="density")):
        a, b = draw(gen, 8, 3), draw(gen, 8, 3)
        assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)


def test_collator_returns_index_tensors_and_images():
    collate = MaskCollator(BootlegMaskGenerator((7, 7), npred=2))
    samples = [(torch.randn(1, 28, 28), 3) for _ in range(5)]
    batch = collate(samples)
    assert batch["images"].shape == (5, 1, 28, 28)
    assert batch["context"].shape[0] == 5 and batch["targets"].shape[:2] == (2, 5)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("scale", [(0.0, 0.2), (0.1, 1.5), (-0.1, 0.2), (0.3, 0.2)])
def test_mask_scale_outside_unit_interval_is_rejected(scale):
    with pytest.raises(ValueError, match=r"pred_scale.*\(0, 1\]"):
        BootlegMaskGenerator(GRID, pred_scale=scale)
    with pytest.raises(ValueError, match=r"pred_scale.*\(0, 1\]"):
        IJepaMaskGenerator(GRID, pred_scale=scale)
    with pytest.raises(ValueError, match=r"enc_scale.*\(0, 1\]"):
        IJepaMaskGenerator(GRID, enc_scale=scale)


def test_too_many_target_blocks_for_the_grid():
    with pytest.raises(ValueError, match="cover the whole 7x7 grid.*lower mask.npred"):
        BootlegMaskGenerator((7, 7), npred=6)


def test_min_keep_that_no_block_can_beat_is_rejected_instead_of_looping():
    # The reference loops forever here: 3x3 target blocks on a 7x7 grid never exceed 10 tokens.
    with pytest.raises(ValueError, match="lower mask.min_keep"):
        IJepaMaskGenerator((7, 7))


def test_unknown_generator_and_truncation_are_rejected():
    with pytest.raises(ValueError, match="choose 'ijepa', 'bootleg' or 'random'"):
        build_mask_generator({"generator": "blocks"}, GRID)
    with pytest.raises(ValueError, match="mask.truncate"):
        IJepaMaskGenerator(GRID, truncate="pad")
    with pytest.raises(ValueError, match="mask.spread"):
        BootlegMaskGenerator(GRID, spread=True)
