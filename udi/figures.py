"""Figures: ``python udi/figures.py [--encoder runs/udi/mini/udi/encoder.pt] [--out udi/figures]``.

1. ``srs_samples.png``: one image with its two global crops and a local crop (overlap-constrained,
   paper geometry: 224 / 96 px crops, 14x14 and 6x6 token grids, windows 3 and 2), the
   stratified samples of each student view and their projected positions in the other
   global view (invalid projections crossed out).
2. ``cls_attention.png``: last-block attention of the regular [CLS] and the extra [CLS+]
   token over the patches of a few test images, from a trained UDI encoder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from common.checkpoint import load_encoder
from common.data import get_dataset
from common.plots import pyplot, save_figure
from common.vit import attention_probs
from udi.crops import OverlapMultiCrop
from udi.srs import box_corners, grid_to_image, image_to_grid, srs_maps

REPO = Path(__file__).resolve().parents[1]
COLORS = ("tab:orange", "tab:cyan", "tab:pink")


def sample_image(index: int = 0, size: int = 256) -> torch.Tensor:
    """A Fashion-MNIST image upsampled so the paper's crop geometry applies: uint8 [1, S, S]."""
    image, _ = get_dataset("fashion_mnist", "test", root=str(REPO / "data"))[index]
    return F.interpolate(image[None].float(), size=(size, size), mode="bilinear")[0].round().clamp(0, 255).byte()


def _token_centres(pos: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """Pixel coordinates (x, y) in a crop rendered at ``size`` of grid positions (r, c), with
    the projection's convention that the token grid spans the crop corner to corner."""
    return pos.flip(-1).double() * (size - 1) / (grid - 1)


def draw_srs(out: Path, seed: int = 3) -> Path:
    torch.manual_seed(seed)
    image = sample_image()
    crop = OverlapMultiCrop(224, 96, n_local=1, patch_size=16)
    views = crop(image)
    boxes, flips = views["boxes"][None], views["flips"][None]
    hw = views["image_hw"]
    maps = srs_maps(boxes, flips, hw, 14, 6, 3, 2, generator=torch.Generator().manual_seed(seed))
    ul, br = box_corners(boxes[0], flips[0], hw)

    fig, axes = pyplot().subplots(1, 4, figsize=(13, 3.6))
    axes[0].imshow(image[0], cmap="gray")
    axes[0].set_title("source: global 1, global 2, local")
    for v, color in enumerate(COLORS):
        i, j, h, w = boxes[0, v].tolist()
        axes[0].add_patch(Rectangle((j, i), w, h, fill=False, color=color, lw=2, ls="--" if flips[0, v] else "-"))
    titles = ["global 1", "global 2", "local"]
    for v in range(3):
        ax = axes[v + 1]
        ax.imshow(views["crops"][v][0], cmap="gray")
        flip_note = " (flipped)" if flips[0, v] else ""
        ax.set_title(f"{titles[v]}{flip_note}", color=COLORS[v])
    for v in (0, 1):  # student global v -> projections into global 1 - v
        pos = torch.stack([maps["global_src"][0, v] // 14, maps["global_src"][0, v] % 14], -1)
        src = _token_centres(pos, 14, 224)
        axes[v + 1].scatter(src[:, 0], src[:, 1], s=30, c=COLORS[v], edgecolors="k", label="SRS samples")
        u = grid_to_image(pos, 14, ul[v], br[v])
        t = image_to_grid(u, 14, ul[1 - v], br[1 - v])
        valid = maps["global_valid"][0, v]
        tgt = _token_centres(t, 14, 224)
        axes[2 - v].scatter(tgt[valid, 0], tgt[valid, 1], marker="x", s=40, c=COLORS[v], label="projected")
    local_pos = torch.stack([maps["local_src"][0, 0] // 6, maps["local_src"][0, 0] % 6], -1)
    src = _token_centres(local_pos, 6, 96)
    axes[3].scatter(src[:, 0], src[:, 1], s=30, c=COLORS[2], edgecolors="k")
    for u_view in (0, 1):
        u = grid_to_image(local_pos, 6, ul[2], br[2])
        t = image_to_grid(u, 14, ul[u_view], br[u_view])
        valid = maps["local_valid"][0, 0, u_view]
        tgt = _token_centres(t, 14, 224)
        axes[u_view + 1].scatter(tgt[valid, 0], tgt[valid, 1], marker="+", s=50, c=COLORS[2])
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("UDI stratified random sampling: dots = samples of a view, x / + = their projection "
                 "(valid only) into the other global view", fontsize=9)
    return save_figure(fig, out / "srs_samples.png", dpi=70)


def draw_attention(encoder_path: Path, out: Path, n_images: int = 4) -> Path | None:
    if not encoder_path.is_file():
        print(f"no encoder at {encoder_path}: run `python udi/launch.py` first; skipping the attention figure")
        return None
    vit, meta, _ = load_encoder(encoder_path)
    if vit.num_class_tokens < 2:
        raise ValueError(f"{encoder_path} has one class token; the figure needs a UDI encoder (cls and cls_plus)")
    vit.eval()
    data = get_dataset("fashion_mnist", "test", root=str(REPO / "data"))
    images = torch.stack([data[i][0] for i in range(n_images)]).float() / 255
    mean, std = torch.tensor(meta["mean"]).view(1, -1, 1, 1), torch.tensor(meta["std"]).view(1, -1, 1, 1)
    attn = attention_probs(vit, (images - mean) / std, layers=[vit.depth])[vit.depth]  # [B, H, T, T]
    P, (gh, gw) = vit.num_prefix_tokens, vit.grid_size
    fig, axes = pyplot().subplots(3, n_images, figsize=(2.2 * n_images, 6.6))
    for b in range(n_images):
        axes[0, b].imshow(images[b, 0], cmap="gray")
        for row, (token, name) in enumerate(((0, "[CLS]"), (1, "[CLS+]")), start=1):
            heat = attn[b, :, token, P:].mean(0).reshape(gh, gw)
            axes[row, b].imshow(heat, cmap="inferno")
            if b == 0:
                axes[row, 0].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"last-block attention (head mean) of both class tokens\n{encoder_path.parent.name}, step {meta.get('step')}",
                 fontsize=9)
    return save_figure(fig, out / "cls_attention.png", dpi=70)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, default=REPO / "runs/udi/mini/udi/encoder.pt")
    parser.add_argument("--out", type=Path, default=REPO / "udi/figures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (draw_srs(args.out), draw_attention(args.encoder, args.out)):
        if path is not None:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
