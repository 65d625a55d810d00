"""The mini-scale linear probe standardises features: near-constant features (a huge common
offset, a tiny spread) are probed as well as centred ones, and a per-dimension affine map of
the features changes nothing."""
from __future__ import annotations

import pytest
import torch

from eval import settings
from eval.heads import CachedBatches, HeadSpec, LinearHead, load_probe, save_probe, train_grid

N_CLASSES, DIM = 4, 16


def clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = 1.5 * torch.randn(N_CLASSES, DIM, generator=g)
    g.manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    return centres[labels] + torch.randn(n, DIM, generator=g), labels


def probe(train_x, train_y, val_x, val_y, standardize: bool) -> tuple[float, LinearHead]:
    torch.manual_seed(0)
    head = LinearHead(DIM, N_CLASSES, standardize=standardize)
    if standardize:
        head.fit_standardization(train_x)
    spec = HeadSpec("h", "f", lr=0.1 * 64 / 256)
    res = train_grid({"h": head}, [spec], CachedBatches({"f": train_x}, train_y, 64, seed=0),
                     {"f": val_x}, val_y, epochs=10)
    return res["h"]["top1"], head


def test_standardised_probe_on_near_constant_features_matches_centred_features_and_is_affine_invariant(tmp_path):
    z_train, y_train = clusters(800, seed=1)
    z_val, y_val = clusters(400, seed=2)
    mean = z_train.mean(dim=0)
    centred, _ = probe(z_train - mean, y_train, z_val - mean, y_val, standardize=False)
    assert centred > 80  # the task is learnable

    def near_constant(z):  # a JEPA encoder at init: every image ~ the same vector
        return (1000.0 + 1e-3 * z).float()

    raw, _ = probe(near_constant(z_train), y_train, near_constant(z_val), y_val, standardize=False)
    standardised, head = probe(near_constant(z_train), y_train, near_constant(z_val), y_val, standardize=True)
    assert raw < centred - 30  # the unnormalised head is ill-conditioned here
    assert standardised >= centred - 1.0

    # a per-dimension affine map of the features changes nothing (features float32 can represent:
    # at an offset of 1000 float32 itself keeps only ~16 levels per 1e-3 of spread)
    g = torch.Generator().manual_seed(3)
    a = torch.empty(DIM).uniform_(0.01, 10.0, generator=g)
    b = torch.empty(DIM).uniform_(-50.0, 50.0, generator=g)
    plain, head_plain = probe(z_train, y_train, z_val, y_val, standardize=True)
    mapped, head_mapped = probe(z_train * a + b, y_train, z_val * a + b, y_val, standardize=True)
    assert mapped == plain
    assert torch.allclose(head_plain.linear.weight, head_mapped.linear.weight, atol=1e-4)
    assert torch.allclose(head_plain.linear.bias, head_mapped.linear.bias, atol=1e-4)

    # the statistics travel with the saved probe
    loaded, _ = load_probe(save_probe(tmp_path / "p.pt", head, "f", {"standardize": True}))
    x = near_constant(z_val[:5])
    assert torch.allclose(loaded(x), head.eval()(x))


def test_mini_scale_standardises_every_linear_recipe_and_paper_scale_keeps_them():
    for recipe in ("dino", "mocov3", "sdssl", "sdssl_multiexit", "udi", "mae_bn"):
        assert settings.resolve({"linear": {"protocol": recipe}}).linear.standardize is True
        assert settings.resolve({"scale": "paper", "linear": {"protocol": recipe}}).linear.standardize is False
