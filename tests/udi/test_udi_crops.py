"""UDI's overlap-constrained multi-crop: the overlap guarantee, the official defects, geometry."""
from __future__ import annotations

import pytest
import torch

from common.augment import CropBox
from udi.crops import OverlapMultiCrop, local_reference, shift_towards


def axis_overlap(a0: int, a_len: int, b0: int, b_len: int) -> int:
    return max(0, min(a0 + a_len, b0 + b_len) - max(a0, b0))


def assert_half_overlap(box: CropBox, ref: CropBox) -> None:
    """>= 50% of the smaller extent on both axes (so >= 25% of the smaller area)."""
    assert axis_overlap(box.i, box.h, ref.i, ref.h) >= 0.5 * min(box.h, ref.h), (box, ref)
    assert axis_overlap(box.j, box.w, ref.j, ref.w) >= 0.5 * min(box.w, ref.w), (box, ref)


@pytest.mark.parametrize("local_ref", ["intersection", "union"])
def test_fixed_overlap_guarantee_over_many_seeds(local_ref):
    crop = OverlapMultiCrop(224, 96, n_local=10, patch_size=16, overlap_mode="fixed", local_ref=local_ref)
    H, W = 180, 260  # non-square, so a row/column mix-up would show
    for seed in range(300):
        torch.manual_seed(seed)
        boxes, flips = crop.sample_geometry(H, W)
        g0, g1 = boxes[:2]
        assert_half_overlap(g1, g0)
        ref = local_reference(g0, flips[0], g1, flips[1], local_ref, "fixed")
        for box in [g0, g1, *boxes[2:]]:
            assert 0 <= box.i and box.i + box.h <= H and 0 <= box.j and box.j + box.w <= W
        for local in boxes[2:]:
            assert_half_overlap(local, ref)


def test_unconstrained_crops_violate_the_guarantee_somewhere():
    """Control for the test above: without the shift, small crops often miss the reference."""
    crop = OverlapMultiCrop(224, 96, n_local=10, patch_size=16, overlap_mode="none")
    misses = 0
    for seed in range(50):
        torch.manual_seed(seed)
        boxes, _ = crop.sample_geometry(180, 260)
        misses += sum(axis_overlap(b.j, b.w, boxes[0].j, boxes[0].w) < 0.5 * min(b.w, boxes[0].w) for b in boxes[2:])
    assert misses > 0


def test_shift_closes_a_gap_then_adds_half_the_smaller_size():
    # 1-D walk-through of the rule on the column axis: ref [100, 140), candidate [10, 50) (gap 50).
    ref = CropBox(0, 100, 50, 40)
    box = CropBox(0, 10, 50, 40)
    moved = shift_towards(box, ref, 50, 300, "fixed")
    assert moved.j == 10 + 50 + 20  # gap + 0.5 * min(40, 40)
    assert moved.i == 0  # rows already overlap fully


def test_faithful_mode_reproduces_the_official_width_typo():
    """Official ``bb_w = max(J, rJ) - min(i, rj)`` uses the candidate's row ``i`` (= 5 here)
    where its column ``j`` is meant, so the union width is 185 instead of 130."""
    ref = CropBox(0, 60, 20, 40)      # columns [60, 100)
    box = CropBox(5, 150, 20, 40)     # columns [150, 190), rows [5, 25)
    fixed = shift_towards(box, ref, 40, 300, "fixed")
    faithful = shift_towards(box, ref, 40, 300, "faithful")
    # fixed: overlap = 40 + 40 - 130 = -50 -> shift 50 + 20 = 70 to the left
    assert fixed.j == 150 - 70
    # faithful: overlap = 40 + 40 - 185 = -105 -> shift 105 + 20 = 125 to the left
    assert faithful.j == 150 - 125
    assert axis_overlap(faithful.j, 40, ref.j, 40) == 5  # < 50%: the defect breaks the guarantee
    assert fixed.i == faithful.i  # the row axis is computed identically


def test_faithful_local_reference_is_a_union_on_flip_swapped_coordinates():
    g0 = CropBox(10, 10, 50, 40)   # columns 10..49
    g1 = CropBox(30, 30, 50, 60)   # columns 30..89
    # no flips: the official box is the plain union
    assert local_reference(g0, False, g1, False, "intersection", "faithful") == CropBox(10, 10, 70, 80)
    # g0 flipped: its corners become (10, 49, 59, 10); min of lefts = min(49, 30) = 30,
    # max of rights = max(10, 89) = 89 -> columns 30..89, not the union 10..89
    assert local_reference(g0, True, g1, False, "intersection", "faithful") == CropBox(10, 30, 70, 60)
    # fixed mode un-flips: intersection rows 30..59, columns 30..49; union as requested
    assert local_reference(g0, True, g1, False, "intersection", "fixed") == CropBox(30, 30, 30, 20)
    assert local_reference(g0, True, g1, False, "union", "fixed") == CropBox(10, 10, 70, 80)
    # disjoint globals: the intersection falls back to the union
    far = CropBox(70, 60, 10, 10)
    assert local_reference(g0, False, far, False, "intersection", "fixed") == CropBox(10, 10, 70, 60)


def test_crops_carry_boxes_flips_and_flipped_content():
    img = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32)
    crop = OverlapMultiCrop(32, 16, n_local=2, patch_size=8, global_scale=(1.0, 1.0), flip_p=1.0)
    torch.manual_seed(0)
    out = crop(img)
    assert [tuple(c.shape) for c in out["crops"]] == [(1, 32, 32)] * 2 + [(1, 16, 16)] * 2
    assert out["boxes"].shape == (4, 4) and out["flips"].all()
    assert out["boxes"][0].tolist() == [0, 0, 32, 32]
    assert torch.equal(out["crops"][0], img.flip(-1))  # full-image box, flipped
    assert out["image_hw"].tolist() == [32, 32]


@pytest.mark.parametrize("kwargs, match", [
    (dict(local_size=4), r"local crop size 4 .* patch size 8.*raise data\.aug\.local_size"),
    (dict(local_size=12), "multiple of the patch size"),
    (dict(overlap_mode="sometimes"), "data.aug.overlap_mode"),
    (dict(local_ref="middle"), "data.aug.local_ref"),
])
def test_bad_crop_settings_fail_with_the_fix(kwargs, match):
    args = dict(global_size=32, local_size=16, n_local=2, patch_size=8) | kwargs
    with pytest.raises(ValueError, match=match):
        OverlapMultiCrop(**args)


def test_without_local_crops_only_the_two_global_views_are_made_and_local_size_is_not_checked():
    crop = OverlapMultiCrop(32, 4, n_local=0, patch_size=8)  # a local size that n_local>0 refuses
    out = crop(torch.rand(1, 40, 40))
    assert len(out["crops"]) == 2 and all(c.shape[-2:] == (32, 32) for c in out["crops"])
