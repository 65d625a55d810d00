"""Losses against formulas written out independently from the paper's Eqs. 1-3."""

import math

import pytest
import torch

from hybrid_distill.loss import center_targets, feature_distance, relation_distance, whiten


def smooth_l1(d, beta):
    d = d.abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def test_whitening_gives_zero_mean_unit_variance_per_token():
    x = torch.randn(2, 5, 32) * 7 + 3
    w = whiten(x)
    torch.testing.assert_close(w.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-4, rtol=0)


def test_target_centering_none_is_identity_batch_removes_the_channel_mean():
    x = torch.randn(4, 5, 8) + torch.arange(8.0)  # a per-channel offset every image shares
    assert center_targets(x, "none") is x  # the paper's targets, untouched
    c = center_targets(x, "batch")
    want = x - x.reshape(-1, 8).sum(0) / 20  # channel mean over the 4 images x 5 rows
    torch.testing.assert_close(c, want)
    torch.testing.assert_close(c.mean((0, 1)), torch.zeros(8), atol=1e-5, rtol=0)
    z = center_targets(x, "batch_std")
    flat = x.reshape(-1, 8)
    torch.testing.assert_close(z, (x - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + 1e-6))
    torch.testing.assert_close(z.var((0, 1), unbiased=False), torch.ones(8), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="method.target_center='token'"):
        center_targets(x, "token")


@pytest.mark.parametrize("beta,cls_weight", [(2.0, 1.0), (0.5, 3.0)])
def test_feature_distance_is_token_weighted_smooth_l1(beta, cls_weight):
    s, t = torch.randn(3, 4, 6) * 3, torch.randn(3, 4, 6)
    per_token = smooth_l1(s - t, beta).mean(-1)  # [B, N]
    weights = torch.tensor([cls_weight, 1.0, 1.0, 1.0])
    want = sum(float((per_token[b] * weights).sum() / weights.sum()) for b in range(3)) / 3
    assert feature_distance(s, t, beta, cls_weight).item() == pytest.approx(want, rel=1e-5)


def test_relation_distance_forms():
    head_dim = 16
    s = [torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)]
    t = [torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)]
    # scaled: mean smooth-L1 over every element of both layers (Eq. 3 concatenation)
    want = (smooth_l1(s[0] - t[0], 2.0).sum() + smooth_l1(s[1] - t[1], 2.0).sum()) / (2 * s[0].numel())
    assert relation_distance(s, t, head_dim).item() == pytest.approx(want.item(), rel=1e-5)
    # pre_softmax: the unscaled Q K^T = captured * sqrt(d_head)
    r = math.sqrt(head_dim)
    want = (smooth_l1(r * (s[0] - t[0]), 2.0).mean() + smooth_l1(r * (s[1] - t[1]), 2.0).mean()) / 2
    assert relation_distance(s, t, head_dim, "pre_softmax").item() == pytest.approx(want.item(), rel=1e-5)
    # softmax: KL(p_teacher || p_student) per query row, averaged over rows, heads, batch, layers
    kl = []
    for sl, tl in zip(s, t):
        p, q = tl.softmax(-1), sl.softmax(-1)
        kl.append((p * (p.log() - q.log())).sum(-1).mean())
    assert relation_distance(s, t, head_dim, "softmax").item() == pytest.approx(float(sum(kl) / 2), rel=1e-5)
    # without the class token row and column
    want = smooth_l1(s[0][..., 1:, 1:] - t[0][..., 1:, 1:], 2.0).mean()
    assert relation_distance(s[:1], t[:1], head_dim, include_cls=False).item() == pytest.approx(want.item(), rel=1e-5)


def test_relation_distance_rejects_unknown_form_and_shape_mismatch():
    a = [torch.zeros(1, 2, 3, 3)]
    with pytest.raises(ValueError, match="hd.relation_form='kl'"):
        relation_distance(a, a, 8, "kl")
    with pytest.raises(ValueError, match="teacher relations"):
        relation_distance(a, [torch.zeros(1, 4, 3, 3)], 8)
