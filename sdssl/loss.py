"""SDSSL losses, written from the paper's equations (Eqs. 1-6, Alg. 1) and the official code.

Shapes: ``B`` is the per-process batch, ``N`` the global batch over all processes, ``d`` the
projection width.  Per-layer queries are stacked **layer-major**: ``[n_layers * B, d]`` holds
layer ``l``'s rows in ``[l*B, (l+1)*B)``, so one cross-entropy over all rows is the mean of
the per-layer losses (the official code's batching).

Distributed collectives come from ``common.dist``; every function accepts ``world=`` (any
object with ``rank()``, ``all_gather_nograd()`` and ``all_gather_with_grad()``) so tests can
substitute one.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F

from common import dist as common_dist
from common.schedules import cosine_schedule

__all__ = [
    "byol_regression",
    "moco_v3_contrastive",
    "nt_xent",
    "alpha_at",
]


def _layer_count(queries: torch.Tensor, targets: torch.Tensor) -> int:
    if queries.dim() != 2 or targets.dim() != 2 or queries.shape[1] != targets.shape[1]:
        raise ValueError(f"expected queries [n*B, d] and targets [B, d], got {tuple(queries.shape)} and {tuple(targets.shape)}")
    if queries.shape[0] % targets.shape[0]:
        raise ValueError(
            f"queries have {queries.shape[0]} rows, not a multiple of the {targets.shape[0]} target rows; "
            "stack per-layer queries layer-major as [n_layers * B, d]"
        )
    return queries.shape[0] // targets.shape[0]


def byol_regression(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BYOL Eq. 1: mean over rows of ``2 - 2 cos(q, z)``; ``targets`` repeat for every layer."""
    n_layers = _layer_count(queries, targets)
    q = F.normalize(queries, dim=-1)
    z = F.normalize(targets, dim=-1).repeat(n_layers, 1)
    return (2 - 2 * (q * z).sum(dim=-1)).mean()


def moco_v3_contrastive(
    queries: torch.Tensor,
    keys: torch.Tensor,
    temperature: float,
    world: ModuleType | object = common_dist,
) -> torch.Tensor:
    """MoCo v3's ``ctr`` (Eq. 2 scaled by ``2 tau``), with keys gathered from all processes.

    ``queries`` ``[n*B, d]`` (student, layer-major), ``keys`` ``[B, d]`` (teacher, this
    process).  Keys are gathered without gradient to ``[N, d]``; the positive of local row
    ``i`` sits at ``rank * B + i`` of the gathered keys.
    """
    n_layers = _layer_count(queries, keys)
    batch = keys.shape[0]
    q = F.normalize(queries, dim=-1)
    k = F.normalize(world.all_gather_nograd(keys.detach()), dim=-1)
    logits = q @ k.t() / temperature
    labels = (torch.arange(batch, device=q.device) + world.rank() * batch).repeat(n_layers)
    return 2 * temperature * F.cross_entropy(logits, labels)


def nt_xent(
    queries: torch.Tensor,
    keys: torch.Tensor,
    temperature: float,
    keys_require_grad: bool,
    world: ModuleType | object = common_dist,
) -> torch.Tensor:
    """SimCLR's NT-Xent over the ``2N`` gathered projections, self-similarity removed.

    ``keys`` ``[2B, d]`` are this process's final projections ``cat(view1, view2)``; after
    the gather they are ``[2N, d]`` ordered ``[rank 0 view 1, rank 0 view 2, rank 1 ...]``.
    ``queries`` ``[n*2B, d]`` are projections of the same ``2B`` images (the final ones for
    L_ssl, intermediate layers for L_isd).  Row ``j`` of a layer is scored against every
    gathered key except its own same-view final projection (the self-similarity column),
    giving ``[n*2B, 2N - 1]`` logits whose positive is the other view of the same image.

    ``keys_require_grad=True`` (L_ssl) gathers with gradient, as SimCLR's GatherLayer does;
    ``False`` (L_isd) detaches the final projections: the stop-gradient target of SDSSL.
    """
    n_layers = _layer_count(queries, keys)
    two_b = keys.shape[0]
    if two_b % 2:
        raise ValueError(f"NT-Xent keys must be cat(view1, view2) with an even row count, got {two_b}")
    batch = two_b // 2
    if keys_require_grad:
        gathered = world.all_gather_with_grad(keys)
    else:
        gathered = world.all_gather_nograd(keys.detach())
    q = F.normalize(queries, dim=-1)
    k = F.normalize(gathered, dim=-1)
    logits = q @ k.t() / temperature  # [n*2B, 2N]

    local = torch.arange(two_b, device=q.device)
    offset = world.rank() * two_b
    self_col = (local + offset).repeat(n_layers)
    positive_col = ((local + batch) % two_b + offset).repeat(n_layers)
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[torch.arange(logits.shape[0], device=q.device), self_col] = False
    logits = logits[keep].view(logits.shape[0], logits.shape[1] - 1)
    # Columns right of the removed self column shift left by one.
    labels = positive_col - (positive_col > self_col).long()
    return F.cross_entropy(logits, labels)


def alpha_at(step: int, total_steps: int, alpha_max: float, schedule: str) -> float:
    """Weight of L_isd at ``step``: ``cosine`` anneals 0 -> alpha_max, ``constant`` is flat.

    Per iteration, no warmup: ``alpha_max * (1 - cos(pi * t / T)) / 2``, the official
    ``cosine_scheduler(0, ratio, epochs, iters)[t]`` (so the last step is just below alpha_max).
    """
    if schedule == "constant":
        return float(alpha_max)
    if schedule != "cosine":
        raise ValueError(f"method.alpha_schedule must be 'cosine' or 'constant', got {schedule!r}")
    return cosine_schedule(step, total_steps, 0.0, float(alpha_max))
