"""Token grids that differ between a teacher and the student (e.g. CLIP ViT-L/14 at 224 px
has 16x16 patch tokens, a ViT-L/16 student 14x14). The paper does not say how it matched
them (spec Sec. 2); ``method.grid_align`` chooses:

- ``resize_input`` (default): the teacher sees an image resized so that its grid equals the
  student's (CLIP-L/14 at 196 px); nothing is resampled afterwards.
- ``teacher_to_student``: the teacher runs at its own resolution and its token map is resampled
  to the student's grid before the kept rows are gathered.
- ``student_to_teacher``: the student's (head-projected) token map is resampled to the
  teacher's grid; needs the whole map, so no token masking.
- ``none``: grids must already agree (an error otherwise).

Resampling treats the patch rows as an image of ``D`` channels: ``F.interpolate`` with
``align_corners=False``, so token ``j`` of the output grid samples the input map at the centre
of the patch it covers, ``(j + 0.5) * in/out - 0.5`` in input-token units. Class tokens (prefix
rows) are not spatial and pass through unchanged. No antialiasing: grid ratios are close to 1
(16/14), where a wider kernel would only blur the map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GRID_ALIGN = ("resize_input", "teacher_to_student", "student_to_teacher", "none")
GRID_INTERP = ("bilinear", "bicubic")


def check_grid_options(align: str, interp: str) -> None:
    if align not in GRID_ALIGN:
        raise ValueError(f"method.grid_align={align!r}; choose one of {', '.join(GRID_ALIGN)}")
    if interp not in GRID_INTERP:
        raise ValueError(f"method.grid_interp={interp!r}; choose one of {', '.join(GRID_INTERP)}")


def resample_token_map(tokens: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int],
                       num_prefix: int, mode: str = "bilinear") -> torch.Tensor:
    """``[B, P + h*w, D]`` (raster-order patches) -> ``[B, P + H*W, D]`` on ``dst_grid = (H, W)``."""
    (h, w), (H, W) = tuple(src_grid), tuple(dst_grid)
    B, n, D = tokens.shape
    if n != num_prefix + h * w:
        raise ValueError(f"token map has {n - num_prefix} patch rows, grid {h}x{w} needs {h * w}")
    if (h, w) == (H, W):
        return tokens
    patches = tokens[:, num_prefix:].transpose(1, 2).reshape(B, D, h, w)
    work = patches.to(torch.promote_types(patches.dtype, torch.float32))  # bf16 maps resample in fp32
    resized = F.interpolate(work, size=(H, W), mode=mode, align_corners=False).to(tokens.dtype)
    return torch.cat([tokens[:, :num_prefix], resized.reshape(B, D, H * W).transpose(1, 2)], dim=1)
