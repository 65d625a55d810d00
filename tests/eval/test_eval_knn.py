import pytest
import torch

from eval.knn import knn_classify


def test_knn_matches_hand_computed_weighted_vote():
    # Train points on the unit circle; the test point sits at angle 0.
    angles = torch.tensor([0.1, 0.2, -0.3, 2.0, 3.0])
    train = torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.tensor([0, 1, 1, 2, 2])
    test = torch.tensor([[1.0, 0.0]])
    T = 0.07
    # k=3 neighbours: angles 0.1 (class 0), 0.2 (class 1), -0.3 (class 1); sims = cos(angle)
    w = {0: torch.tensor(0.1).cos() / T, 1: [torch.tensor(0.2).cos() / T, torch.tensor(-0.3).cos() / T]}
    score0 = float(w[0].exp())
    score1 = float(w[1][0].exp() + w[1][1].exp())
    expected = 0 if score0 > score1 else 1
    assert expected == 1  # two slightly farther votes beat one close vote at T=0.07
    res = knn_classify(train, labels, test, torch.tensor([expected]), num_classes=3, ks=[1, 3], T=T)
    assert res[3]["top1"] == 100.0
    res1 = knn_classify(train, labels, test, torch.tensor([0]), num_classes=3, ks=[1], T=T)
    assert res1[1]["top1"] == 100.0  # the single nearest neighbour is class 0
    # at a tiny temperature the closest point dominates the k=3 vote -> class 0
    assert knn_classify(train, labels, test, torch.tensor([0]), 3, ks=[3], T=0.001)[3]["top1"] == 100.0


def test_knn_is_invariant_to_feature_scale_and_chunking():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(300, 16, generator=g), torch.randn(70, 16, generator=g)
    ytr, yte = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (70,), generator=g)
    base = knn_classify(train, ytr, test, yte, 5, ks=[10, 20], chunks=1)
    scaled = knn_classify(train * 37.0, ytr, test * 0.01, yte, 5, ks=[10, 20], chunks=7)
    assert base == scaled
    per_row_scale = torch.rand(300, 1, generator=g) + 0.1
    assert knn_classify(train * per_row_scale, ytr, test, yte, 5, ks=[10, 20], chunks=3) == base


def test_knn_top5_counts_any_of_five_best_classes():
    train = torch.eye(6)
    labels = torch.arange(6)
    test = torch.ones(1, 6) + torch.tensor([[0, 0, 0, 0, 0, 5.0]])  # closest to class 5
    res = knn_classify(train, labels, test, torch.tensor([5]), 6, ks=[6])
    assert res[6]["top1"] == 100.0 and res[6]["top5"] == 100.0


def test_knn_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="same feature"):
        knn_classify(torch.randn(10, 4), torch.zeros(10), torch.randn(3, 5), torch.zeros(3), 2)
