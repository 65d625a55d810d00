"""SDSSL losses against formulas written out row by row from the paper (Eqs. 1-2, Alg. 1)."""

import math

import pytest
import torch

from common import dist
from sdssl.loss import alpha_at, byol_regression, moco_v3_contrastive, nt_xent


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


class _FakeWorld:
    """Rank ``rank`` of a 2-process world whose other process holds ``other``."""

    def __init__(self, rank, other):
        self._rank, self.other = rank, other

    def rank(self):
        return self._rank

    def _cat(self, x):
        parts = [self.other, x] if self._rank == 1 else [x, self.other]
        return torch.cat(parts)

    def all_gather_nograd(self, x):
        return self._cat(x).detach()

    def all_gather_with_grad(self, x):
        return self._cat(x)


def test_byol_is_two_minus_two_cosine_with_targets_repeated_per_layer():
    torch.manual_seed(0)
    q, z = torch.randn(3 * 4, 8), torch.randn(4, 8)
    expected = sum(2 - 2 * _cos(q[l * 4 + i], z[i]) for l in range(3) for i in range(4)) / 12
    assert byol_regression(q, z).item() == pytest.approx(expected, abs=1e-5)


def _moco_reference(q, keys_all, tau, rank, batch):
    """-log softmax of the positive (index rank*B + i) over all gathered keys, times 2 tau."""
    total, rows = 0.0, q.shape[0]
    for r in range(rows):
        i = r % batch
        sims = [_cos(q[r], k) / tau for k in keys_all]
        log_denominator = math.log(sum(math.exp(s) for s in sims))
        total += -(sims[rank * batch + i] - log_denominator)
    return 2 * tau * total / rows


@pytest.mark.parametrize("rank", [0, 1])
def test_moco_v3_contrastive_scaled_by_two_tau_with_rank_offset_labels(rank):
    torch.manual_seed(1)
    batch, tau = 4, 0.2
    q, k, other = torch.randn(2 * batch, 16), torch.randn(batch, 16), torch.randn(batch, 16)
    world = _FakeWorld(rank, other)
    keys_all = world.all_gather_nograd(k)
    expected = _moco_reference(q, keys_all, tau, rank, batch)
    assert moco_v3_contrastive(q, k, tau, world=world).item() == pytest.approx(expected, rel=1e-5)
    # The 2 tau factor: the same logits at another temperature change by exactly that factor.
    assert moco_v3_contrastive(q, k, 1.0, world=world).item() == pytest.approx(
        _moco_reference(q, keys_all, 1.0, rank, batch), rel=1e-5
    )


def test_moco_v3_keys_get_no_gradient():
    q = torch.randn(4, 8, requires_grad=True)
    k = torch.randn(4, 8, requires_grad=True)
    moco_v3_contrastive(q, k, 0.2).backward()
    assert q.grad is not None and k.grad is None


def _nt_xent_reference(queries, keys_all, tau, rank, local_rows):
    """Row j of this process: positive = other view of the same image; denominator = all
    gathered keys except the row's own same-view key."""
    batch = local_rows // 2
    total, rows = 0.0, queries.shape[0]
    for r in range(rows):
        j = r % local_rows
        own = rank * local_rows + j
        partner = rank * local_rows + (j + batch) % local_rows
        sims = {c: _cos(queries[r], keys_all[c]) / tau for c in range(keys_all.shape[0]) if c != own}
        total += -(sims[partner] - math.log(sum(math.exp(s) for s in sims.values())))
    return total / rows


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_nt_xent_removes_self_similarity_and_finds_the_other_view(rank, n_layers):
    torch.manual_seed(2)
    two_b, tau = 6, 0.2
    keys, other = torch.randn(two_b, 8), torch.randn(two_b, 8)
    queries = keys.repeat(n_layers, 1) + 0.3 * torch.randn(n_layers * two_b, 8)
    world = _FakeWorld(rank, other)
    expected = _nt_xent_reference(queries, world.all_gather_nograd(keys), tau, rank, two_b)
    got = nt_xent(queries, keys, tau, keys_require_grad=False, world=world)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_final_loss_has_no_two_tau_factor_and_self_pairs_do_not_dominate():
    # With queries == keys the self-similarity (cos 1) would be the largest logit; removing it
    # must give exactly the reference value, which excludes it.
    torch.manual_seed(3)
    z = torch.randn(8, 8)
    expected = _nt_xent_reference(z, z, 0.5, 0, 8)
    assert nt_xent(z, z, 0.5, keys_require_grad=True).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_gradient_reaches_keys_only_when_asked():
    z = torch.randn(4, 8, requires_grad=True)
    q = torch.randn(4, 8, requires_grad=True)
    nt_xent(q, z, 0.2, keys_require_grad=False).backward()
    assert z.grad is None and q.grad is not None
    nt_xent(z, z, 0.2, keys_require_grad=True).backward()
    assert z.grad is not None


def test_losses_reject_misaligned_layer_stacks():
    with pytest.raises(ValueError, match="layer-major"):
        byol_regression(torch.randn(5, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="even row count"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4), 0.2, keys_require_grad=True)


def test_alpha_schedule_end_points_and_shape():
    total = 100
    assert alpha_at(0, total, 0.8, "cosine") == 0.0
    assert alpha_at(total, total, 0.8, "cosine") == pytest.approx(0.8)
    assert alpha_at(total - 1, total, 0.8, "cosine") == pytest.approx(0.8 * (1 - math.cos(math.pi * 99 / 100)) / 2)
    assert alpha_at(50, total, 0.8, "cosine") == pytest.approx(0.4)
    values = [alpha_at(s, total, 1.0, "cosine") for s in range(total + 1)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert alpha_at(0, total, 0.8, "constant") == 0.8
    with pytest.raises(ValueError, match="cosine' or 'constant"):
        alpha_at(0, total, 1.0, "linear")


def test_real_single_process_world_is_rank_zero():
    assert dist.world_size() == 1 and dist.rank() == 0
