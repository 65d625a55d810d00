"""SDSSL figures from the mini runs: ``python sdssl/figures.py [--out sdssl/figures]``.

* ``multi_exit.png`` (Fig. 3): linear probe and k-NN top-1 per block, baseline vs SD, per framework;
* ``tsne_<framework>.png`` (Fig. 5): t-SNE of every block's representation, baseline row over SD row;
* ``cka_<framework>.png`` (Fig. 6): linear CKA between all pairs of blocks, baseline beside SD;
* ``alignment_<framework>.png`` (Figs. 7-8): alignment, -uniformity, -uniformity/alignment,
  negative alignment and the ratio R = L^n_ali / L_ali per block, baseline vs SD.

Per-block representations are the class token after the shared final LayerNorm (eval/'s
``cls@l``).  CKA and the alignment family come from eval/'s ``analysis`` protocol, which this
script runs (and records under ``results/sdssl/<run>/analysis.json``) when it is missing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.plots import pyplot, save_figure
from sdssl.tables import LABELS, RESULTS, load_records, per_layer

RUNS = Path("runs") / "sdssl"
FRAMEWORKS = {"simclr": "sd_simclr", "byol": "sd_byol", "moco_v3": "sd_moco_v3"}


def _eval_cfg(run: str) -> dict:
    cfg = OmegaConf.load(RUNS / run / "config.yaml")
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    eval_cfg.pop("protocols")
    return eval_cfg


def analysis_record(run: str) -> dict:
    """eval/'s analysis record of ``run`` (CKA, alignment, uniformity per block), computed once."""
    path = RESULTS / run / "analysis.json"
    if not path.is_file():
        from eval.api import evaluate

        evaluate(RUNS / run / "encoder.pt", "analysis", _eval_cfg(run), out_dir=RESULTS / run,
                 run_info={"run": run, "paper": "sdssl"})
    return json.loads(path.read_text())


def block_features(run: str, n_images: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-block validation features (the cached ones k-NN used) for a seeded draw of images."""
    from eval.api import build_context
    from eval.settings import resolve

    ctx = build_context(RUNS / run / "encoder.pt", resolve(_eval_cfg(run)), RESULTS / run)
    names = [f"cls@{l}" for l in ctx.layers]
    feats = ctx.features("val", names)
    labels = ctx.labels("val")
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n_images]
    return [feats[n][pick].float() for n in names], labels[pick]


def plot_multi_exit(out: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), sharey="row")
    for col, (base, sd) in enumerate(FRAMEWORKS.items()):
        for row, protocol in enumerate(("linear", "knn")):
            ax = axes[row, col]
            for method, style in ((base, "--o"), (sd, "-o")):
                records = load_records(method)
                depth = _depth(records)
                if protocol not in records or not depth:
                    continue
                values = per_layer(records, protocol, depth)
                ax.plot(range(1, depth + 1), values, style, label=LABELS[method])
                ax.set_xticks(range(1, depth + 1))
            ax.set_title(f"{LABELS[base]}: {'linear probe' if protocol == 'linear' else 'k-NN'} per block")
            ax.set_xlabel("block")
            ax.set_ylabel("top-1 (%)")
            ax.legend(fontsize=8)
    return save_figure(fig, out / "multi_exit.png", dpi=90)


def _depth(records: dict) -> int:
    keys = [k for r in records.values() for k in r["metrics"] if k.startswith(("knn/cls@", "linear/cls@"))]
    return max(int(k.split("@")[1].split("/")[0]) for k in keys) if keys else 0


def plot_tsne(out: Path, n_images: int) -> list[Path]:
    from sklearn.manifold import TSNE

    plt = pyplot()
    paths = []
    for base, sd in FRAMEWORKS.items():
        rows = [(m, *block_features(m, n_images)) for m in (base, sd)]
        depth = len(rows[0][1])
        fig, axes = plt.subplots(2, depth, figsize=(2.2 * depth, 4.6))
        for r, (method, feats, labels) in enumerate(rows):
            for l, f in enumerate(feats):
                xy = TSNE(n_components=2, init="pca", perplexity=30, random_state=0).fit_transform(f.numpy())
                ax = axes[r, l]
                ax.scatter(xy[:, 0], xy[:, 1], c=labels.numpy(), cmap="tab10", s=3)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{LABELS[method]} L{l + 1}", fontsize=8)
        paths.append(save_figure(fig, out / f"tsne_{base}.png", dpi=90))
    return paths


def _cka(record: dict, depth: int) -> torch.Tensor:
    matrix = torch.eye(depth)
    for key, value in record["metrics"].items():
        if key.startswith("analysis/cka/"):
            a, b = (int(x) for x in key.rsplit("/", 1)[1].split("-"))
            matrix[a - 1, b - 1] = matrix[b - 1, a - 1] = value
    return matrix


def plot_cka(out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    for base, sd in FRAMEWORKS.items():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), constrained_layout=True)
        for ax, method in zip(axes, (base, sd)):
            record = analysis_record(method)
            depth = len(record["layers"])
            im = ax.imshow(_cka(record, depth).numpy(), vmin=0, vmax=1, cmap="magma", origin="lower",
                           extent=(0.5, depth + 0.5, 0.5, depth + 0.5))
            ax.set_title(f"linear CKA, {LABELS[method]}")
            ax.set_xticks(range(1, depth + 1))
            ax.set_yticks(range(1, depth + 1))
            ax.set_xlabel("block")
            ax.set_ylabel("block")
        fig.colorbar(im, ax=axes.tolist())
        paths.append(save_figure(fig, out / f"cka_{base}.png", dpi=90, tight=False))  # constrained layout
    return paths


ALIGNMENT_PANELS = (("align", "L_ali (alignment)", 1), ("uniformity", "-L_uni", -1),
                    ("unif_align_ratio", "-L_uni / L_ali", 1), ("neg_align", "L^n_ali (negative alignment)", 1),
                    ("align_ratio", "R = L^n_ali / L_ali", 1))


def plot_alignment(out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    for base, sd in FRAMEWORKS.items():
        fig, axes = plt.subplots(1, len(ALIGNMENT_PANELS), figsize=(3.2 * len(ALIGNMENT_PANELS), 3))
        for method, style in ((base, "--o"), (sd, "-o")):
            record = analysis_record(method)
            layers = record["layers"]
            for ax, (key, title, sign) in zip(axes, ALIGNMENT_PANELS):
                ax.plot(layers, [sign * record["metrics"][f"analysis/{key}/layer{l}"] for l in layers], style,
                        label=LABELS[method])
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("block")
                ax.set_xticks(layers)
        axes[0].legend(fontsize=8)
        paths.append(save_figure(fig, out / f"alignment_{base}.png", dpi=90))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("sdssl") / "figures")
    parser.add_argument("--tsne-images", type=int, default=500, help="validation images per t-SNE panel")
    args = parser.parse_args(argv)
    missing = [m for pair in FRAMEWORKS.items() for m in pair
               if not (RUNS / m / "encoder.pt").is_file()]
    if missing:
        raise SystemExit(f"runs missing for {missing}: train them first with `python sdssl/launch.py`")
    written = [plot_multi_exit(args.out), *plot_cka(args.out), *plot_alignment(args.out),
               *plot_tsne(args.out, args.tsne_images)]
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
