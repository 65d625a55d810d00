"""Render RESULTS.md: every method of the four papers at the same mini budget, same protocols.

Reads the records written by scripts/cross_eval.py (results/cross/) and draws two plots:
linear-probe accuracy per block for every method, and accuracy against training cost.
Every number in the table links to the record it comes from.

    python scripts/results.py [--results results/cross] [--out RESULTS.md] [--plots docs/results]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from eval.encoders import floor_label
from eval.records import load_records

REPO = Path(__file__).resolve().parents[1]
PER_LAYER = re.compile(r"^linear/[a-z_]+@(\d+)/best/top1$")
PAPER_ORDER = ("bootleg", "sdssl", "hybrid_distill", "udi")
COLUMNS = (  # header, protocol, metric (None = the record's headline), subdirectory
    ("k-NN", "knn", None, ""),
    ("linear (last block)", "linear", "last_block", ""),
    ("attentive", "attentive", "attentive/top1", ""),
    ("low-shot 1%", "lowshot", "lowshot/1pct/top1", ""),
    ("low-shot 10%", "lowshot", "lowshot/10pct/top1", ""),
    ("MNIST-5k k-NN", "knn", None, "mnist5k"),
)


def _rel(path: str, out: Path) -> str:
    return Path(path).resolve().relative_to(out.resolve().parent).as_posix() \
        if Path(path).resolve().is_relative_to(out.resolve().parent) else path


def _cell(rec: dict | None, metric: str | None, out: Path) -> str:
    if rec is None:
        return "–"
    if metric == "last_block":  # the per-layer grid's head on the final block (pixels: its only head)
        layers = per_layer(rec)
        value = layers[max(layers)] if layers else rec["value"]
    else:
        value = rec["value"] if metric is None else rec["metrics"].get(metric)
    return "–" if value is None else f"[{value:.1f}]({_rel(rec['_path'], out)})"


def train_cost(paper: str | None, run: str) -> tuple[float | None, float | None]:
    """Pretraining wall time (s) and peak memory (MB) from the run's done.json, if present."""
    done = REPO / "runs" / str(paper) / run / "done.json"
    if not paper or not done.exists():
        return None, None
    summary = json.loads(done.read_text())
    return summary.get("train_time_s"), summary.get("peak_memory_mb")


def per_layer(rec: dict | None) -> dict[int, float]:
    if rec is None:
        return {}
    return {int(m.group(1)): v for k, v in rec["metrics"].items() if (m := PER_LAYER.match(k))}


def collect(results: Path) -> dict[str, dict[tuple[str, str], dict]]:
    """{row name: {(protocol, subdir): record}}, one row per run or floor."""
    rows: dict[str, dict[tuple[str, str], dict]] = {}
    for rec in load_records([results]):
        path = Path(rec["_path"])
        sub = path.parent.name if path.parent.name == "mnist5k" else ""
        row_dir = path.parent.parent if sub else path.parent
        rows.setdefault(row_dir.name, {})[(rec["protocol"], sub)] = rec
    return rows


def render(results: Path, out: Path, plots: Path) -> str:
    runs = yaml.safe_load((REPO / "dvc_runs.yaml").read_text())["runs"]
    rows = collect(results)
    lines = ["# Cross-paper results at the mini budget", "",
             "Every method below was pretrained on Fashion-MNIST at its paper's mini scale and evaluated "
             "by `scripts/cross_eval.py` with one eval config on the same class-balanced subsets (10,000 training and 2,000 test images; k-NN k=20, T=0.07; linear probe grid on "
             "frozen features, one head per block for the per-layer column; V-JEPA attentive probe; "
             "low-shot logistic regression; k-NN transfer to MNIST-5k). Each number links to its record "
             "(checkpoint sha256, config hash, commit, dataset hash, hardware, wall time, peak memory). "
             "Regenerate with `dvc repro tables` or `python scripts/results.py`. Pretraining times and peak "
             "memory come from each run's `done.json`; they are wall times on the hardware named below, "
             "which other work on the machine can stretch, so compare them only roughly. The mini "
             "budgets are small (see each paper's README): most rows sit near or below the floors, "
             "which says nothing about the paper scale.", "",
             "| paper | method | run | " + " | ".join(c[0] for c in COLUMNS) +
             " | best block (linear) | pretrain time (min) | pretrain peak mem (GB) |",
             "|" + "---|" * (len(COLUMNS) + 6)]
    ordered = sorted(runs.items(), key=lambda kv: (PAPER_ORDER.index(kv[1]["paper"]), kv[0]))
    names = [name for name, _ in ordered] + ["pixels"] + sorted(r for r in rows if r.startswith("random"))
    for name in names:
        recs = rows.get(name, {})
        if not recs:
            continue
        any_rec = next(iter(recs.values()))
        paper = runs[name]["paper"] if name in runs else "floor"
        layers = per_layer(recs.get(("linear", ""))) if name != "pixels" else {}
        best = f"{max(layers.values()):.1f} (block {max(layers, key=layers.get)})" if layers else "–"
        seconds, mem = train_cost(runs.get(name, {}).get("paper"), name)
        cost = [f"{seconds / 60:.1f}" if seconds else "–", f"{mem / 1024:.2f}" if mem else "–"]
        cells = [_cell(recs.get((proto, sub)), metric, out) for _, proto, metric, sub in COLUMNS]
        method = floor_label("random", any_rec.get("init")) if name.startswith("random") else any_rec.get("method")
        lines.append(f"| {paper} | {method} | {name} | " + " | ".join([*cells, best, *cost]) + " |")
    hardware = sorted({r.get("train_hardware") or r.get("hardware") for recs in rows.values() for r in recs.values()})
    commits = sorted({r["git_commit"] for recs in rows.values() for r in recs.values()})
    lines += ["", f"Hardware: {'; '.join(h for h in hardware if h)}. Evaluation commits: {', '.join(commits)}.", ""]
    for png in draw(rows, runs, plots):
        lines.append(f"![{png.stem}]({_rel(str(png), out)})")
    return "\n".join(lines) + "\n"


def draw(rows, runs, plots: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    made = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, recs in rows.items():
        layers = per_layer(recs.get(("linear", "")))
        if layers:
            xs = sorted(layers)
            ax.plot(xs, [layers[x] for x in xs], marker="o", label=name)
    ax.set_xlabel("block")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title("Fashion-MNIST linear probe per block (mini budget)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    made.append(plots / "accuracy_per_layer.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, recs in rows.items():
        layers = per_layer(recs.get(("linear", "")))
        seconds, _ = train_cost(runs.get(name, {}).get("paper"), name)
        if layers and seconds:
            acc = layers[max(layers)]
            ax.scatter(seconds / 60, acc)
            ax.annotate(name, (seconds / 60, acc), fontsize=7)
    ax.set_xlabel("pretraining wall time (min)")
    ax.set_ylabel("linear probe top-1, last block (%)")
    ax.set_title("Accuracy vs training cost (mini budget)")
    fig.tight_layout()
    made.append(plots / "accuracy_vs_cost.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)
    return made


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results/cross")
    p.add_argument("--out", default="RESULTS.md")
    p.add_argument("--plots", default="docs/results")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.write_text(render(Path(args.results), out, Path(args.plots)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
