"""Paper Figs. 4 and 5 from the mask generators (no training needed).

    python bootleg/figures.py [--out bootleg/figures] [--images 4096]

* ``fig4_masks.png``: sample masks of I-JEPA's and Bootleg's generators on the 14x14 grid
  (224 px, patch 16): context (visible) tokens blue, one colour per target block (overlaps
  blend), unused tokens black; first 4 samples of worker-batches of 256 with seeds 0-3.
* ``fig5_visibility.png``: per-position rate at which a token is in the context, for
  per-GPU batch sizes 4 ... 1024, both generators; the colour bar marks min and max.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bootleg.masks import BootlegMaskGenerator, IJepaMaskGenerator, visibility_rate
from common.plots import pyplot, save_figure

GRID = (14, 14)
GENERATORS = {"I-JEPA": lambda: IJepaMaskGenerator(GRID), "Bootleg": lambda: BootlegMaskGenerator(GRID)}
TARGET_COLOURS = np.array([[0.2, 0.8, 0.2], [1.0, 0.9, 0.1], [1.0, 0.55, 0.0], [0.9, 0.1, 0.1]])
CONTEXT_COLOUR = np.array([0.15, 0.35, 0.95])
BATCH_SIZES = (4, 16, 64, 256, 1024)


def mask_image(context: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """RGB ``[H, W, 3]`` of one sample: context blue, targets coloured (summed), rest black."""
    n = GRID[0] * GRID[1]
    rgb = np.zeros((n, 3))
    for m, block in enumerate(targets):
        rgb[block.numpy()] += TARGET_COLOURS[m % len(TARGET_COLOURS)] * 0.6
    rgb[context.numpy()] = CONTEXT_COLOUR
    return np.clip(rgb, 0, 1).reshape(*GRID, 3)


def figure4(out: Path, worker_batch: int = 256, seeds=(0, 1, 2, 3), per_batch: int = 4) -> Path:
    fig, axes = pyplot().subplots(len(GENERATORS), len(seeds) * per_batch,
                             figsize=(len(seeds) * per_batch * 0.9, len(GENERATORS) * 1.1))
    for row, (name, make) in enumerate(GENERATORS.items()):
        gen = make()
        for s, seed in enumerate(seeds):
            masks = gen(worker_batch, torch.Generator().manual_seed(seed))
            for i in range(per_batch):
                ax = axes[row, s * per_batch + i]
                ax.imshow(mask_image(masks.context[i], masks.targets[:, i]), interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if s * per_batch + i == 0:
                    ax.set_ylabel(name)
    fig.suptitle("Sample masks (blue: visible, colours: target blocks, black: unused)", fontsize=9)
    return save_figure(fig, out / "fig4_masks.png", dpi=90, tight=False, bbox_inches="tight")


def figure5(out: Path, n_images: int = 4096, batch_sizes=BATCH_SIZES) -> tuple[Path, dict]:
    fig, axes = pyplot().subplots(len(GENERATORS), len(batch_sizes),
                             figsize=(2.2 * len(batch_sizes), 2.2 * len(GENERATORS)))
    summary = {}
    for row, (name, make) in enumerate(GENERATORS.items()):
        gen = make()
        for col, batch in enumerate(batch_sizes):
            rate = visibility_rate(gen, batch, max(n_images, batch), GRID).numpy()
            ax = axes[row, col]
            im = ax.imshow(rate, cmap="viridis", vmin=0, interpolation="nearest")
            bar = fig.colorbar(im, ax=ax, fraction=0.046)
            for value in (rate.min(), rate.max()):
                bar.ax.axhline(value, color="red", linewidth=2)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}, batch {batch}", fontsize=8)
            summary[(name, batch)] = (float(rate.min()), float(rate.max()), float(rate.sum()))
    fig.suptitle("Rate at which each position of the 14x14 grid is visible to the student", fontsize=9)
    return save_figure(fig, out / "fig5_visibility.png", dpi=80, tight=False, bbox_inches="tight"), summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bootleg/figures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
    parser.add_argument("--images", type=int, default=4096, help="images per visibility map")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {figure4(args.out)}")
    path, summary = figure5(args.out, args.images)
    print(f"wrote {path}")
    print("generator, batch: min / max visibility rate, mean context tokens")
    for (name, batch), (lo, hi, tokens) in summary.items():
        print(f"  {name:8s} {batch:5d}: {lo:.3f} / {hi:.3f}, {tokens:.1f}")


if __name__ == "__main__":
    main()
