import math

import pytest
import torch

from eval import metrics as M


def _orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def _hsic_cka(X, Y):
    """Kernel form from the spec, written independently: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    n = len(X)
    H = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    K, L = X @ X.T, Y @ Y.T
    hsic = lambda A, B: torch.trace(A @ H @ B @ H)  # noqa: E731
    return float(hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L)))


def test_linear_cka_identities_and_kernel_form():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(50, 8, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(8, 5, generator=g, dtype=torch.float64) + 0.5 * torch.randn(50, 5, generator=g, dtype=torch.float64)
    assert M.linear_cka(X, X) == pytest.approx(1.0, abs=1e-10)
    assert M.linear_cka(X, Y) == pytest.approx(_hsic_cka(X, Y), rel=1e-9)
    assert M.linear_cka(X @ _orthogonal(8), Y) == pytest.approx(M.linear_cka(X, Y), rel=1e-9)
    assert M.linear_cka(3.7 * X, Y) == pytest.approx(M.linear_cka(X, Y), rel=1e-9)
    assert 0.0 < M.linear_cka(X, Y) < 1.0
    Z = torch.randn(50, 8, generator=g, dtype=torch.float64)
    assert M.linear_cka(X, Z) < M.linear_cka(X, Y)


def test_rbf_and_minibatch_cka():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(64, 6, generator=g)
    assert M.rbf_cka(X, X) == pytest.approx(1.0, abs=1e-6)
    assert M.rbf_cka(X @ _orthogonal(6).float(), X) == pytest.approx(1.0, abs=1e-5)  # distances preserved
    assert M.minibatch_cka(X, X, batch_size=16) == pytest.approx(1.0, abs=1e-6)
    assert M.minibatch_cka(2 * X @ _orthogonal(6, 3).float(), X, batch_size=16) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="fewer than one batch"):
        M.minibatch_cka(X[:10], X[:10], batch_size=16)


def test_cka_matrix_symmetric_with_unit_diagonal():
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(40, 4, generator=g) for _ in range(3)]
    C = M.cka_matrix(feats)
    assert torch.allclose(C, C.T) and torch.allclose(C.diag(), torch.ones(3))
    with pytest.raises(ValueError, match="linear, minibatch, rbf"):
        M.cka_matrix(feats, "cosine")


def test_attention_distance_zero_for_self_attention_and_hand_value():
    grid, p, P = (3, 3), 4, 1
    N = P + 9
    eye = torch.eye(N).expand(2, 3, N, N)
    assert torch.allclose(M.attention_distance(eye, grid, p, P), torch.zeros(3))
    # every query attends only to patch 0 (top-left corner); distance from patch (r, c) = p*sqrt(r^2+c^2)
    A = torch.zeros(1, 1, N, N)
    A[..., P] = 1.0
    expected = sum(p * math.hypot(r, c) for r in range(3) for c in range(3)) / 9
    assert M.attention_distance(A, grid, p, P).item() == pytest.approx(expected, rel=1e-6)


def test_attention_distance_renorm_ignores_prefix_mass():
    grid, P = (2, 2), 1
    A = torch.zeros(1, 1, 5, 5)
    A[..., 0] = 0.5          # half the mass on the class token
    A[..., 1 + 3] = 0.5      # half on the bottom-right patch
    plain = M.attention_distance(A, grid, 1, P).item()
    renorm = M.attention_distance(A, grid, 1, P, renorm=True).item()
    assert renorm == pytest.approx(2 * plain)


def test_nmi_bounds_uniform_and_identity():
    N = 7
    uniform = torch.full((2, 4, N, N), 1.0 / N)
    assert torch.allclose(M.attention_nmi(uniform), torch.zeros(4), atol=1e-6)
    assert torch.allclose(M.attention_nmi(torch.eye(N).expand(1, 2, N, N)), torch.ones(2), atol=1e-6)
    rand = torch.randn(3, 4, N, N, generator=torch.Generator().manual_seed(0)).softmax(-1)
    nmi = M.attention_nmi(rand)
    assert ((nmi >= 0) & (nmi <= 1)).all()
    # independent formula on one head: I / sqrt(log N * H(k))
    a = rand[0, 0].double()
    pk = a.mean(0)
    mi = (a * (a / pk).log()).sum(1).mean()
    hk = -(pk * pk.log()).sum()
    direct = float(mi / torch.sqrt(math.log(N) * hk))
    single = M.attention_nmi(rand[:1, :1]).item()
    assert single == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError, match="all or patch"):
        M.attention_nmi(rand, tokens="prefix")


def test_alignment_uniformity_negative_alignment_against_loops():
    g = torch.Generator().manual_seed(4)
    f = torch.nn.functional.normalize(torch.randn(12, 5, generator=g), dim=1)
    h = torch.nn.functional.normalize(f + 0.1 * torch.randn(12, 5, generator=g), dim=1)
    ali = sum(float((f[i] - h[i]).norm() ** 2) for i in range(12)) / 12
    pairs = [(i, j) for i in range(12) for j in range(12) if i != j]
    uni = math.log(sum(math.exp(-2 * float((f[i] - f[j]).norm() ** 2)) for i, j in pairs) / len(pairs))
    neg = sum(float((f[i] - f[j]).norm() ** 2) for i, j in pairs) / len(pairs)
    assert M.alignment(f, h, 2) == pytest.approx(ali, rel=1e-6)
    assert M.uniformity(f, 2) == pytest.approx(uni, rel=1e-6)
    assert M.negative_alignment(f, 2) == pytest.approx(neg, rel=1e-6)
    assert M.alignment(f, f) == 0.0


def test_plots_are_written(tmp_path):
    M.plot_heatmap(torch.eye(3), tmp_path / "c.png")
    M.plot_per_head(torch.rand(3, 2), tmp_path / "h.png", "y")
    M.plot_layer_curves({"a": [1, 2, 3]}, tmp_path / "l.png", "y")
    assert all((tmp_path / n).stat().st_size > 1000 for n in ("c.png", "h.png", "l.png"))
