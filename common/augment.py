"""Augmentation building blocks on ``torchvision.transforms.v2``.

Every block takes and returns a uint8 (or float) image tensor ``[C, H, W]``; ``normalize``
converts to float and standardises.  Randomness comes from torch's global RNG, which the
data pipeline seeds per sample (see ``common.data.TransformedDataset``).

``MultiCrop`` returns the crops *and* their geometry (boxes in source-pixel coordinates
and flip flags): UDI projects tokens between crops and needs both.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# Per-channel (mean, std) on the [0, 1] scale.
# fashion_mnist / mnist5k / digits were measured on their training splits (the tests
# recompute them); the RGB ones are the published constants of ImageNet, CIFAR and CLIP.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860406,), (0.3530242,)),
    "mnist5k": ((0.1314354,), (0.3086437,)),
    "digits": ((0.3059855,), (0.3763271,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}

_INTERPOLATION = {
    "bicubic": v2.InterpolationMode.BICUBIC,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "nearest": v2.InterpolationMode.NEAREST,
}


def _interpolation(name: str) -> v2.InterpolationMode:
    if name not in _INTERPOLATION:
        raise ValueError(f"interpolation {name!r} unknown; use one of {sorted(_INTERPOLATION)}")
    return _INTERPOLATION[name]


def random_resized_crop(size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        interpolation: str = "bicubic") -> v2.Transform:
    return v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio),
                                interpolation=_interpolation(interpolation), antialias=True)


def flip(p: float = 0.5) -> v2.Transform:
    return v2.RandomHorizontalFlip(p)


def color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p: float = 0.8) -> v2.Transform:
    """Colour jitter applied with probability ``p`` (BYOL/DINO: 0.4, 0.4, 0.2, 0.1, p=0.8).
    On grayscale data (1 channel, or replicated to 3) saturation and hue change nothing;
    brightness and contrast still apply."""
    return v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p=p)


def grayscale(p: float = 0.2) -> v2.Transform:
    """Random grayscale that keeps the channel count (3 stays 3)."""
    return v2.RandomGrayscale(p)


def blur_kernel_size(img_size: int) -> int:
    """Odd kernel of about 10% of the image side (BYOL: 23 px at 224), at least 3."""
    k = max(3, int(round(0.1 * img_size)))
    return k if k % 2 else k + 1


def gaussian_blur(p: float, img_size: int, sigma=(0.1, 2.0)) -> v2.Transform:
    """Gaussian blur with sigma ~ U(sigma) applied with probability ``p``.

    DINO blurs with PIL's ``GaussianBlur(radius)`` (unbounded kernel); torchvision needs a
    finite kernel, so we use BYOL's 10%-of-the-side kernel.
    """
    return v2.RandomApply([v2.GaussianBlur(blur_kernel_size(img_size), sigma=tuple(sigma))], p=p)


def solarize(p: float = 0.2, threshold: float = 128) -> v2.Transform:
    """Solarize uint8 images above ``threshold`` (0..255 scale) with probability ``p``."""
    return v2.RandomSolarize(threshold=threshold, p=p)


class ToRGB(v2.Transform):
    """Replicate a 1-channel image to 3 channels; 3-channel images pass unchanged."""

    def transform(self, inpt, params):
        if inpt.shape[-3] == 1:
            return inpt.expand(*inpt.shape[:-3], 3, *inpt.shape[-2:]).clone()
        return inpt


def to_rgb() -> v2.Transform:
    return ToRGB()


def channel_stats(name: str, channels: int | None = None) -> tuple[list[float], list[float]]:
    """``STATS[name]`` as lists, for ``channels`` input channels: ``channels=3`` repeats
    1-channel statistics for grayscale sets fed to an RGB recipe; None keeps the set's own."""
    if name not in STATS:
        raise KeyError(f"no normalisation statistics for {name!r}; known: {sorted(STATS)}")
    mean, std = STATS[name]
    if channels is not None and channels != len(mean):
        if len(mean) != 1:
            raise ValueError(f"STATS[{name!r}] has {len(mean)} channels, cannot expand to {channels}")
        mean, std = mean * channels, std * channels
    return list(mean), list(std)


def normalize(name: str, channels: int | None = None) -> v2.Transform:
    """uint8 -> float in [0, 1] -> standardise with ``channel_stats(name, channels)``."""
    mean, std = channel_stats(name, channels)
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


# --------------------------------------------------------------------------- multi-crop
@dataclass(frozen=True)
class CropBox:
    """A crop of the source image: top row ``i``, left column ``j``, height ``h``, width ``w``."""
    i: int
    j: int
    h: int
    w: int


def random_resized_crop_box(height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                            attempts: int = 10) -> CropBox:
    """RandomResizedCrop's parameter draw: area ~ U(scale), log-aspect ~ U(log ratio),
    ``attempts`` tries, then a centre crop clamped to ``ratio`` (torchvision's fallback)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (1,)).item())
            j = int(torch.randint(0, width - w + 1, (1,)).item())
            return CropBox(i, j, h, w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


class MultiCrop:
    """``n_global`` global and ``n_local`` local crops of one image (DINO multi-crop).

    Returns ``{"crops": [n_global + n_local tensors], "boxes": LongTensor [V, 4] of
    (i, j, h, w) in source pixels, "flips": BoolTensor [V], "image_hw": LongTensor [2]}``;
    global crops come first.  A flipped crop is the box's content resized, then mirrored
    left-right.

    ``global_transforms`` is one photometric transform per global crop (DINO uses a
    different one for each) or a single transform for all; ``local_transform`` is shared.
    Subclass and override ``sample_geometry`` for constrained geometry (UDI's overlap rule).
    """

    def __init__(self, global_size: int, local_size: int, n_global: int = 2, n_local: int = 0,
                 global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), ratio=(3 / 4, 4 / 3),
                 flip_p: float = 0.5, interpolation: str = "bicubic",
                 global_transforms: Callable | Sequence[Callable] | None = None,
                 local_transform: Callable | None = None):
        if n_global < 1 or n_local < 0:
            raise ValueError(f"need n_global >= 1 and n_local >= 0, got {n_global}, {n_local}")
        if local_scale[1] > global_scale[1] or global_size < local_size:
            raise ValueError("local crops must not be larger than global crops "
                             f"(scales {local_scale} vs {global_scale}, sizes {local_size} vs {global_size})")
        self.global_size, self.local_size = global_size, local_size
        self.n_global, self.n_local = n_global, n_local
        self.global_scale, self.local_scale, self.ratio = tuple(global_scale), tuple(local_scale), tuple(ratio)
        self.flip_p = flip_p
        self.interpolation = _interpolation(interpolation)
        if global_transforms is None or callable(global_transforms):
            global_transforms = [global_transforms] * n_global
        if len(global_transforms) != n_global:
            raise ValueError(f"{len(global_transforms)} global transforms for {n_global} global crops")
        self.global_transforms = list(global_transforms)
        self.local_transform = local_transform

    def sample_geometry(self, height: int, width: int) -> tuple[list[CropBox], list[bool]]:
        """Box and flip flag of every view, globals first; each view draws its box, then its flip."""
        boxes, flips = [], []
        for v in range(self.n_global + self.n_local):
            scale = self.global_scale if v < self.n_global else self.local_scale
            boxes.append(random_resized_crop_box(height, width, scale, self.ratio))
            flips.append(bool(torch.rand(()) < self.flip_p))
        return boxes, flips

    def __call__(self, img: torch.Tensor) -> dict:
        boxes, flips = self.sample_geometry(*img.shape[-2:])
        transforms = self.global_transforms + [self.local_transform] * self.n_local
        crops = []
        for v, (box, flipped, transform) in enumerate(zip(boxes, flips, transforms)):
            size = self.global_size if v < self.n_global else self.local_size
            crop = F.resized_crop(img, box.i, box.j, box.h, box.w, [size, size],
                                  interpolation=self.interpolation, antialias=True)
            if flipped:
                crop = F.horizontal_flip(crop)
            crops.append(transform(crop) if transform is not None else crop)
        return {
            "crops": crops,
            "boxes": torch.tensor([[b.i, b.j, b.h, b.w] for b in boxes], dtype=torch.long),
            "flips": torch.tensor(flips, dtype=torch.bool),
            "image_hw": torch.tensor(img.shape[-2:], dtype=torch.long),
        }
