"""Datasets, subsets, samplers and augmentation blocks of ``common.data``."""
import gzip
import shutil
from pathlib import Path

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
    image.zero_()  # samples are copies: a transform writing in place cannot corrupt the dataset
    assert train.images[5].any()
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
    (tmp_path / "data").mkdir()
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


def test_transformed_dataset_applies_the_transform():
    base = data.InMemoryImages("t", torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8),
                               torch.arange(4), list("abcd"), "0" * 64)
    ds = TransformedDataset(base, normalize("imagenet"))
    image, label = ds[2]
    assert len(ds) == 4 and label == 2 and image.dtype == torch.float32
    torch.testing.assert_close(image, normalize("imagenet")(base.images[2].permute(2, 0, 1)))


def test_multicrop_shapes_boxes_and_flips():
    torch.manual_seed(0)
    image = torch.arange(3 * 40 * 50, dtype=torch.float32).reshape(3, 40, 50)
    mc = MultiCrop(global_size=24, local_size=10, n_global=2, n_local=3, global_scale=(0.4, 1.0),
                   local_scale=(0.05, 0.3), flip_p=0.5, interpolation="nearest")
    out = mc(image)
    assert [tuple(c.shape) for c in out["crops"]] == [(3, 24, 24)] * 2 + [(3, 10, 10)] * 3
    boxes = out["boxes"]
    assert boxes.shape == (5, 4) and out["flips"].shape == (5,) and out["image_hw"].tolist() == [40, 50]
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


# --------------------------------------------------------------------------- MNIST-5k, digits
@pytest.fixture(scope="module")
def mnist5k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data.prepare_mnist5k(root)
    return root


def test_mnist5k_splits_and_stats(mnist5k_root):
    tmp_path = mnist5k_root
    train = get_dataset("mnist5k", "train", root=tmp_path)
    test = get_dataset("mnist5k", "test", root=tmp_path)
    assert train.images.shape == (4000, 28, 28, 1) and len(test) == 1000
    assert torch.equal(torch.bincount(train.targets), torch.full((10,), 400))
    assert torch.equal(torch.bincount(test.targets), torch.full((10,), 100))
    both = torch.cat([train.images, test.images]).flatten(1)
    assert len(torch.unique(both, dim=0)) == len(torch.unique(
        torch.from_numpy(np.load(tmp_path / "mnist5k" / "mnist5k.npz")["images"]).flatten(1), dim=0))
    x = train.images.double() / 255
    (mean,), (std,) = STATS["mnist5k"]
    assert x.mean().item() == pytest.approx(mean, abs=1e-6) and x.std().item() == pytest.approx(std, abs=1e-6)


def test_mnist5k_rejects_a_tampered_copy(mnist5k_root, tmp_path):
    arrays = dict(np.load(mnist5k_root / "mnist5k" / "mnist5k.npz"))
    path = tmp_path / "mnist5k" / "mnist5k.npz"
    path.parent.mkdir()
    arrays["labels"][0] = (arrays["labels"][0] + 1) % 10
    np.savez(path, **arrays)
    with pytest.raises(ChecksumError, match="`python -m common.data prepare --root .*` replaces it"):
        get_dataset("mnist5k", "train", root=tmp_path)
    data.prepare_mnist5k(tmp_path)  # prepare replaces a copy that fails verification
    assert len(get_dataset("mnist5k", "train", root=tmp_path)) == 4000


def test_digits_splits_and_stats():
    train, test = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (8, 8, 1)
    assert train.images.max() == 255
    counts = torch.bincount(test.targets) / (torch.bincount(test.targets) + torch.bincount(train.targets))
    assert ((counts - 0.2).abs() < 0.02).all()
    x = train.images.double() / 255
    (mean,), (std,) = STATS["digits"]
    assert x.mean().item() == pytest.approx(mean, abs=1e-6) and x.std().item() == pytest.approx(std, abs=1e-6)


# --------------------------------------------------------------------------- ImageFolder
def _write_folder(root, classes=("cat", "dog", "eel"), per_class=4, size=(12, 10)):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, cls in enumerate(classes):
        (root / "train" / cls).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            ext = "JPEG" if k % 2 else "png"
            Image.fromarray(pixels).save(root / "train" / cls / f"img{k}.{ext}")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_imagefolder_loads_rgb_uint8_with_sorted_classes(tmp_path):
    _write_folder(tmp_path)
    ds = get_dataset(f"imagefolder:{tmp_path}", "train")
    assert ds.classes == ["cat", "dog", "eel"] and len(ds) == 12 and ds.images is None
    assert torch.equal(ds.targets, torch.arange(3).repeat_interleave(4))
    image, label = ds[5]
    assert image.shape == (3, 12, 10) and image.dtype == torch.uint8 and label == 1
    from PIL import Image
    expected = np.array(Image.open(tmp_path / "train" / "dog" / "img0.png").convert("RGB"))
    assert torch.equal(ds[4][0], torch.from_numpy(expected).permute(2, 0, 1))
    sub = get_dataset(f"imagefolder:{tmp_path}", "train", subset=6, seed=0)
    assert torch.equal(torch.bincount(sub.targets), torch.full((3,), 2))
    assert sub.hash == ds.hash and len(ds.hash) == 64


def test_imagefolder_hash_tracks_the_listing(tmp_path):
    _write_folder(tmp_path)
    before = get_dataset(f"imagefolder:{tmp_path}", "train").hash
    (tmp_path / "train" / "eel" / "img0.png").unlink()
    assert get_dataset(f"imagefolder:{tmp_path}", "train").hash != before


def test_truncated_jpeg_is_named_or_skipped_and_counted(tmp_path, caplog):
    _write_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "img1.JPEG"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    ds = get_dataset(f"imagefolder:{tmp_path}", "train")
    with pytest.raises(data.CorruptImageError, match=r"img1\.JPEG.*skip_corrupt=True"):
        ds[5]
    skipping = get_dataset(f"imagefolder:{tmp_path}", "train", skip_corrupt=True)
    with caplog.at_level("WARNING", logger="common.data"):
        image, label = skipping[5]
    assert torch.equal(image, ds[6][0]) and label == int(ds.targets[6])  # the next sample instead
    assert skipping.skipped == 1 and "1 skipped" in caplog.text and "img1.JPEG" in caplog.text


def test_imagefolder_missing_split_explains_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"<root>/<split>/<class>/<image>"):
        get_dataset(f"imagefolder:{tmp_path}", "val")
    (tmp_path / "val" / "empty_class").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no images"):
        get_dataset(f"imagefolder:{tmp_path}", "val")


# --------------------------------------------------------------------------- CIFAR
def _write_cifar(root, kind, n_per_file=6, num_classes=10):
    import pickle
    rng = np.random.default_rng(1)
    folder, splits, meta, label_key, names_key, *_ = data._CIFAR[kind]
    directory = root / folder
    directory.mkdir(parents=True)
    written = {}
    for split, files in splits.items():
        for name in files:
            images = rng.integers(0, 256, (n_per_file, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, num_classes, n_per_file).tolist()
            with open(directory / name, "wb") as f:
                pickle.dump({"data": images.reshape(n_per_file, -1), label_key: labels}, f)
            written.setdefault(split, []).append((images, labels))
    with open(directory / meta, "wb") as f:
        pickle.dump({names_key: [f"class{i}" for i in range(num_classes)]}, f)
    return written


@pytest.mark.parametrize("kind,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickle_loader(tmp_path, kind, num_classes):
    written = _write_cifar(tmp_path, kind, num_classes=num_classes)
    for split in ("train", "test"):
        ds = get_dataset(f"{kind}:{tmp_path}", split)
        images = np.concatenate([im for im, _ in written[split]])
        labels = sum((lab for _, lab in written[split]), [])
        assert ds.images.shape == (len(images), 32, 32, 3) and ds.num_classes == num_classes
        assert torch.equal(ds[3][0], torch.from_numpy(images[3]))  # CHW round trip
        assert ds.targets.tolist() == labels
    extracted = tmp_path / data._CIFAR[kind][0]
    assert get_dataset(f"{kind}:{extracted}", "test").hash == ds.hash  # the folder itself works too


def test_cifar_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"torchvision\.datasets\.CIFAR10\(.*download=True"):
        get_dataset(f"cifar10:{tmp_path}", "train")
    _write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(data.CorruptImageError, match="data_batch_3"):
        get_dataset(f"cifar10:{tmp_path}", "train")


# --------------------------------------------------------------------------- sampler
def _epoch(n, replicas, epoch, seed=0, drop_last=True, start=None):
    shards = []
    for rank in range(replicas):
        s = data.ResumableDistributedSampler(n, replicas, rank, seed=seed, drop_last=drop_last)
        s.set_epoch(epoch)
        if start is not None:
            s.set_start_batch(*start)
        shards.append(list(s))
        assert len(s) == len(shards[-1])
    return shards


def test_sampler_shards_are_disjoint_and_cover_the_permutation():
    shards = _epoch(103, 4, epoch=0)
    flat = sum(shards, [])
    assert all(len(s) == 25 for s in shards) and len(set(flat)) == 100
    assert _epoch(103, 4, epoch=0) == shards  # same permutation per (seed, epoch)
    assert _epoch(103, 4, epoch=1) != shards and _epoch(103, 4, epoch=0, seed=1) != shards
    padded = _epoch(10, 4, epoch=0, drop_last=False)
    assert all(len(s) == 3 for s in padded) and set(sum(padded, [])) == set(range(10))


def test_sampler_resumes_mid_epoch_exactly():
    full = _epoch(64, 2, epoch=3)
    resumed = _epoch(64, 2, epoch=3, start=(5, 4))
    assert [s[20:] for s in full] == resumed
    sampler = data.ResumableDistributedSampler(64, 2, 0)
    sampler.set_start_batch(5, 4)
    sampler.set_epoch(4)  # a new epoch starts from its beginning
    assert len(sampler) == 32
    with pytest.raises(ValueError, match="outside this rank's 32 samples"):
        sampler.set_start_batch(9, 4)
    with pytest.raises(ValueError, match=r"rank must be in 0\.\.1"):
        data.ResumableDistributedSampler(64, 2, 2)
    unshuffled = data.ResumableDistributedSampler(6, 2, 1, shuffle=False)
    assert list(unshuffled) == [1, 3, 5]


def test_multicrop_applies_one_transform_per_global_and_a_shared_local_one():
    image = torch.rand(1, 20, 20) + 1
    mc = MultiCrop(8, 4, n_global=2, n_local=2, global_transforms=[lambda x: x * 0, lambda x: x * 0 + 7],
                   local_transform=lambda x: -x)
    crops = mc(image)["crops"]
    assert (crops[0] == 0).all() and (crops[1] == 7).all() and (crops[2] < 0).all() and (crops[3] < 0).all()
    with pytest.raises(ValueError, match="3 global transforms for 2 global crops"):
        MultiCrop(8, 4, global_transforms=[None] * 3)
    with pytest.raises(ValueError, match="local crops must not be larger"):
        MultiCrop(8, 16)


def test_prepare_download_uses_torchvision_layout(tmp_path, monkeypatch):
    """--download: torchvision leaves the .gz files in <tmp>/FashionMNIST/raw (faked here: no network)."""
    import torchvision.datasets

    def fake_fashion_mnist(root, train, download):
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        prefix = "train" if train else "t10k"
        for name in data.FASHION_MNIST_FILES:
            if name.startswith(prefix):  # regzipped: different .gz bytes, same content
                raw.joinpath(f"{name}.gz").write_bytes(
                    gzip.compress(gzip.decompress((data.FASHION_MNIST_SYSTEM_DIR / f"{name}.gz").read_bytes()),
                                  compresslevel=1))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_fashion_mnist)
    dest = data.prepare_fashion_mnist(tmp_path / "data", source=tmp_path / "nowhere", download=True)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in data.FASHION_MNIST_FILES)
    assert len(data.fashion_mnist("test", root=tmp_path / "data", source=tmp_path / "nowhere")) == 10000


def test_photometric_blocks_behave_as_their_definitions():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    solar = data.solarize(p=1.0, threshold=128)(image)
    assert torch.equal(solar, torch.where(image >= 128, 255 - image, image))
    gray = data.grayscale(p=1.0)(image)
    assert gray.shape == (3, 32, 32) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.equal(data.flip(p=1.0)(image), image.flip(-1))
    assert data.blur_kernel_size(224) == 23 and data.blur_kernel_size(28) == 3
    blurred = data.gaussian_blur(p=1.0, img_size=32, sigma=(2.0, 2.0))(image).float()
    assert blurred.std() < 0.5 * image.float().std()  # white noise loses most of its variance
    assert torch.equal(data.gaussian_blur(p=0.0, img_size=32)(image), image)
    assert data.random_resized_crop(20, scale=(0.2, 1.0))(image).shape == (3, 20, 20)
    with pytest.raises(ValueError, match=r"use one of \['bicubic', 'bilinear', 'nearest'\]"):
        data.random_resized_crop(20, interpolation="lanczos")
