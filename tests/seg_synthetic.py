"""Synthetic semantic-segmentation folders in the ADE20K layout that ``eval.segdata`` reads
(``images/<split>/<name>.jpg``, ``annotations/<split>/<name>.png``, 0 = unlabelled), shared by
tests/eval/test_eval_segmentation.py and the paper-scale fixture of tests/paper/conftest.py."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import write_jpeg, write_png

COLOURS = torch.tensor([[220, 30, 30], [30, 200, 40], [40, 50, 230]], dtype=torch.uint8)  # classes 1, 2, 3 (cycling)


def two_region_image(left: int, right: int, height: int, width: int, split_col: int, gen):
    """Class ``left`` on columns < split_col, ``right`` after; colour + noise; a 1-px unlabelled frame."""
    image = torch.empty(3, height, width, dtype=torch.uint8)
    image[:, :, :split_col] = COLOURS[(left - 1) % len(COLOURS)].view(3, 1, 1)
    image[:, :, split_col:] = COLOURS[(right - 1) % len(COLOURS)].view(3, 1, 1)
    noise = torch.randint(-20, 21, image.shape, generator=gen)
    image = (image.int() + noise).clamp(0, 255).to(torch.uint8)
    label = torch.full((1, height, width), left, dtype=torch.uint8)
    label[:, :, split_col:] = right
    label[:, 0, :] = label[:, -1, :] = label[:, :, 0] = label[:, :, -1] = 0
    return image, label


def write_seg_folder(root: Path, counts: dict[str, int], sizes: list[tuple[int, int]],
                     classes: tuple[int, ...] = (1, 2, 3), seed: int = 0) -> Path:
    """``counts[split]`` two-region images per split (``training`` / ``validation``), of sizes
    ``(height, width)`` cycling through ``sizes``, two distinct labels of ``classes`` each, the
    boundary on a multiple of 8 px."""
    gen = torch.Generator().manual_seed(seed)
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            left, right = (classes[j] for j in torch.randperm(len(classes), generator=gen)[:2].tolist())
            height, width = sizes[i % len(sizes)]
            split_col = int(torch.randint(2, width // 8 - 1, (), generator=gen)) * 8
            image, label = two_region_image(left, right, height, width, split_col, gen)
            write_jpeg(image, str(root / "images" / split / f"img_{i:03d}.jpg"), quality=95)
            write_png(label, str(root / "annotations" / split / f"img_{i:03d}.png"))
    return root
