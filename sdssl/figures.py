"""SDSSL figures from the runs of an experiment (default: the mini comparison):
``python sdssl/figures.py [key=value ...] [--prefix RUN_PREFIX] [--out sdssl/figures]``.

* ``multi_exit.png`` (Fig. 3): linear probe and k-NN top-1 per block, baseline vs SD, per framework;
* ``tsne_<framework>.png`` (Fig. 5): t-SNE of every block's representation, baseline row over SD row;
* ``cka_<framework>.png`` (Fig. 6): linear CKA between all pairs of blocks, baseline beside SD;
* ``alignment_<framework>.png`` (Figs. 7-8): alignment, -uniformity, -uniformity/alignment,
  negative alignment and the ratio R = L^n_ali / L_ali per block, baseline vs SD.

The overrides select the runs as for ``sdssl/launch.py`` (``experiment=table1 --prefix table1-s16``
for the ViT-S/16 runs of Table 1). Per-block representations are the class token after the
shared final LayerNorm (eval/'s ``cls@l``). CKA and the alignment family come from eval/'s
``analysis`` protocol, which this script runs (into the run's records directory) unless a
record of the same encoder under the same settings is there.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.checkpoint import sha256_file
from common.plots import pyplot, save_figure
from common.train import run_dir_of
from eval.records import records_dir
from eval.tables import per_layer, run_records
from sdssl.tables import LABELS

FRAMEWORKS = {"simclr": "sd_simclr", "byol": "sd_byol", "moco_v3": "sd_moco_v3"}


def _eval_cfg(run) -> dict:
    eval_cfg = OmegaConf.to_container(run.cfg.eval, resolve=True)
    eval_cfg.pop("protocols")
    return eval_cfg


def analysis_record(run) -> dict:
    """eval/'s analysis record of ``run`` (CKA, alignment, uniformity per block), computed once per encoder."""
    from eval.api import evaluate_unless_current

    encoder = run_dir_of(run.cfg) / "encoder.pt"
    [record] = evaluate_unless_current(encoder, "analysis", _eval_cfg(run), out_dir=records_dir(run.cfg),
                                       run_info={"run": run.name, "paper": "sdssl"},
                                       checkpoint_sha256=sha256_file(encoder))
    return record


def block_features(run, n_images: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-block validation features (the cached ones k-NN used) for a seeded draw of images."""
    from eval.api import build_context
    from eval.settings import resolve

    ctx = build_context(run_dir_of(run.cfg) / "encoder.pt", resolve(_eval_cfg(run)), records_dir(run.cfg))
    names = [f"cls@{l}" for l in ctx.layers]
    feats = ctx.features("val", names)
    labels = ctx.labels("val")
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n_images]
    return [feats[n][pick].float() for n in names], labels[pick]


def plot_multi_exit(runs: dict, out: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), sharey="row")
    for col, (base, sd) in enumerate(FRAMEWORKS.items()):
        for row, protocol in enumerate(("linear", "knn")):
            ax = axes[row, col]
            for method, style in ((base, "--o"), (sd, "-o")):
                values = per_layer(run_records(runs[method]).get(protocol))
                if not values:
                    continue
                ax.plot(list(values), list(values.values()), style, label=LABELS[method])
                ax.set_xticks(list(values))
            ax.set_title(f"{LABELS[base]}: {'linear probe' if protocol == 'linear' else 'k-NN'} per block")
            ax.set_xlabel("block")
            ax.set_ylabel("top-1 (%)")
            ax.legend(fontsize=8)
    return save_figure(fig, out / "multi_exit.png", dpi=90)


def plot_tsne(runs: dict, out: Path, n_images: int) -> list[Path]:
    from sklearn.manifold import TSNE

    plt = pyplot()
    paths = []
    for base, sd in FRAMEWORKS.items():
        rows = [(m, *block_features(runs[m], n_images)) for m in (base, sd)]
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


def plot_cka(runs: dict, out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    for base, sd in FRAMEWORKS.items():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), constrained_layout=True)
        for ax, method in zip(axes, (base, sd)):
            record = analysis_record(runs[method])
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


def plot_alignment(runs: dict, out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    for base, sd in FRAMEWORKS.items():
        fig, axes = plt.subplots(1, len(ALIGNMENT_PANELS), figsize=(3.2 * len(ALIGNMENT_PANELS), 3))
        for method, style in ((base, "--o"), (sd, "-o")):
            record = analysis_record(runs[method])
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
    from common.launch import plan_runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", default="", help="only the runs whose name starts with this (e.g. table1-s16)")
    parser.add_argument("--out", type=Path, default=Path("sdssl") / "figures")
    parser.add_argument("--tsne-images", type=int, default=500, help="validation images per t-SNE panel")
    parser.add_argument("overrides", nargs="*", help="key=value as given to sdssl/launch.py, e.g. experiment=table1")
    args = parser.parse_intermixed_args(argv)
    selected = [run for run in plan_runs("sdssl", args.overrides) if run.name.startswith(args.prefix)]
    runs = {str(run.cfg.method.name): run for run in selected}
    if len(runs) < len(selected):
        raise SystemExit(f"the selected runs hold several runs of one method ({[r.name for r in selected]}); "
                         "select one architecture with --prefix, e.g. --prefix table1-s16")
    missing = [m for pair in FRAMEWORKS.items() for m in pair
               if m not in runs or not (run_dir_of(runs[m].cfg) / "encoder.pt").is_file()]
    if missing:
        raise SystemExit(f"runs missing for {missing}: train them first with `python sdssl/launch.py` "
                         "(the same overrides), or select six runs of one architecture with --prefix")
    written = [plot_multi_exit(runs, args.out), *plot_cka(runs, args.out),
               *plot_alignment(runs, args.out), *plot_tsne(runs, args.out, args.tsne_images)]
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
