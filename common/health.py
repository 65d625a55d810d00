"""Representation health of a feature batch ``[N, D]``: is the encoder collapsing?

* RankMe (Garrido et al. 2023, "RankMe: assessing the downstream performance of pretrained
  self-supervised representations by their rank", Eq. 1): ``exp(-sum_k p_k log p_k)`` with
  ``p_k = sigma_k / ||sigma||_1 + eps`` over the singular values of the (uncentred) feature
  matrix; between 1 (rank one, e.g. every image has the same feature) and ``min(N, D)``.
* centred RankMe: RankMe of the features minus their per-dimension mean over the N samples,
  so of how the images differ, not of where they sit. Uncentred, a mean vector shared by
  every image is one large singular value that drowns the rest: an encoder read at the patch
  mean with a fixed sin-cos position embedding (Bootleg, I-JEPA) has raw RankMe near 1 both
  trained and at its random init, though the trained one's k-NN is far above the init's.
  Between 1 (every image has the same feature, N = 1 included: nothing to centre but zeros)
  and ``min(N - 1, D)`` (centring removes one direction from the sample space).
* per-dimension std: the std over samples of each dimension; its mean and its minimum
  (a dimension whose std is 0 carries nothing).
* mean pairwise cosine between the features of distinct images (1: one direction for all).

``common.train`` logs these through training hooks (``common.hooks``); which encoder and
which images are measured is the hook's business (``eval.monitor``).
"""
from __future__ import annotations

import torch

RANKME_EPS = 1e-7  # the paper's epsilon


def _check_matrix(features: torch.Tensor) -> None:
    if features.dim() != 2 or min(features.shape) < 1:
        raise ValueError(f"rankme needs a non-empty [N, D] matrix, got shape {tuple(features.shape)}")


@torch.no_grad()
def rankme(features: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """Effective rank of ``features`` ``[N, D]`` (computed in float64)."""
    _check_matrix(features)
    sigma = torch.linalg.svdvals(features.double())
    total = sigma.sum()
    if total <= 0:  # all-zero features: no direction at all
        return 1.0
    p = sigma / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def rankme_centered(features: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of ``features`` ``[N, D]`` minus their mean over the N samples."""
    _check_matrix(features)
    z = features.double()
    # identical rows (N = 1 included) centre to exact zeros when they come in float32, as encoder
    # features do: their float64 sum and its division by N are exact, and rankme maps zeros to 1.
    # Float64 rows may leave a round-off residue of the mean instead, but the same one in every
    # row: rank one, so RankMe 1 up to the eps, as for any rank-one matrix.
    return rankme(z - z.mean(dim=0), eps)


@torch.no_grad()
def mean_pairwise_cosine(features: torch.Tensor) -> float:
    """Mean of ``cos(z_i, z_j)`` over ordered pairs ``i != j``, from ``||sum_i z_i/|z_i| ||^2``."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"mean pairwise cosine needs at least 2 samples, got {n}")
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    pair_sum = unit.sum(dim=0).pow(2).sum() - unit.pow(2).sum()
    return float(pair_sum / (n * (n - 1)))


@torch.no_grad()
def health_metrics(features: torch.Tensor) -> dict[str, float]:
    """``rankme``, ``rankme_centered``, ``std_mean``, ``std_min`` (per-dimension std over
    samples), ``cos_mean``."""
    std = features.double().std(dim=0)
    return {"rankme": rankme(features), "rankme_centered": rankme_centered(features),
            "std_mean": float(std.mean()), "std_min": float(std.min()), "cos_mean": mean_pairwise_cosine(features)}
