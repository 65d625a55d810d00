"""Representation health: RankMe against its definition and an independent numpy formula,
centred RankMe against the spectrum of a hand-centred matrix, mean pairwise cosine against a
double loop, per-dimension std."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.health import health_metrics, mean_pairwise_cosine, rankme, rankme_centered


def rankme_numpy(z: np.ndarray, eps: float = 1e-7) -> float:
    """Garrido et al. 2023, Eq. 1, from numpy's SVD."""
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = s / np.abs(s).sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def test_rankme_of_orthonormal_features_is_their_dimension():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 16))  # 64 samples, 16 orthonormal columns
    assert rankme(q) == pytest.approx(16, rel=1e-4)
    assert rankme(torch.eye(12)) == pytest.approx(12, rel=1e-4)
    assert rankme(3.0 * torch.eye(12)) == pytest.approx(12, rel=1e-4)  # scale-free


def test_rankme_of_constant_and_rank_one_features_is_one():
    assert rankme(torch.full((50, 8), 0.7)) == pytest.approx(1.0, abs=1e-4)
    torch.manual_seed(0)
    rank_one = torch.randn(50, 1) @ torch.randn(1, 8)
    assert rankme(rank_one) == pytest.approx(1.0, abs=1e-4)
    assert rankme(rank_one + 1e-4 * torch.randn(50, 8)) < 1.05  # nearly rank one: nearly 1


def test_rankme_agrees_with_numpy_formula():
    torch.manual_seed(0)
    # decaying spectrum: neither 1 nor full rank
    z = torch.randn(200, 32) * torch.logspace(0, -3, 32)
    assert rankme(z) == pytest.approx(rankme_numpy(z.numpy()), rel=1e-9)
    assert 1.5 < rankme(z) < 32


def test_centred_rankme_sees_the_directions_a_large_shared_offset_hides_from_raw_rankme():
    n, d = 8, 16
    offset = 1000.0 * torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    z = torch.eye(n, d, dtype=torch.float64) + offset  # e_i + c: every row shares c
    assert rankme(z) < 1.05
    # centred by hand: e_i - mean_j e_j, i.e. the n x n centring matrix I - 11^T/n padded with
    # zeros, a projection of rank n - 1: singular values n - 1 ones and one zero
    eps = 1e-7
    p_one, p_zero = 1.0 / (n - 1) + eps, eps
    expected = math.exp(-((n - 1) * p_one * math.log(p_one) + p_zero * math.log(p_zero)))
    assert expected == pytest.approx(n - 1, rel=1e-4)
    assert rankme_centered(z) == pytest.approx(expected, rel=1e-6)


def test_centred_rankme_of_identical_rows_or_one_row_is_one():
    for z in (torch.full((50, 8), 0.7), torch.full((50, 8), 0.7, dtype=torch.float64),
              torch.randn(1, 8), torch.randn(1, 8).expand(30, 8)):
        assert rankme(z) == pytest.approx(1.0, abs=1e-4)
        assert rankme_centered(z) == pytest.approx(1.0, abs=1e-4)
    assert rankme_centered(torch.full((50, 8), 0.7)) == 1.0  # float32 rows centre to exact zeros


def test_centring_leaves_rankme_of_zero_mean_features_unchanged():
    torch.manual_seed(0)
    x = torch.randn(100, 32, dtype=torch.float64) * torch.logspace(0, -3, 32, dtype=torch.float64)
    z = torch.cat([x, -x])  # mean zero by construction
    assert rankme_centered(z) == pytest.approx(rankme(z), rel=1e-9)
    assert 1.5 < rankme(z) < 32


def test_mean_pairwise_cosine_matches_double_loop():
    torch.manual_seed(0)
    z = torch.randn(9, 5) + 0.5
    unit = z / z.norm(dim=1, keepdim=True)
    pairs = [float(unit[i] @ unit[j]) for i in range(9) for j in range(9) if i != j]
    assert mean_pairwise_cosine(z) == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    assert mean_pairwise_cosine(torch.ones(4, 3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0)


def test_health_metrics_std_mean_and_min():
    z = torch.tensor([[0.0, 1.0, 5.0], [2.0, 1.0, 5.0], [4.0, 1.0, 8.0]])
    h = health_metrics(z)
    stds = [2.0, 0.0, math.sqrt(3.0)]  # unbiased std over samples, per dimension
    assert h["std_mean"] == pytest.approx(sum(stds) / 3)
    assert h["std_min"] == pytest.approx(0.0)
    assert set(h) == {"rankme", "rankme_centered", "std_mean", "std_min", "cos_mean"}
    assert h["rankme_centered"] == pytest.approx(rankme_centered(z))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        rankme(torch.ones(4))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        rankme_centered(torch.ones(0, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mean_pairwise_cosine(torch.ones(1, 3))
