"""Representation-analysis metrics (specs/eval.md section 7), written from their equations.

* ``attention_distance``: average attention distance per head (ViT / Hybrid Distill 2.1):
  ``mean_i sum_j A_ij * p * ||pos_i - pos_j||`` over patch tokens.
* ``attention_nmi``: normalised mutual information between queries and keys (Park et al.
  2023, Hybrid Distill 2.1) with uniform queries.
* ``linear_cka`` / ``rbf_cka`` / ``minibatch_cka``: centred kernel alignment (Kornblith et al.
  2019; Nguyen et al. 2021 for the minibatch unbiased estimator).
* ``alignment`` / ``uniformity`` / ``negative_alignment`` (Wang & Isola 2020; SDSSL Eqs. 7-9).
Each function returns numbers; ``plot_*`` helpers save PNGs.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from common.plots import pyplot, save_figure

EPS = 1e-12


def _check_attention(attn: torch.Tensor) -> None:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be [B, H, N, N], got {tuple(attn.shape)}")


def patch_distances(grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """``[n, n]`` pixel distances between patch centres in raster order."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()
    return torch.cdist(pos, pos) * patch_size


def attention_distance(attn: torch.Tensor, grid: tuple[int, int], patch_size: int, num_prefix: int = 0,
                       renorm: bool = False) -> torch.Tensor:
    """Mean attention distance per head ``[H]`` (pixels), averaged over images and patch queries.

    Prefix rows and columns are dropped; ``renorm`` divides each row by its patch mass."""
    _check_attention(attn)
    A = attn[:, :, num_prefix:, num_prefix:].double()
    if A.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"{A.shape[-1]} patch tokens but the grid {grid} has {grid[0] * grid[1]}")
    if renorm:
        A = A / A.sum(dim=-1, keepdim=True).clamp_min(EPS)
    d = patch_distances(grid, patch_size)
    return (A * d).sum(dim=-1).mean(dim=(0, 2)).float()


def attention_nmi(attn: torch.Tensor, num_prefix: int = 0, tokens: str = "all") -> torch.Tensor:
    """NMI(q; k) = I(q; k) / sqrt(H(q) H(k)) per head ``[H]``, averaged over images.

    ``p(q) = 1/N``, ``p(k|q) = A_qk``, ``p(k) = mean_q A_qk``. ``tokens=patch`` drops the
    prefix tokens and renormalises the rows."""
    _check_attention(attn)
    if tokens not in ("all", "patch"):
        raise ValueError(f"metrics.nmi_tokens {tokens!r} unknown; use all or patch")
    A = attn.double()
    if tokens == "patch":
        A = A[:, :, num_prefix:, num_prefix:]
        A = A / A.sum(dim=-1, keepdim=True).clamp_min(EPS)
    N = A.shape[-1]
    p_k = A.mean(dim=-2)                                        # [B, H, N]
    h_k = -(p_k * (p_k + EPS).log()).sum(dim=-1)                # [B, H]
    h_q = math.log(N)
    mi = (A * ((A + EPS).log() - (p_k.unsqueeze(-2) + EPS).log())).sum(dim=-1).mean(dim=-1)
    nmi = mi / (h_q * h_k).clamp_min(EPS).sqrt()
    return nmi.clamp(0.0, 1.0).mean(dim=0).float()


# --------------------------------------------------------------------------- CKA
def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=0, keepdim=True)


def linear_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """``||Y~^T X~||_F^2 / (||X~^T X~||_F ||Y~^T Y~||_F)`` with column-centred X~, Y~."""
    if len(X) != len(Y):
        raise ValueError(f"CKA needs the same examples in both: {len(X)} vs {len(Y)} rows")
    X, Y = _centre(X.double().flatten(1)), _centre(Y.double().flatten(1))
    num = (Y.T @ X).norm() ** 2
    den = (X.T @ X).norm() * (Y.T @ Y).norm()
    return float(num / den.clamp_min(EPS))


def _hsic(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    n = len(K)
    H = torch.eye(n, dtype=K.dtype) - 1.0 / n
    return torch.trace(K @ H @ L @ H) / (n - 1) ** 2


def _rbf(X: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    d2 = torch.cdist(X, X) ** 2
    median = d2[~torch.eye(len(X), dtype=torch.bool)].sqrt().median()
    sigma = sigma_frac * median.clamp_min(EPS)
    return torch.exp(-d2 / (2 * sigma**2))


def rbf_cka(X: torch.Tensor, Y: torch.Tensor, sigma_frac: float = 0.5) -> float:
    """Kernel CKA with RBF kernels, bandwidth ``sigma_frac`` x median pairwise distance."""
    K, L = _rbf(X.double().flatten(1), sigma_frac), _rbf(Y.double().flatten(1), sigma_frac)
    return float(_hsic(K, L) / (_hsic(K, K) * _hsic(L, L)).sqrt().clamp_min(EPS))


def _unbiased_hsic(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Song et al. 2012 unbiased HSIC (diagonals zeroed)."""
    n = len(K)
    K = K - torch.diag(torch.diag(K))
    L = L - torch.diag(torch.diag(L))
    ones = torch.ones(n, 1, dtype=K.dtype)
    term = torch.trace(K @ L) + (ones.T @ K @ ones) * (ones.T @ L @ ones) / ((n - 1) * (n - 2)) \
        - 2.0 * (ones.T @ K @ L @ ones) / (n - 2)
    return term.squeeze() / (n * (n - 3))


def minibatch_cka(X: torch.Tensor, Y: torch.Tensor, batch_size: int = 256) -> float:
    """Nguyen et al. 2021: unbiased HSIC of linear kernels summed over minibatches, then CKA."""
    if batch_size < 4:
        raise ValueError("minibatch CKA needs batches of at least 4 examples")
    xy = xx = yy = 0.0
    for s in range(0, len(X) - batch_size + 1, batch_size):
        x, y = X[s:s + batch_size].double().flatten(1), Y[s:s + batch_size].double().flatten(1)
        K, L = x @ x.T, y @ y.T
        xy, xx, yy = xy + _unbiased_hsic(K, L), xx + _unbiased_hsic(K, K), yy + _unbiased_hsic(L, L)
    if isinstance(xy, float):
        raise ValueError(f"minibatch CKA: {len(X)} examples is fewer than one batch of {batch_size}")
    return float(xy / (xx * yy).sqrt().clamp_min(EPS))


CKA_KINDS = {"linear": linear_cka, "rbf": rbf_cka, "minibatch": minibatch_cka}


def cka_matrix(features: list[torch.Tensor], kind: str = "linear") -> torch.Tensor:
    """``[L, L]`` CKA between every pair of layers' features (symmetric)."""
    if kind not in CKA_KINDS:
        raise ValueError(f"metrics.cka {kind!r} unknown; use one of {', '.join(sorted(CKA_KINDS))}")
    fn = CKA_KINDS[kind]
    n = len(features)
    M = torch.empty(n, n)
    for i in range(n):
        for j in range(i, n):
            M[i, j] = M[j, i] = fn(features[i], features[j])
    return M


# --------------------------------------------------------------------------- alignment / uniformity
def _off_diagonal_sq_dists(f: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(f.double(), f.double()) ** 2
    return d2[~torch.eye(len(f), dtype=torch.bool)]


def alignment(fx: torch.Tensor, fy: torch.Tensor, gamma: float = 2.0) -> float:
    """``E ||f(x) - f(y)||^gamma`` over positive pairs (rows of fx, fy; already normalised)."""
    return float((fx.double() - fy.double()).norm(dim=1).pow(gamma).mean())


def uniformity(f: torch.Tensor, t: float = 2.0) -> float:
    """``log E exp(-t ||f(x) - f(y)||^2)`` over pairs of distinct rows."""
    return float(torch.logsumexp(-t * _off_diagonal_sq_dists(f), dim=0) - math.log(len(f) * (len(f) - 1)))


def negative_alignment(f: torch.Tensor, gamma: float = 2.0) -> float:
    """``E ||f(x) - f(y)||^gamma`` over pairs of distinct images (SDSSL Eq. 9)."""
    return float(_off_diagonal_sq_dists(f).sqrt().pow(gamma).mean())


# --------------------------------------------------------------------------- plots
def _block_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block")


def plot_layer_curves(curves: dict[str, list[float]], path: str | Path, ylabel: str, title: str = "",
                      layers: list[int] | None = None) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in curves.items():
        ax.plot(layers or list(range(1, len(values) + 1)), values, marker="o", label=name)
    _block_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


def plot_per_head(values: torch.Tensor, path: str | Path, ylabel: str, title: str = "") -> Path:
    """Scatter of ``values [L, H]`` (one point per head) with the per-layer mean."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    L, H = values.shape
    for h in range(H):
        ax.scatter(range(1, L + 1), values[:, h], s=10, alpha=0.6)
    ax.plot(range(1, L + 1), values.mean(dim=1), color="k", label="mean over heads")
    _block_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


def plot_heatmap(matrix: torch.Tensor, path: str | Path, title: str = "", labels: list[int] | None = None) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="magma", origin="lower")
    ticks = list(range(len(matrix)))
    ax.set_xticks(ticks, labels or [t + 1 for t in ticks])
    ax.set_yticks(ticks, labels or [t + 1 for t in ticks])
    ax.set_xlabel("block")
    ax.set_ylabel("block")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path, dpi=120)
