"""Mask generators for I-JEPA and Bootleg, run in the data-loader collator.

Both generators return index tensors over the patch grid (raster order, 0 .. H*W-1):
``context`` ``[B, Nc]`` (tokens the student sees) and ``targets`` ``[M, B, Nt]``
(one index list per target block; the predictor regresses the teacher there).
Every sample of a batch has the same Nc and Nt, so the model gathers with plain
``torch.gather`` and nothing is padded.

``IJepaMaskGenerator`` reproduces facebookresearch/ijepa ``src/masks/multiblock.py``
(@52c1ae9) including its quirks; each quirk is a switch so that an ablation can move
towards the Bootleg generator one quirk at a time:

* ``fix_edges=False``: block corners come from an exclusive ``randint(0, H - h)``, so the
  last row and column are never covered, and blocks are capped at ``H - 1``;
* ``joint_scale_aspect=True``: one uniform draw sets both the scale and the aspect ratio,
  so larger blocks are always taller;
* ``truncate="prefix"``: every index list is cut to the batch minimum by keeping its
  raster-order prefix, which starves the bottom rows as the batch grows (paper Fig. 5).

Two deliberate differences from the reference, neither changing the distribution of
masks: all randomness comes from one ``torch.Generator`` (the reference mixes a seeded
generator for sizes with the global RNG for positions), so a collate call is
reproducible from its seed; and a block size that can never exceed ``min_keep`` raises
an error instead of looping forever (reference defect on small grids).

``BootlegMaskGenerator`` is vectorised over the batch: target blocks of one size per
batch placed anywhere (inclusive bounds, independent scale and aspect draws), the
context is a uniform random subsample of the complement of the targets, of a size fixed
by ``context_ratio`` and therefore independent of the batch size.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

TRUNCATIONS = ("prefix", "random")
ASPECT_SAMPLINGS = ("uniform", "log_uniform")
SPREADS = ("none", "density", "coverage")
# The reference relaxes one acceptable-region constraint after this many failed draws.
IJEPA_RETRIES_PER_CONSTRAINT = 20
# Bounded redraws of a sample whose targets leave too small a context; after that the
# batch's context shrinks to its smallest candidate set (never reached by the defaults).
BOOTLEG_REDRAWS = 50


class Masks(NamedTuple):
    context: torch.Tensor  # LongTensor [B, Nc], sorted per row
    targets: torch.Tensor  # LongTensor [M, B, Nt]


def _check_range(name: str, bounds, lo_open: float, hi_closed: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in bounds)
    if not (lo_open < lo <= hi <= hi_closed):
        raise ValueError(
            f"mask.{name}={list(bounds)} must satisfy {lo_open} < low <= high <= {hi_closed}; "
            f"mask scales are fractions of the patch grid in (0, 1]")
    return lo, hi


def block_shape(n_tokens: int, scale: float, aspect: float, grid: tuple[int, int],
                strict_cap: bool) -> tuple[int, int]:
    """I-JEPA's block size: ``int(HW*scale)`` tokens at aspect ``h/w``, capped by the grid.

    ``strict_cap`` reproduces the reference's ``while h >= H`` (blocks at most H-1 tall);
    otherwise blocks may span the whole grid.
    """
    area = int(n_tokens * scale)
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    cap_h, cap_w = (grid[0] - 1, grid[1] - 1) if strict_cap else grid
    return min(h, cap_h), min(w, cap_w)


def _block_area_range(grid, scale, aspect, strict_cap, joint) -> tuple[int, int]:
    """Smallest and largest block area reachable from the scale and aspect ranges.

    ``joint``: scale and aspect come from one draw, so only the diagonal is reachable.
    """
    n = grid[0] * grid[1]
    scales, aspects = np.linspace(*scale, 65), np.linspace(*aspect, 65)
    pairs = zip(scales, aspects) if joint else ((s, a) for s in scales for a in aspects)
    areas = [math.prod(block_shape(n, s, a, grid, strict_cap)) for s, a in pairs]
    return min(areas), max(areas)


def _check_targets_fit(grid, npred, scale, aspect, strict_cap, allow_overlap, joint):
    if npred < 1:
        raise ValueError(f"mask.npred={npred}: need at least one target block")
    smallest, largest = _block_area_range(grid, scale, aspect, strict_cap, joint)
    if smallest == 0:
        raise ValueError(
            f"mask.pred_scale={list(scale)} gives empty target blocks on a {grid[0]}x{grid[1]} "
            f"grid; raise mask.pred_scale or use a smaller patch size")
    if not allow_overlap and npred * largest >= grid[0] * grid[1]:
        raise ValueError(
            f"mask.npred={npred} target blocks of up to {largest} tokens can cover the whole "
            f"{grid[0]}x{grid[1]} grid and leave no context; lower mask.npred or mask.pred_scale")
    return smallest, largest


def _sorted_random_subset(rows: list[torch.Tensor], k: int, generator) -> list[torch.Tensor]:
    out = []
    for r in rows:
        pick = torch.randperm(len(r), generator=generator)[:k]
        out.append(r[pick.sort().values])
    return out


class IJepaMaskGenerator:
    """The I-JEPA multi-block collator (one context block, ``npred`` target blocks)."""

    def __init__(self, grid: tuple[int, int], npred: int = 4, pred_scale=(0.15, 0.2),
                 enc_scale=(0.85, 1.0), aspect=(0.75, 1.5), min_keep: int = 10,
                 allow_overlap: bool = False, fix_edges: bool = False,
                 truncate: str = "prefix", joint_scale_aspect: bool = True):
        self.grid = (int(grid[0]), int(grid[1]))
        self.npred = int(npred)
        self.pred_scale = _check_range("pred_scale", pred_scale, 0.0, 1.0)
        self.enc_scale = _check_range("enc_scale", enc_scale, 0.0, 1.0)
        self.aspect = _check_range("aspect", aspect, 0.0, math.inf)
        if truncate not in TRUNCATIONS:
            raise ValueError(f"mask.truncate={truncate!r}; choose one of {TRUNCATIONS}")
        self.min_keep = int(min_keep)
        self.allow_overlap = bool(allow_overlap)
        self.fix_edges = bool(fix_edges)
        self.truncate = truncate
        self.joint_scale_aspect = bool(joint_scale_aspect)
        # Targets are never constrained, so their blocks must beat min_keep on their own;
        # the context block must too (all constraints are eventually relaxed), else the
        # reference loops forever.
        smallest, _ = _check_targets_fit(self.grid, self.npred, self.pred_scale, self.aspect,
                                         strict_cap=not self.fix_edges, allow_overlap=True,
                                         joint=self.joint_scale_aspect)
        smallest_ctx, _ = _block_area_range(self.grid, self.enc_scale, (1.0, 1.0),
                                            strict_cap=not self.fix_edges, joint=True)
        if min(smallest, smallest_ctx) <= self.min_keep:
            raise ValueError(
                f"mask.min_keep={self.min_keep} but blocks can be as small as "
                f"{min(smallest, smallest_ctx)} tokens on a {self.grid[0]}x{self.grid[1]} grid "
                f"(pred_scale={list(self.pred_scale)}, enc_scale={list(self.enc_scale)}); "
                f"a block must have more than min_keep tokens, so lower mask.min_keep")

    def _draw_size(self, scale, aspect, generator) -> tuple[int, int]:
        r = torch.rand(1, generator=generator).item()
        s = scale[0] + r * (scale[1] - scale[0])
        if not self.joint_scale_aspect:
            r = torch.rand(1, generator=generator).item()
        a = aspect[0] + r * (aspect[1] - aspect[0])
        h, w = block_shape(self.grid[0] * self.grid[1], s, a, self.grid,
                           strict_cap=not self.fix_edges)
        if h * w <= self.min_keep:  # the rejection loop could never accept this block
            raise ValueError(f"drew a {h}x{w} block, not more than mask.min_keep="
                             f"{self.min_keep} tokens; lower mask.min_keep")
        return h, w

    def _draw_block(self, size, generator, regions=None):
        """One block placed by rejection, relaxing one region after every 20 failures."""
        (H, W), (h, w) = self.grid, size
        slack = 1 if self.fix_edges else 0
        failures = relaxed = 0
        while True:
            top = int(torch.randint(0, H - h + slack, (1,), generator=generator))
            left = int(torch.randint(0, W - w + slack, (1,), generator=generator))
            mask = torch.zeros(H, W, dtype=torch.bool)
            mask[top:top + h, left:left + w] = True
            if regions:
                for region in regions[:max(len(regions) - relaxed, 0)]:
                    mask &= region
            idx = mask.flatten().nonzero().squeeze(1)
            if len(idx) > self.min_keep:
                complement = torch.ones(H, W, dtype=torch.bool)
                complement[top:top + h, left:left + w] = False
                return idx, complement
            failures += 1
            if failures % IJEPA_RETRIES_PER_CONSTRAINT == 0:
                relaxed += 1

    def _truncate(self, rows, generator):
        k = min(len(r) for r in rows)
        if self.truncate == "prefix":
            return torch.stack([r[:k] for r in rows])
        return torch.stack(_sorted_random_subset(rows, k, generator))

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        pred_size = self._draw_size(self.pred_scale, self.aspect, generator)
        enc_size = self._draw_size(self.enc_scale, (1.0, 1.0), generator)
        targets, contexts = [[] for _ in range(self.npred)], []
        for _ in range(batch_size):
            complements = []
            for m in range(self.npred):
                idx, complement = self._draw_block(pred_size, generator)
                targets[m].append(idx)
                complements.append(complement)
            regions = None if self.allow_overlap else complements
            contexts.append(self._draw_block(enc_size, generator, regions)[0])
        # The reference truncates every target list to the minimum over all blocks and samples.
        flat_targets = self._truncate([r for rows in targets for r in rows], generator)
        return Masks(self._truncate(contexts, generator),
                     flat_targets.view(self.npred, batch_size, -1))


class BootlegMaskGenerator:
    """Targets anywhere, context = fixed-size uniform subsample of what targets leave."""

    def __init__(self, grid: tuple[int, int], npred: int = 4, pred_scale=(0.15, 0.2),
                 aspect=(0.75, 1.5), context_ratio: float = 0.25, allow_overlap: bool = False,
                 spread: str = "none", aspect_sampling: str = "uniform"):
        self.grid = (int(grid[0]), int(grid[1]))
        self.npred = int(npred)
        self.pred_scale = _check_range("pred_scale", pred_scale, 0.0, 1.0)
        self.aspect = _check_range("aspect", aspect, 0.0, math.inf)
        if not 0.0 < context_ratio <= 1.0:
            raise ValueError(f"mask.context_ratio={context_ratio} must lie in (0, 1]")
        if aspect_sampling not in ASPECT_SAMPLINGS:
            raise ValueError(f"mask.aspect_sampling={aspect_sampling!r}; choose one of "
                             f"{ASPECT_SAMPLINGS}")
        self.allow_overlap = bool(allow_overlap)
        if spread not in SPREADS:
            raise ValueError(f"mask.spread={spread!r}; choose one of {SPREADS}")
        self.spread = spread
        self.aspect_sampling = aspect_sampling
        _check_targets_fit(self.grid, self.npred, self.pred_scale, self.aspect,
                           strict_cap=False, allow_overlap=self.allow_overlap,
                           joint=False)
        self.n_context = max(1, int(context_ratio * self.grid[0] * self.grid[1]))

    def _draw_size(self, generator) -> tuple[int, int]:
        r_scale, r_aspect = torch.rand(2, generator=generator).tolist()
        s = self.pred_scale[0] + r_scale * (self.pred_scale[1] - self.pred_scale[0])
        lo, hi = self.aspect
        if self.aspect_sampling == "log_uniform":
            a = math.exp(math.log(lo) + r_aspect * (math.log(hi) - math.log(lo)))
        else:
            a = lo + r_aspect * (hi - lo)
        return block_shape(self.grid[0] * self.grid[1], s, a, self.grid, strict_cap=False)

    def _coverage_weight(self, size: tuple[int, int]) -> torch.Tensor:
        """``1 / P(position is left uncovered by the M targets)`` on the grid, ``[H*W]``.

        A block of height h placed uniformly covers row r with probability
        ``(#tops in [r-h+1, r] within [0, H-h]) / (H-h+1)``; rows and columns are independent
        and the M blocks too, so a position stays a candidate with ``(1 - p_row p_col)^M``.
        """
        def line(n, k):
            r = torch.arange(n)
            tops = torch.clamp(torch.minimum(r, torch.tensor(n - k)) - torch.clamp(r - k + 1, min=0) + 1, min=0)
            return tops.float() / (n - k + 1)

        cover = line(self.grid[0], size[0]).view(-1, 1) * line(self.grid[1], size[1]).view(1, -1)
        return (1.0 - cover).clamp_min(1e-6).pow(-self.npred).flatten()

    def _candidate_keys(self, candidates: torch.Tensor, size, generator) -> torch.Tensor:
        """Random keys whose top-k is a weighted sample without replacement of candidates.

        Uniform keys give a uniform subsample. Otherwise the key ``u ** (1 / weight)``
        (Efraimidis-Spirakis) samples with ``weight``: ``density`` = the inverse number of
        candidates in the 3x3 neighbourhood (favours isolated tokens); ``coverage`` = the
        inverse probability that the targets leave the position free (favours the centre,
        which targets cover most often), which flattens the visibility map.
        """
        u = torch.rand(candidates.shape, generator=generator)
        if self.spread == "density":
            density = F.avg_pool2d(candidates.float().view(-1, 1, *self.grid), 3, stride=1,
                                   padding=1, count_include_pad=False).flatten(1)
            u = u.clamp_min(1e-12).pow(density.clamp_min(1e-6))
        elif self.spread == "coverage":
            u = u.clamp_min(1e-12).pow(1.0 / self._coverage_weight(size))
        return torch.where(candidates, u, torch.full_like(u, -1.0))

    def _place_targets(self, n, size, generator) -> torch.Tensor:
        """``[M, n, h*w]`` indices of ``n`` samples' blocks, raster order inside a block."""
        (H, W), (h, w) = self.grid, size
        top = torch.randint(0, H - h + 1, (self.npred, n, 1, 1), generator=generator)
        left = torch.randint(0, W - w + 1, (self.npred, n, 1, 1), generator=generator)
        rows = top + torch.arange(h).view(1, 1, h, 1)
        cols = left + torch.arange(w).view(1, 1, 1, w)
        return (rows * W + cols).flatten(2)

    def _candidates(self, targets: torch.Tensor) -> torch.Tensor:
        n = targets.shape[1]
        if self.allow_overlap:
            return torch.ones(n, self.grid[0] * self.grid[1], dtype=torch.bool)
        covered = torch.zeros(n, self.grid[0] * self.grid[1], dtype=torch.bool)
        covered.scatter_(1, targets.permute(1, 0, 2).flatten(1), True)
        return ~covered

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        size = self._draw_size(generator)
        targets = self._place_targets(batch_size, size, generator)
        candidates = self._candidates(targets)
        # A sample whose targets leave fewer than n_context candidates redraws its own
        # targets: the decision is per sample, so the masks do not depend on the batch size
        # (a batch minimum, as in I-JEPA, would shrink the context as the batch grows).
        for _ in range(BOOTLEG_REDRAWS):
            short = (candidates.sum(1) < self.n_context).nonzero().squeeze(1)
            if len(short) == 0:
                break
            targets[:, short] = self._place_targets(len(short), size, generator)
            candidates[short] = self._candidates(targets[:, short])
        n_context = min(self.n_context, int(candidates.sum(1).min()))
        if n_context == 0:
            raise ValueError(f"the {self.npred} target blocks of {size[0]}x{size[1]} covered a "
                             f"whole {self.grid[0]}x{self.grid[1]} grid; lower mask.npred or "
                             f"mask.pred_scale")
        keys = self._candidate_keys(candidates, size, generator)
        context = keys.topk(n_context, dim=1).indices.sort(dim=1).values
        return Masks(context, targets)


class RandomMaskGenerator:
    """MAE's per-sample uniform random masking: one target "block" of the masked tokens.

    ``predict_ratio`` (CrossMAE's ``kept_mask_ratio``, a fraction of *all* tokens) keeps a
    uniform random subset of the masked tokens as targets; ``None`` predicts every masked
    token (MAE). The rest are masked but unused.
    """

    def __init__(self, grid: tuple[int, int], mask_ratio: float = 0.75,
                 predict_ratio: float | None = None):
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask.mask_ratio={mask_ratio} must lie in (0, 1)")
        self.grid = (int(grid[0]), int(grid[1]))
        n = self.grid[0] * self.grid[1]
        self.n_context = int(n * (1 - mask_ratio))  # MAE: len_keep = int(L * (1 - mask_ratio))
        if not 0 < self.n_context < n:
            raise ValueError(f"mask.mask_ratio={mask_ratio} leaves {self.n_context} of {n} "
                             f"tokens visible on a {grid[0]}x{grid[1]} grid; need 1..{n - 1}")
        self.n_predict = n - self.n_context
        if predict_ratio is not None:
            if not 0.0 < predict_ratio <= mask_ratio:
                raise ValueError(f"mask.predict_ratio={predict_ratio} must lie in (0, mask_ratio="
                                 f"{mask_ratio}] (a fraction of all tokens), or be null to predict all")
            # CrossMAE: the tokens left after len_keep and int(L * (mask_ratio - kept_mask_ratio))
            self.n_predict = n - self.n_context - int(n * (mask_ratio - predict_ratio))
            if self.n_predict < 1:
                raise ValueError(f"mask.predict_ratio={predict_ratio} predicts no token of {n}; raise it")

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        order = torch.rand(batch_size, self.grid[0] * self.grid[1], generator=generator).argsort(1)
        context = order[:, :self.n_context].sort(dim=1).values
        masked = order[:, self.n_context:self.n_context + self.n_predict].sort(dim=1).values
        return Masks(context, masked.unsqueeze(0))


MaskGenerator = Callable[[int, "torch.Generator | None"], Masks]


def build_mask_generator(mask_cfg, grid: tuple[int, int]) -> MaskGenerator:
    """The generator named by ``mask.generator`` with the keys that generator reads."""
    name = mask_cfg["generator"]
    if name not in ("ijepa", "bootleg", "random"):
        raise ValueError(f"mask.generator={name!r}; choose 'ijepa', 'bootleg' or 'random'")
    if name == "random":
        return RandomMaskGenerator(grid, mask_cfg["mask_ratio"], mask_cfg.get("predict_ratio"))
    common = dict(grid=grid, npred=mask_cfg["npred"], pred_scale=tuple(mask_cfg["pred_scale"]),
                  aspect=tuple(mask_cfg["aspect"]), allow_overlap=mask_cfg["allow_overlap"])
    if name == "ijepa":
        return IJepaMaskGenerator(
            **common, enc_scale=tuple(mask_cfg["enc_scale"]), min_keep=mask_cfg["min_keep"],
            fix_edges=mask_cfg["fix_edges"], truncate=mask_cfg["truncate"],
            joint_scale_aspect=mask_cfg["joint_scale_aspect"])
    return BootlegMaskGenerator(
        **common, context_ratio=mask_cfg["context_ratio"], spread=mask_cfg["spread"],
        aspect_sampling=mask_cfg["aspect_sampling"])


class MaskCollator:
    """Collates ``(image, label)`` samples into ``{"images", "context", "targets"}``.

    Labels are dropped (self-supervised). Masks use the global torch RNG, which the
    training loop seeds per collate call, unless a generator is passed. With ``clones`` > 1
    (data2vec 2.0's ``clone_batch``) each image gets that many independent masks: rows
    ``i * clones .. (i + 1) * clones - 1`` of ``context``/``targets`` belong to image ``i``.
    ``batch_dims`` tells the training loop's gradient accumulation that ``targets`` holds the
    samples in dim 1 (``[M, B, Nt]``).
    """

    batch_dims = {"targets": 1}

    def __init__(self, mask_generator: MaskGenerator, clones: int = 1):
        if int(clones) < 1:
            raise ValueError(f"mask.clones={clones} must be >= 1 (masks per image)")
        self.mask_generator, self.clones = mask_generator, int(clones)

    def __call__(self, samples, generator: torch.Generator | None = None) -> dict:
        images = default_collate([s[0] for s in samples])
        masks = self.mask_generator(len(samples) * self.clones, generator)
        return {"images": images, "context": masks.context, "targets": masks.targets}


def visibility_rate(mask_generator: MaskGenerator, batch_size: int, n_images: int,
                    grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Fraction of images in which each grid position is in the context (paper Fig. 5)."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(grid[0] * grid[1])
    n_batches = max(1, n_images // batch_size)
    for _ in range(n_batches):
        context = mask_generator(batch_size, generator).context
        counts += torch.bincount(context.flatten(), minlength=counts.numel()).float()
    return (counts / (n_batches * batch_size)).view(grid)
