"""UDI's overlap-constrained multi-crop (official ``udi_augmentation.py``, corrected).

Every view is drawn with RandomResizedCrop's parameter rule (``common.augment``); then the
views that need a patch-level correspondence are pulled towards a reference box so that
they overlap it by at least half of the smaller extent on each axis (about 25% of the
area):

* global 1 is free; global 2 is pulled towards global 1;
* every local crop is pulled towards a box derived from the two globals
  (``local_ref``: their intersection, or the union box the official code really uses).

The official code has two defects that ``overlap_mode="faithful"`` keeps and the default
``"fixed"`` corrects:

1. the union width in the shift rule is ``max(J, rJ) - min(i, rj)``: the candidate's *row*
   ``i`` instead of its column ``j``;
2. its ``_crop_intersection`` returns the union box, computed on crop coordinates whose
   left/right entries are swapped for flipped crops.

``overlap_mode="none"`` draws every crop independently (DINO's multi-crop).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from common.augment import (CropBox, MultiCrop, color_jitter, gaussian_blur, grayscale, normalize,
                            random_resized_crop_box, solarize)

OVERLAP_MODES = ("none", "fixed", "faithful")
LOCAL_REFS = ("intersection", "union")


def _axis_shift(start: int, size: int, ref_start: int, ref_size: int, union_extent: int) -> float:
    """Distance to move a 1-D interval towards ``ref`` so that they overlap by >= half of the
    smaller one (official rule): close the gap if disjoint, then add half the smaller size
    when the overlap is at most half of it."""
    overlap = size + ref_size - union_extent
    shift = float(max(-overlap, 0))
    if overlap <= 0.5 * min(size, ref_size):
        shift += 0.5 * min(size, ref_size)
    return shift


def _direction(start: int, size: int, ref_start: int, ref_size: int) -> int:
    """Sign of the move that brings the interval's centre towards the reference centre."""
    delta = (2 * ref_start + ref_size) - (2 * start + size)
    return (delta > 0) - (delta < 0)


def shift_towards(box: CropBox, ref: CropBox, height: int, width: int, mode: str = "fixed") -> CropBox:
    """Move ``box`` towards ``ref`` until both axes overlap by >= 50% of the smaller extent.

    ``mode="faithful"`` reproduces the official width test, whose union extent uses the
    candidate's row ``i`` where its column ``j`` is meant, and rounds the shift half-to-even
    (Python's ``round``); ``"fixed"`` uses the column and rounds the shift up, so that the
    50% guarantee holds exactly in integer pixels.
    """
    if mode not in ("fixed", "faithful"):
        raise ValueError(f"overlap mode {mode!r} unknown; use 'fixed' or 'faithful'")
    bottom, right = box.i + box.h, box.j + box.w
    ref_bottom, ref_right = ref.i + ref.h, ref.j + ref.w
    union_h = max(bottom, ref_bottom) - min(box.i, ref.i)
    width_start = box.i if mode == "faithful" else box.j
    union_w = max(right, ref_right) - min(width_start, ref.j)
    to_int = round if mode == "faithful" else math.ceil
    shift_i = to_int(_axis_shift(box.i, box.h, ref.i, ref.h, union_h))
    shift_j = to_int(_axis_shift(box.j, box.w, ref.j, ref.w, union_w))
    i = box.i + _direction(box.i, box.h, ref.i, ref.h) * shift_i
    j = box.j + _direction(box.j, box.w, ref.j, ref.w) * shift_j
    i = min(max(i, 0), height - box.h)
    j = min(max(j, 0), width - box.w)
    return CropBox(int(i), int(j), box.h, box.w)


def _union(a: CropBox, b: CropBox) -> CropBox:
    top, left = min(a.i, b.i), min(a.j, b.j)
    return CropBox(top, left, max(a.i + a.h, b.i + b.h) - top, max(a.j + a.w, b.j + b.w) - left)


def _intersection(a: CropBox, b: CropBox) -> CropBox | None:
    top, left = max(a.i, b.i), max(a.j, b.j)
    bottom, right = min(a.i + a.h, b.i + b.h), min(a.j + a.w, b.j + b.w)
    if bottom <= top or right <= left:
        return None
    return CropBox(top, left, bottom - top, right - left)


def _official_union_on_flipped(a: CropBox, a_flip: bool, b: CropBox, b_flip: bool) -> CropBox:
    """The official ``_crop_intersection``: element-wise min of the upper-left and max of the
    lower-right corners of coordinates ``(i, j, i+h-1, j+w-1)`` whose column entries are
    swapped for a flipped crop.  The result is always a valid box, but for flipped crops it
    is not the union of the regions."""
    def corners(box: CropBox, flipped: bool) -> tuple[int, int, int, int]:
        top, left, bottom, right = box.i, box.j, box.i + box.h - 1, box.j + box.w - 1
        return (top, right, bottom, left) if flipped else (top, left, bottom, right)

    ca, cb = corners(a, a_flip), corners(b, b_flip)
    top, left = min(ca[0], cb[0]), min(ca[1], cb[1])
    bottom, right = max(ca[2], cb[2]), max(ca[3], cb[3])
    return CropBox(top, left, bottom - top + 1, right - left + 1)


def local_reference(g0: CropBox, g0_flip: bool, g1: CropBox, g1_flip: bool,
                    local_ref: str = "intersection", mode: str = "fixed") -> CropBox:
    """Box the local crops are pulled towards.

    ``faithful`` mode always returns the official box (a union on flip-swapped coordinates).
    ``fixed`` mode un-flips: the true intersection of the two globals (falling back to their
    union when they are disjoint) or their true union.
    """
    if local_ref not in LOCAL_REFS:
        raise ValueError(f"data.aug.local_ref {local_ref!r} unknown; use one of {LOCAL_REFS}")
    if mode == "faithful":
        return _official_union_on_flipped(g0, g0_flip, g1, g1_flip)
    if local_ref == "intersection":
        inter = _intersection(g0, g1)
        if inter is not None:
            return inter
    return _union(g0, g1)


def udi_photometric(img_size: int, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p: float = 0.8,
                    grayscale_p: float = 0.2, stats: str = "imagenet", channels: int | None = None) -> Callable:
    """The one photometric pipeline UDI applies to every crop, global and local:
    jitter (p=0.8), grayscale (p=0.2), then with p=0.5 {blur p=0.5 or blur p=1 (even
    odds)}, otherwise {blur p=0.1, solarize p=0.2}; then normalisation."""
    blur_or_solarize = v2.RandomChoice([
        v2.RandomChoice([gaussian_blur(0.5, img_size), gaussian_blur(1.0, img_size)]),
        v2.Compose([gaussian_blur(0.1, img_size), solarize(0.2)]),
    ])
    steps = [color_jitter(*jitter, p=jitter_p)]
    if grayscale_p > 0:
        steps.append(grayscale(grayscale_p))
    steps += [blur_or_solarize, normalize(stats, channels)]
    return v2.Compose(steps)


class OverlapMultiCrop(MultiCrop):
    """2 global + ``n_local`` local crops with UDI's overlap constraint; returns the crops,
    their boxes ``(i, j, h, w)`` in source pixels and flip flags (``common.augment.MultiCrop``
    format) plus the source size ``image_hw``.  The same ``transform`` is applied
    independently to every crop."""

    def __init__(self, global_size: int, local_size: int, n_local: int, patch_size: int,
                 global_scale=(0.25, 1.0), local_scale=(0.05, 0.25), ratio=(3 / 4, 4 / 3),
                 flip_p: float = 0.5, overlap_mode: str = "fixed", local_ref: str = "intersection",
                 transform: Callable | None = None, interpolation: str = "bicubic"):
        if overlap_mode not in OVERLAP_MODES:
            raise ValueError(f"data.aug.overlap_mode {overlap_mode!r} unknown; use one of {OVERLAP_MODES}")
        if local_ref not in LOCAL_REFS:
            raise ValueError(f"data.aug.local_ref {local_ref!r} unknown; use one of {LOCAL_REFS}")
        sizes = [("global", global_size)] + ([("local", local_size)] if n_local else [])  # n_local=0: 2 views
        for name, size in sizes:
            if size < 2 * patch_size or size % patch_size:
                raise ValueError(
                    f"{name} crop size {size} must be a multiple of the patch size {patch_size} and hold at "
                    f"least 2x2 patches (token projection needs a grid >= 2); raise data.aug.{name}_size")
        super().__init__(global_size, local_size, n_global=2, n_local=n_local, global_scale=global_scale,
                         local_scale=local_scale, ratio=ratio, flip_p=flip_p, interpolation=interpolation,
                         global_transforms=transform, local_transform=transform)
        self.overlap_mode, self.local_ref = overlap_mode, local_ref

    def sample_geometry(self, height: int, width: int) -> tuple[list[CropBox], list[bool]]:
        """Boxes and flips in the official order: global 1, global 2 (pulled to global 1),
        then the locals (pulled to the globals' reference box)."""
        def draw(scale) -> tuple[CropBox, bool]:
            box = random_resized_crop_box(height, width, scale, self.ratio)
            return box, bool(torch.rand(()) < self.flip_p)

        g0, f0 = draw(self.global_scale)
        g1, f1 = draw(self.global_scale)
        constrained = self.overlap_mode != "none"
        if constrained:
            g1 = shift_towards(g1, g0, height, width, self.overlap_mode)
            ref = local_reference(g0, f0, g1, f1, self.local_ref, self.overlap_mode)
        boxes, flips = [g0, g1], [f0, f1]
        for _ in range(self.n_local):
            box, flipped = draw(self.local_scale)
            boxes.append(shift_towards(box, ref, height, width, self.overlap_mode) if constrained else box)
            flips.append(flipped)
        return boxes, flips
