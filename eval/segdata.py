"""Semantic-segmentation data in the ADE20K layout, and the joint image/mask transforms of the
linear segmentation probe (``eval.segmentation``).

Layout (ADEChallengeData2016)::

    <root>/images/{training,validation}/<name>.jpg
    <root>/annotations/{training,validation}/<name>.png   uint8: 0 = unlabelled, 1..C = classes

Labels are shifted down by one and 0 becomes ``IGNORE`` (mmseg's ``reduce_zero_label``, what
the DINOv2 / iBOT / BEiT ADE20K protocols use), so class k of the file is index k-1.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

IGNORE = 255
SPLITS = ("training", "validation")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class SegmentationFolder(torch.utils.data.Dataset):
    """``(image uint8 [3, H, W], label long [H, W])`` pairs of one split of an ADE20K-layout folder."""

    def __init__(self, root: str | Path, split: str, num_classes: int, subset: int | None = None, seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"segmentation split {split!r}; use one of {SPLITS}")
        self.root, self.split, self.num_classes = Path(root), split, int(num_classes)
        image_dir, label_dir = self.root / "images" / split, self.root / "annotations" / split
        if not image_dir.is_dir() or not label_dir.is_dir():
            raise FileNotFoundError(
                f"eval.seg.data={root}: expected {image_dir} and {label_dir} (the ADE20K layout: "
                "images/{training,validation}/*.jpg, annotations/{training,validation}/*.png); "
                "download ADEChallengeData2016 and pass its root")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no images in {image_dir}")
        missing = [p.name for p in images if not (label_dir / f"{p.stem}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of {image_dir} have no annotation "
                                    f"{label_dir}/<name>.png, e.g. {missing[0]}")
        if subset is not None and subset < len(images):
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:subset]
            images = [images[i] for i in sorted(order.tolist())]
        self.images = images
        self.labels = [label_dir / f"{p.stem}.png" for p in images]
        self.name = f"segfolder:{self.root}"

    def __len__(self) -> int:
        return len(self.images)

    @property
    def hash(self) -> str:
        """sha256 over the file names and sizes (reading every byte of ADE20K per record is too slow)."""
        h = hashlib.sha256()
        for p in (*self.images, *self.labels):
            h.update(f"{p.name}:{p.stat().st_size};".encode())
        return h.hexdigest()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = decode_image(str(self.images[index]), mode=ImageReadMode.RGB)
        raw = decode_image(str(self.labels[index]), mode=ImageReadMode.UNCHANGED)[0].long()
        if tuple(raw.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"{self.labels[index]} is {tuple(raw.shape)}, its image {tuple(image.shape[-2:])}")
        if int(raw.max()) > self.num_classes:
            raise ValueError(f"{self.labels[index]} has label {int(raw.max())} > eval.seg.num_classes="
                             f"{self.num_classes}; set eval.seg.num_classes")
        label = torch.where(raw == 0, torch.full_like(raw, IGNORE), raw - 1)
        return image, label


# --------------------------------------------------------------------------- joint transforms
def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Image bilinear (antialiased) as float in [0, 1], label nearest, to ``size = (H, W)``."""
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, label


def short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(H, W) with the shorter side ``short`` and the aspect ratio kept."""
    scale = short / min(h, w)
    return max(short, round(h * scale)), max(short, round(w * scale))


def random_scale_crop_flip(image: torch.Tensor, label: torch.Tensor, crop: int, scale_range, flip: bool,
                           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """mmseg's train pipeline without photometric distortion: resize the shorter side to
    ``crop x s`` with ``s ~ U(scale_range)``, pad to the crop with 0 / IGNORE, random crop, flip."""
    lo, hi = scale_range
    s = lo + (hi - lo) * float(torch.rand((), generator=gen))
    image, label = resize_pair(image, label, short_side_size(*image.shape[-2:], max(1, round(crop * s))))
    ph, pw = max(0, crop - image.shape[-2]), max(0, crop - image.shape[-1])
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
    top = int(torch.randint(0, image.shape[-2] - crop + 1, (), generator=gen))
    left = int(torch.randint(0, image.shape[-1] - crop + 1, (), generator=gen))
    image, label = image[:, top:top + crop, left:left + crop], label[top:top + crop, left:left + crop]
    if flip and float(torch.rand((), generator=gen)) < 0.5:
        image, label = image.flip(-1), label.flip(-1)
    return image, label


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of sliding windows that cover ``[0, length)`` (the last one flush with the end)."""
    if length <= crop:
        return [0]
    n = math.ceil((length - crop) / stride) + 1
    return sorted({min(i * stride, length - crop) for i in range(n)})
