"""Datasets, subsets, samplers and augmentation blocks of ``common.data``."""
import gzip
import shutil

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from common import data
from common.data import (
    STATS, ChecksumError, DatasetNotFoundError, MultiCrop, TransformedDataset, class_balanced_subset,
    get_dataset, normalize, to_rgb,
)


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data.prepare_fashion_mnist(root)
    return root


# --------------------------------------------------------------------------- Fashion-MNIST
def test_fashion_mnist_shapes_labels_and_hash(fmnist_root):
    train = get_dataset("fashion_mnist", "train", root=fmnist_root)
    test = get_dataset("fashion_mnist", "test", root=fmnist_root)
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == torch.uint8
    assert len(test) == 10000 and train.num_classes == 10
    assert torch.equal(torch.bincount(train.targets), torch.full((10,), 6000))
    image, label = train[5]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and label == int(train.targets[5])
    assert len(train.hash) == 64 and train.hash != test.hash


def test_fashion_mnist_stats_match_training_images(fmnist_root):
    images = get_dataset("fashion_mnist", "train", root=fmnist_root).images.double() / 255
    (mean,), (std,) = STATS["fashion_mnist"]
    assert images.mean().item() == pytest.approx(mean, abs=1e-6)
    assert images.std().item() == pytest.approx(std, abs=1e-6)


def test_prepare_copies_and_verifies(fmnist_root):
    prepared = sorted(p.name for p in (fmnist_root / "fashion_mnist").iterdir())
    assert prepared == sorted(f"{n}.gz" for n in data.FASHION_MNIST_FILES)


def test_prepare_rejects_corrupted_source(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in data.FASHION_MNIST_FILES:
        shutil.copy(data.FASHION_MNIST_SYSTEM_DIR / f"{name}.gz", source)
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not the labels"))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz: sha256"):
        data.prepare_fashion_mnist(tmp_path / "data", source=source)


def test_missing_fashion_mnist_names_the_fetch_commands(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        data.fashion_mnist("train", root=tmp_path / "data", source=tmp_path / "nowhere")
    message = str(err.value)
    assert "apt-get update && apt-get install -y dataset-fashion-mnist" in message
    assert f"python -m common.data prepare --root {tmp_path / 'data'}" in message
    assert "--download" in message and "torchvision" in message


def test_cli_prepare_reports_missing_files(tmp_path, capsys):
    assert data.main(["prepare", "--root", str(tmp_path / "data"), "--source", str(tmp_path / "nowhere")]) == 1
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_unknown_dataset_and_split_list_the_valid_ones(fmnist_root):
    with pytest.raises(KeyError, match="fashion_mnist"):
        get_dataset("fashionmnist", "train")
    with pytest.raises(ValueError, match="'test', 'train'"):
        get_dataset("fashion_mnist", "val", root=fmnist_root)


# --------------------------------------------------------------------------- subsets
def test_class_balanced_subset_is_balanced_and_deterministic():
    targets = torch.arange(10).repeat_interleave(torch.arange(20, 30))  # unequal class sizes
    a = class_balanced_subset(targets, per_class=7, seed=3)
    assert torch.equal(a, class_balanced_subset(targets, per_class=7, seed=3))
    assert not torch.equal(a, class_balanced_subset(targets, per_class=7, seed=4))
    assert torch.equal(torch.bincount(targets[a]), torch.full((10,), 7))
    assert len(torch.unique(a)) == len(a) and torch.equal(a, torch.sort(a).values)
    f = class_balanced_subset(targets, fraction=0.5, seed=0)
    assert torch.equal(torch.bincount(targets[f]), torch.round(torch.arange(20, 30) * 0.5).long())


def test_class_balanced_subset_rejects_impossible_requests():
    targets = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 has 2 examples; per_class must be in 1..2"):
        class_balanced_subset(targets, per_class=3)
    with pytest.raises(ValueError, match="exactly one"):
        class_balanced_subset(targets)


def test_get_dataset_subset(fmnist_root):
    ds = get_dataset("fashion_mnist", "train", root=fmnist_root, subset=300, seed=1)
    again = get_dataset("fashion_mnist", "train", root=fmnist_root, subset=300, seed=1)
    assert len(ds) == 300 and torch.equal(torch.bincount(ds.targets), torch.full((10,), 30))
    assert torch.equal(ds.images, again.images)
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        get_dataset("fashion_mnist", "train", root=fmnist_root, subset=305)


# --------------------------------------------------------------------------- transforms
def test_to_rgb_and_normalize():
    gray = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    rgb = to_rgb()(gray)
    assert rgb.shape == (3, 8, 8) and all(torch.equal(rgb[c], gray[0]) for c in range(3))
    out = normalize("fashion_mnist", channels=3)(rgb)
    (mean,), (std,) = STATS["fashion_mnist"]
    assert torch.allclose(out[2], (gray[0].float() / 255 - mean) / std, atol=1e-6)
    with pytest.raises(KeyError, match="known"):
        normalize("nope")


def test_transformed_dataset_is_seeded_per_epoch_and_index():
    base = data.InMemoryImages("t", torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8),
                               torch.arange(4), list("abcd"), "0" * 64)
    ds = TransformedDataset(base, v2.RandomResizedCrop(8, scale=(0.1, 0.5)), seed=0)
    state = torch.random.get_rng_state()
    first = ds[1][0]
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(first, ds[1][0])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[1][0])


def test_multicrop_shapes_boxes_and_flips():
    torch.manual_seed(0)
    image = torch.arange(3 * 40 * 50, dtype=torch.float32).reshape(3, 40, 50)
    mc = MultiCrop(global_size=24, local_size=10, n_global=2, n_local=3, global_scale=(0.4, 1.0),
                   local_scale=(0.05, 0.3), flip_p=0.5, interpolation="nearest")
    out = mc(image)
    assert [tuple(c.shape) for c in out["crops"]] == [(3, 24, 24)] * 2 + [(3, 10, 10)] * 3
    boxes = out["boxes"]
    assert boxes.shape == (5, 4) and out["flips"].shape == (5,)
    i, j, h, w = boxes.unbind(1)
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= 40).all() and (j + w <= 50).all()
    areas = (h * w).float() / (40 * 50)
    assert (areas[:2] >= 0.4 * 0.9).all() and (areas[2:] <= 0.3 * 1.1).all()
    # each crop is its box's content (mirrored when flipped), resized
    for v, crop in enumerate(out["crops"]):
        size = crop.shape[-1]
        b = boxes[v].tolist()
        expected = v2.functional.resized_crop(image, *b, [size, size],
                                              interpolation=v2.InterpolationMode.NEAREST)
        if out["flips"][v]:
            expected = expected.flip(-1)
        assert torch.equal(crop, expected)
