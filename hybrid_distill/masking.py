"""Progressive redundant token masking (paper Sec. 3.2, Eq. 4) and the Table 8 baselines.

All functions work on *patch* tokens only: prefix (class) tokens are never ranked and
never dropped. Keep sets are ``LongTensor [B, m]`` of raster patch indices, always
sorted ascending, so the student (which gathers patches in the order of its ``keep``
argument) and a teacher that drops tokens during its own forward see the tokens in the
same order and their relation matrices line up row by row.

Rounding (documented because the tests check counts exactly): at each stage
``round(K * n)`` tokens are dropped, rounding half up (not Python's banker's rounding),
so ViT-B/16 goes 196 -> 137 -> 96 -> 67 for K = 0.3, the paper's "34% (70%^3)".
``rounding="floor"`` drops ``floor(K * n)`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from common.vit import take_tokens

STRATEGIES = ("none", "progressive", "direct", "random")
ROUNDINGS = ("round", "floor")


def check_drop_ratio(K: float) -> None:
    if not (0.0 <= float(K) < 1.0):
        raise ValueError(
            f"hd.mask.K={K} is the fraction of tokens dropped at each masking layer and must "
            "lie in [0, 1); the paper uses 0.3 (Table 8 also 0.5 and 0.1)"
        )


def tokens_after_drop(n: int, K: float, rounding: str = "round") -> int:
    """Number of patch tokens left after dropping a fraction K of n."""
    check_drop_ratio(K)
    if rounding == "round":
        dropped = math.floor(K * n + 0.5)
    elif rounding == "floor":
        dropped = math.floor(K * n)
    else:
        raise ValueError(f"hd.mask.rounding={rounding!r}; choose one of {ROUNDINGS}")
    return max(n - dropped, 1)


def kept_counts(n: int, K: float, stages: int, rounding: str = "round") -> list[int]:
    """Token counts after each of ``stages`` progressive drops, e.g. [137, 96, 67]."""
    counts = []
    for _ in range(stages):
        n = tokens_after_drop(n, K, rounding)
        counts.append(n)
    return counts


def default_mask_layers(depth: int) -> list[int]:
    """I = [0, L/3, 2L/3] (paper Sec. 4.1); i = number of teacher blocks already applied."""
    return [0, depth // 3, 2 * depth // 3]


def check_mask_layers(layers: Sequence[int], depth: int) -> list[int]:
    layers = sorted(int(i) for i in layers)
    if not layers or layers[0] < 0 or layers[-1] > depth or len(set(layers)) != len(layers):
        raise ValueError(
            f"hd.mask.layers={list(layers)} must be distinct block counts in [0, {depth}] for a "
            f"depth-{depth} masking teacher (0 = embedded tokens, i = input of block i+1); "
            f"the paper uses {default_mask_layers(depth)}"
        )
    return layers


def redundancy_to_mean(patches: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every patch token to the average of the given tokens, [B, n]."""
    mean = patches.mean(dim=1, keepdim=True)
    return F.cosine_similarity(patches, mean.expand_as(patches), dim=-1)


def least_redundant(patches: torch.Tensor, num_keep: int) -> torch.Tensor:
    """Positions (into dim 1 of ``patches``) of the ``num_keep`` tokens least similar to the
    mean token, sorted ascending. The dropped ones are the top-K% most similar (Eq. 4)."""
    score = redundancy_to_mean(patches.float())
    keep = score.topk(num_keep, dim=1, largest=False, sorted=False).indices
    return keep.sort(dim=1).values


def compose(keep: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Select ``positions`` (indices into the current keep set) -> raster patch indices."""
    return keep.gather(1, positions)


def gather_tokens(tokens: torch.Tensor, positions: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Prefix tokens followed by the patch tokens at ``positions`` (indices into the patches)."""
    return torch.cat([tokens[:, :num_prefix], take_tokens(tokens[:, num_prefix:], positions)], dim=1)


def token_rows(keep: torch.Tensor, num_prefix: int, prefix_rows: Sequence[int] = (0,)) -> torch.Tensor:
    """Row indices into a full token sequence [prefix..., patches...] that select the
    given prefix rows followed by the kept patches, [B, len(prefix_rows) + m]."""
    B = keep.shape[0]
    prefix = torch.as_tensor(list(prefix_rows), device=keep.device).expand(B, -1)
    return torch.cat([prefix, keep + num_prefix], dim=1)


def random_keep(batch: int, num_patches: int, num_keep: int, generator: torch.Generator) -> torch.Tensor:
    """The Table 8 "Random" baseline: a uniformly random subset of the same size, sorted."""
    noise = torch.rand(batch, num_patches, generator=generator)
    return noise.argsort(dim=1)[:, :num_keep].sort(dim=1).values


class MaskPlan:
    """What the masking teacher must do during its forward.

    ``layers`` are the block counts at which the current keep set shrinks; ``counts`` the
    keep-set size after each of them. ``reduce_tokens`` makes the teacher physically drop
    the tokens (PCAE-style, later blocks see only the survivors); otherwise it runs on all
    tokens and only the keep set shrinks (paper Eq. 1 read literally).
    """

    def __init__(self, strategy: str, num_patches: int, depth: int, K: float = 0.3,
                 layers: Sequence[int] | None = None, rounding: str = "round",
                 reduce_tokens: bool = True):
        if strategy not in STRATEGIES:
            raise ValueError(f"hd.mask.strategy={strategy!r}; choose one of {STRATEGIES}")
        check_drop_ratio(K)
        layers = check_mask_layers(default_mask_layers(depth) if layers is None else layers, depth)
        progressive_counts = kept_counts(num_patches, K, len(layers), rounding)
        self.strategy = strategy
        self.num_patches = num_patches
        self.final_count = progressive_counts[-1] if strategy != "none" else num_patches
        if strategy == "progressive":
            self.layers, self.counts = layers, progressive_counts
        elif strategy == "direct":
            if reduce_tokens:
                raise ValueError(
                    "hd.mask.strategy=direct ranks tokens on the teacher's last layer, so the teacher "
                    "must see every token: set hd.teacher_tokens=full"
                )
            # One drop after the last block, to the same final count as the progressive plan.
            self.layers, self.counts = [depth], [self.final_count]
        else:  # none, or random (whose keep set comes from the collator)
            self.layers, self.counts = [], []
        self.reduce_tokens = reduce_tokens

    @property
    def keep_ratio(self) -> float:
        return self.final_count / self.num_patches
