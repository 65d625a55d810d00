"""Datasets, subsets, samplers and the data-preparation CLI (the ``common.data`` surface).

Every dataset is a ``LabeledImages``: a map-style dataset of ``(image, label)`` where the
image is a uint8 tensor ``[C, H, W]`` (what ``torchvision.transforms.v2`` consumes) and the
label an int.  In-memory sets keep all images in ``.images`` (uint8 ``[N, H, W, C]``).

    get_dataset("fashion_mnist", "train", root="data", subset=600, seed=0)
    get_dataset("imagefolder:/datasets/imagenet", "val")
    python -m common.data prepare --root data

The augmentation blocks live in ``common.augment`` and are re-exported here.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import math
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from common.augment import (  # noqa: F401  (re-exported: common.data is the import surface)
    STATS, CropBox, MultiCrop, blur_kernel_size, color_jitter, flip, gaussian_blur, grayscale,
    normalize, random_resized_crop, random_resized_crop_box, solarize, to_rgb,
)

log = logging.getLogger(__name__)

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_APT = "apt-get update && apt-get install -y dataset-fashion-mnist"
# sha256 of the *decompressed* IDX files: the Debian package and torchvision's mirror gzip
# the same bytes differently, so the .gz hashes differ while the content is identical.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_SPLITS = {"train": "train", "test": "t10k"}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message names the command that fetches them."""


class ChecksumError(RuntimeError):
    """A prepared file does not have the expected sha256."""


class CorruptImageError(RuntimeError):
    """An image file cannot be decoded; the message names the file."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def combine_hashes(hashes: Sequence[str]) -> str:
    """One sha256 for a set of files (order-sensitive)."""
    return sha256_bytes("\n".join(hashes).encode())


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy through a temp file + rename so concurrent readers never see a partial file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- datasets
class LabeledImages(Dataset):
    """Map-style dataset of ``(uint8 image [C, H, W], int label)``.

    Attributes: ``name``, ``targets`` (LongTensor [N]), ``num_classes``, ``classes``,
    ``hash`` (sha256 of the prepared files, for result records), ``images`` (uint8
    ``[N, H, W, C]`` for in-memory sets, else None).
    """

    images: torch.Tensor | None = None

    def __init__(self, name: str, targets: torch.Tensor, classes: Sequence[str], hash: str):
        self.name = name
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.hash = hash

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.load_image(index), int(self.targets[index])

    def load_image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def subset(self, indices) -> LabeledImages:
        """A copy restricted to ``indices`` (same name, classes and hash)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, classes={self.num_classes})"


class InMemoryImages(LabeledImages):
    """All images in one uint8 tensor ``[N, H, W, C]``."""

    def __init__(self, name: str, images: torch.Tensor, targets, classes: Sequence[str], hash: str):
        super().__init__(name, targets, classes, hash)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(self.targets):
            raise ValueError(f"{len(images)} images but {len(self.targets)} labels")
        self.images = images

    def load_image(self, index: int) -> torch.Tensor:
        return self.images[index].permute(2, 0, 1)

    def subset(self, indices) -> InMemoryImages:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return InMemoryImages(self.name, self.images[indices], self.targets[indices], self.classes, self.hash)


# ---- Fashion-MNIST
def _fashion_mnist_missing_message(root: Path, source: Path) -> str:
    apt = FASHION_MNIST_APT if os.geteuid() == 0 else f"sudo sh -c '{FASHION_MNIST_APT}'"
    return (
        f"Fashion-MNIST not found: neither the prepared copy in {root / 'fashion_mnist'} nor the "
        f"system copy in {source} exists. Install it with\n    {apt}\n"
        f"then run\n    python -m common.data prepare --root {root}\n"
        f"or, where the internet is reachable, download it with torchvision's downloader:\n"
        f"    python -m common.data prepare --root {root} --download"
    )


def _verify_idx(path: Path, name: str) -> bytes:
    """Decompress an IDX .gz file and check its content hash; return the raw bytes."""
    raw = gzip.decompress(path.read_bytes())
    digest = sha256_bytes(raw)
    if digest != FASHION_MNIST_FILES[name]:
        raise ChecksumError(
            f"{path}: sha256 of the decompressed content is {digest}, expected "
            f"{FASHION_MNIST_FILES[name]}. Delete it and run `python -m common.data prepare --root "
            f"{path.parent.parent}`.")
    return raw


def prepare_fashion_mnist(root: str | os.PathLike = "data", source: str | os.PathLike = FASHION_MNIST_SYSTEM_DIR,
                          download: bool = False) -> Path:
    """Copy the four IDX .gz files into ``root/fashion_mnist`` and verify them by sha256.

    ``download=True`` fetches them with torchvision's downloader instead of the Debian package.
    """
    root, source = Path(root), Path(source)
    dest = root / "fashion_mnist"
    if download:
        with tempfile.TemporaryDirectory() as tmp:
            from torchvision.datasets import FashionMNIST
            for train in (True, False):
                FashionMNIST(tmp, train=train, download=True)
            _copy_fashion_mnist(Path(tmp) / "FashionMNIST" / "raw", dest, root)
    else:
        _copy_fashion_mnist(source, dest, root)
    return dest


def _copy_fashion_mnist(source: Path, dest: Path, root: Path) -> None:
    for name in FASHION_MNIST_FILES:
        target = dest / f"{name}.gz"
        if target.exists():
            try:
                _verify_idx(target, name)
                continue
            except ChecksumError:
                log.warning("replacing %s: checksum mismatch", target)
        src = source / f"{name}.gz"
        if not src.exists():
            raise DatasetNotFoundError(_fashion_mnist_missing_message(root, source))
        _verify_idx(src, name)
        _copy_atomic(src, target)
        log.info("prepared %s", target)


@lru_cache(maxsize=4)
def _load_fashion_mnist(directory: str, split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    prefix = FASHION_MNIST_SPLITS[split]
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images_raw = _verify_idx(Path(directory) / f"{images_name}.gz", images_name)
    labels_raw = _verify_idx(Path(directory) / f"{labels_name}.gz", labels_name)
    n, h, w = np.frombuffer(images_raw, dtype=">i4", count=3, offset=4)
    images = np.frombuffer(images_raw, dtype=np.uint8, offset=16).reshape(n, h, w, 1)
    labels = np.frombuffer(labels_raw, dtype=np.uint8, offset=8).astype(np.int64)
    digest = combine_hashes([FASHION_MNIST_FILES[images_name], FASHION_MNIST_FILES[labels_name]])
    return torch.from_numpy(images.copy()), torch.from_numpy(labels), digest


def fashion_mnist(split: str, root: str | os.PathLike = "data",
                  source: str | os.PathLike = FASHION_MNIST_SYSTEM_DIR) -> InMemoryImages:
    """Fashion-MNIST (60k train / 10k test, 28x28 gray). Prepares the copy under ``root``
    from the Debian package on first use."""
    if split not in FASHION_MNIST_SPLITS:
        raise ValueError(f"Fashion-MNIST split {split!r} unknown; use one of {sorted(FASHION_MNIST_SPLITS)}")
    root = Path(root)
    directory = root / "fashion_mnist"
    if not all((directory / f"{name}.gz").exists() for name in FASHION_MNIST_FILES):
        prepare_fashion_mnist(root, source)
    images, labels, digest = _load_fashion_mnist(str(directory.resolve()), split)
    return InMemoryImages("fashion_mnist", images, labels, FASHION_MNIST_CLASSES, digest)


# --------------------------------------------------------------------------- subsets
def class_balanced_subset(targets, per_class: int | None = None, fraction: float | None = None,
                          seed: int = 0) -> torch.Tensor:
    """Sorted indices of a deterministic class-balanced subset.

    Give exactly one of ``per_class`` (the same count from every class) or ``fraction``
    (``round(fraction * n_c)`` from each class c, at least 1).  The draw depends only on
    ``(targets, per_class | fraction, seed)``.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction")
    targets = torch.as_tensor(targets, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(targets).tolist():
        members = torch.nonzero(targets == c).flatten()
        if per_class is not None:
            k = per_class
            if not 0 < k <= len(members):
                raise ValueError(f"class {c} has {len(members)} examples; per_class must be in 1..{len(members)}, got {k}")
        else:
            if not 0 < fraction <= 1:
                raise ValueError(f"fraction must be in (0, 1], got {fraction}")
            k = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.sort(torch.cat(chosen)).values


def subset_indices(targets, subset: int | float, seed: int = 0) -> torch.Tensor:
    """``subset`` as used by ``get_dataset``: an int is a total count split evenly over the
    classes (it must be a multiple of the number of classes), a float in (0, 1] a fraction
    of every class."""
    num_classes = len(torch.unique(torch.as_tensor(targets)))
    if isinstance(subset, float):
        return class_balanced_subset(targets, fraction=subset, seed=seed)
    if subset % num_classes:
        raise ValueError(f"subset={subset} is not a multiple of the {num_classes} classes; "
                         f"use e.g. {max(1, subset // num_classes) * num_classes}")
    return class_balanced_subset(targets, per_class=subset // num_classes, seed=seed)


# --------------------------------------------------------------------------- registry
_LOADERS: dict[str, Callable[..., LabeledImages]] = {"fashion_mnist": fashion_mnist}


def get_dataset(name: str, split: str, root: str | os.PathLike = "data", subset: int | float | None = None,
                seed: int = 0, **kwargs) -> LabeledImages:
    """A dataset by name: ``fashion_mnist``, ``mnist5k``, ``digits``, ``imagefolder:<path>``,
    ``cifar10:<path>``, ``cifar100:<path>``; optionally a class-balanced ``subset``
    (see ``subset_indices``) drawn with ``seed``."""
    kind, _, path = name.partition(":")
    if kind not in _LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(_LOADERS)} "
                       "(path-based ones as 'imagefolder:<path>', 'cifar10:<path>', 'cifar100:<path>')")
    dataset = _LOADERS[kind](split, path, **kwargs) if path else _LOADERS[kind](split, root, **kwargs)
    if subset is not None:
        dataset = dataset.subset(subset_indices(dataset.targets, subset, seed))
    return dataset


class TransformedDataset(Dataset):
    """``(transform(image), label)``; with ``seed`` set, sample ``index`` of epoch ``e`` draws
    its augmentation from a generator seeded by ``(seed, e, index)``, so augmentations are
    reproducible and a resumed run sees the same ones (global RNG state is left untouched)."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int | None = None):
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        if self.seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.transform(image), label


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends on all of ``(seed, epoch, index)``."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="copy and verify the embedded datasets under --root")
    prep.add_argument("--root", default="data")
    prep.add_argument("--source", default=str(FASHION_MNIST_SYSTEM_DIR),
                      help="directory holding the Fashion-MNIST .gz files (the Debian package's)")
    prep.add_argument("--download", action="store_true",
                      help="fetch Fashion-MNIST with torchvision's downloader instead of the Debian package")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dest = prepare_fashion_mnist(args.root, args.source, download=args.download)
    except (DatasetNotFoundError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"fashion_mnist: {dest} verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
