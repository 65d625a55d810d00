"""Stratified random sampling (SRS) of patch tokens and their projection between crops.

A view's F x F token grid is cut into ``G = F // w`` windows of ``w x w`` per side and one
token is drawn uniformly inside each window (``M = G^2`` samples).  When ``G * w < F`` the
``G w x G w`` block sits at one of the four grid corners (official code) or at a uniformly
random offset.

A sample is then projected into another (global) view through the crop geometry.  A crop
with box ``(i, j, h, w)`` in an ``H x W`` image has normalised corners
``ul = (i/(H-1), j/(W-1))``, ``br = ((i+h-1)/(H-1), (j+w-1)/(W-1))``; a flipped crop swaps
the column entries, so column 0 of its grid is the right edge of the box.  Token ``(r, c)``
of an ``S x S`` grid sits at ``u = ul + (r, c)/(S-1) * (br - ul)`` in the image (the
official convention: the token grid spans the box corner to corner).  ``u`` is valid for a
target view iff it lies strictly inside the target's box; its continuous grid position
there, ``t = (u - ul_t) (S_t - 1) / (br_t - ul_t)``, gives four bilinear weights.

Everything is batched over images, so the collator builds the maps of a whole batch in a
few tensor operations.  Maps are index tensors (gather form), not the official dense
``(M, N)`` matrices: the student's map is one token index per sample, the teacher's four
indices and four bilinear weights (zero for invalid samples).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Projection:
    """Teacher queries of ``M`` samples in a target view (batched over leading dims)."""

    index: torch.Tensor   # [..., M, 4] long: raster index of the 4 bilinear neighbours
    weight: torch.Tensor  # [..., M, 4] float: bilinear weights, rows sum to 1 (valid) or 0
    valid: torch.Tensor   # [..., M] bool: the sample lies strictly inside the target crop


def check_window(grid: int, window: int, what: str = "") -> int:
    """Number of windows per side; errors name the fix."""
    if window < 1:
        raise ValueError(f"SRS window must be >= 1, got {window}")
    if window > grid:
        raise ValueError(f"SRS window {window} is larger than the {what}token grid {grid}x{grid}; "
                         f"use udi.window_{what.strip() or 'global'} <= {grid}")
    return grid // window


def sample_stratified(batch: int, grid: int, window: int, corner_placement: bool = True,
                      generator: torch.Generator | None = None, what: str = "") -> torch.Tensor:
    """One uniformly drawn token per ``window x window`` cell: ``[batch, G*G, 2]`` (row, col),
    windows in raster order."""
    per_side = check_window(grid, window, what)
    slack = grid - per_side * window
    if corner_placement:
        offset = (torch.rand(batch, 2, generator=generator) < 0.5).long() * slack
    else:
        offset = torch.randint(0, slack + 1, (batch, 2), generator=generator)
    starts = torch.arange(per_side) * window
    cell = torch.stack(torch.meshgrid(starts, starts, indexing="ij"), dim=-1).reshape(-1, 2)
    jitter = torch.randint(0, window, (batch, per_side * per_side, 2), generator=generator)
    return offset[:, None, :] + cell[None] + jitter


def box_corners(boxes: torch.Tensor, flips: torch.Tensor, image_hw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``(ul, br)`` ``[..., 2]`` of boxes ``[..., 4] (i, j, h, w)`` in images of size
    ``image_hw`` ``[..., 2]`` (broadcast against the boxes); a flipped box has its column
    entries swapped."""
    scale = torch.as_tensor(image_hw, dtype=torch.float64) - 1
    b = boxes.to(torch.float64)
    ul = b[..., :2] / scale
    br = (b[..., :2] + b[..., 2:] - 1) / scale
    swap = flips.bool()
    ul_c = torch.where(swap, br[..., 1], ul[..., 1])
    br_c = torch.where(swap, ul[..., 1], br[..., 1])
    return torch.stack([ul[..., 0], ul_c], -1), torch.stack([br[..., 0], br_c], -1)


def grid_to_image(pos: torch.Tensor, grid: int, ul: torch.Tensor, br: torch.Tensor) -> torch.Tensor:
    """Grid position(s) ``[..., M, 2]`` of an ``grid x grid`` view -> normalised image coords."""
    if grid < 2:
        raise ValueError(f"token projection needs a grid of at least 2x2 tokens, got {grid}x{grid}")
    return ul[..., None, :] + pos.to(ul.dtype) / (grid - 1) * (br - ul)[..., None, :]


def image_to_grid(u: torch.Tensor, grid: int, ul: torch.Tensor, br: torch.Tensor) -> torch.Tensor:
    """Inverse of ``grid_to_image``: continuous grid position of image coords in a view."""
    return (u - ul[..., None, :]) * (grid - 1) / (br - ul)[..., None, :]


def inside(u: torch.Tensor, ul: torch.Tensor, br: torch.Tensor) -> torch.Tensor:
    """``u`` strictly inside the (unflipped) box spanned by ``ul``/``br``: ``[..., M]``."""
    low = torch.minimum(ul, br)[..., None, :]
    high = torch.maximum(ul, br)[..., None, :]
    return ((u > low) & (u < high)).all(-1)


def bilinear(t: torch.Tensor, grid: int, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Four raster indices and weights ``[..., M, 4]`` of continuous positions ``t``."""
    t = t.clamp(0, grid - 1)
    low = t.floor().long().clamp(max=grid - 1)
    high = (low + 1).clamp(max=grid - 1)
    frac = (t - low).to(torch.float32)
    r0, c0, r1, c1 = low[..., 0], low[..., 1], high[..., 0], high[..., 1]
    fr, fc = frac[..., 0], frac[..., 1]
    index = torch.stack([r0 * grid + c0, r0 * grid + c1, r1 * grid + c0, r1 * grid + c1], -1)
    weight = torch.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], -1)
    weight = weight * valid[..., None]
    return torch.where(valid[..., None], index, torch.zeros_like(index)), weight


def project(pos: torch.Tensor, src_grid: int, src_ul: torch.Tensor, src_br: torch.Tensor,
            tgt_grid: int, tgt_ul: torch.Tensor, tgt_br: torch.Tensor) -> Projection:
    """Project samples ``pos [..., M, 2]`` of a source view into a target view."""
    u = grid_to_image(pos, src_grid, src_ul, src_br)
    valid = inside(u, tgt_ul, tgt_br)
    t = image_to_grid(u, tgt_grid, tgt_ul, tgt_br)
    index, weight = bilinear(t, tgt_grid, valid)
    return Projection(index, weight, valid)


def raster_index(pos: torch.Tensor, grid: int) -> torch.Tensor:
    return pos[..., 0] * grid + pos[..., 1]


def srs_maps(boxes: torch.Tensor, flips: torch.Tensor, image_hw: torch.Tensor, global_grid: int,
             local_grid: int, window_global: int, window_local: int, corner_placement: bool = True,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Sampling and projection maps of a batch of multi-crops.

    Args:
        boxes: ``[B, 2 + n, 4]`` crop boxes ``(i, j, h, w)``, globals first; flips ``[B, 2 + n]``;
            image_hw: ``[B, 2]`` source image sizes (or one ``(H, W)`` for all).
    Returns (``g`` = 2 globals, ``n`` locals, ``Mg``/``Ml`` samples per view):
        ``global_src`` ``[B, 2, Mg]``: token index of each sample in student global ``v``;
        ``global_tgt_index/weight`` ``[B, 2, Mg, 4]`` and ``global_valid`` ``[B, 2, Mg]``:
        teacher queries in the *other* global ``1 - v``;
        ``local_src`` ``[B, n, Ml]``; ``local_tgt_index/weight`` ``[B, n, 2, Ml, 4]`` and
        ``local_valid`` ``[B, n, 2, Ml]``: teacher queries of local ``k`` in global ``v``.
    The batch dimension comes first (the training loop splits batches along it).
    One draw per image serves both globals, and one draw is shared by all its locals.
    """
    B, V = boxes.shape[:2]
    n_local = V - 2
    image_hw = torch.as_tensor(image_hw).reshape(-1, 1, 2)
    ul, br = box_corners(boxes, flips, image_hw)  # [B, V, 2]
    other = [1, 0]
    g_pos = sample_stratified(B, global_grid, window_global, corner_placement, generator, "global ")
    # student global v [B, 2, 1(M), 2] against teacher global 1 - v
    g = project(g_pos[:, None], global_grid, ul[:, :2], br[:, :2], global_grid, ul[:, other], br[:, other])
    maps = {
        "global_src": raster_index(g_pos, global_grid)[:, None].expand(-1, 2, -1).contiguous(),
        "global_tgt_index": g.index,
        "global_tgt_weight": g.weight,
        "global_valid": g.valid,
    }
    if n_local:
        l_pos = sample_stratified(B, local_grid, window_local, corner_placement, generator, "local ")
        # local k [B, n, 1, ...] against both globals v [B, 1, 2, ...]
        loc = project(l_pos[:, None, None], local_grid, ul[:, 2:, None], br[:, 2:, None],
                      global_grid, ul[:, None, :2], br[:, None, :2])
        maps["local_src"] = raster_index(l_pos, local_grid)[:, None].expand(-1, n_local, -1).contiguous()
        maps["local_tgt_index"] = loc.index
        maps["local_tgt_weight"] = loc.weight
        maps["local_valid"] = loc.valid
    return maps
