"""Render result records as markdown tables (methods side by side, floor rows last, a
"paper" column where a paper value is known) and PNG plots (accuracy / attention metrics
per block, one curve per run).

    python eval/report.py [RESULTS_DIR_OR_JSON ...] [--out report.md] [--plots DIR]

Paper values come from a record's ``paper_value`` (``run_info["paper_values"][protocol]`` given
to ``eval.api.evaluate``) or from ``paper_values={run: {protocol: value}}`` in ``table``.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from common.plots import pyplot, save_figure
from eval.encoders import floor_label
from eval.records import load_records
from eval.settings import PROTOCOLS

FLOORS = ("pixels", "random")
PER_LAYER = {  # plot name -> (protocol, metric regex with the block number as group 1, y label)
    "linear_per_layer": ("linear", r"^linear/[a-z_]+@(\d+)/best/top1$", "linear probe top-1 (%)"),
    "knn_per_layer": ("knn", r"^knn/[a-z_]+@(\d+)/k20/top1$", "k-NN top-1 (%), k=20"),
    "attention_distance_per_layer": ("analysis", r"^analysis/mad/layer(\d+)$", "mean attention distance (px)"),
    "attention_nmi_per_layer": ("analysis", r"^analysis/nmi/layer(\d+)$", "attention NMI"),
    "alignment_ratio_per_layer": ("analysis", r"^analysis/align_ratio/layer(\d+)$", "R = L^n_ali / L_ali"),
}


def _label(rec: dict) -> str:
    return f"{rec.get('method')}/{rec.get('run')}" if rec.get("run") else str(rec.get("method"))


def _is_floor(rec: dict) -> bool:
    return rec.get("method") in FLOORS


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def latest(records: list[dict]) -> list[dict]:
    """One record per (dataset, method, run, protocol): the newest."""
    best = {}
    for r in sorted(records, key=lambda r: r.get("created") or ""):
        best[(r.get("dataset"), r.get("method"), r.get("run"), r["protocol"])] = r
    return list(best.values())


def table(records: list[dict], paper_values: dict | None = None, protocols: list[str] | None = None) -> str:
    """Markdown: one row per run (floors last), one column per protocol's headline metric,
    plus a ``paper`` column for each protocol with a known paper value."""
    paper_values = paper_values or {}
    records = latest(records)
    protocols = protocols or [p for p in PROTOCOLS if any(r["protocol"] == p for r in records)]
    rows: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        rows[(_is_floor(r), r.get("method"), r.get("run"))][r["protocol"]] = r
    paper = {p: any(r.get("paper_value") is not None for r in records if r["protocol"] == p)
             or any(p in v for v in paper_values.values()) for p in protocols}
    header = ["method", "run"]
    for p in protocols:
        header += [p] + ([f"{p} (paper)"] if paper[p] else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (floor, method, run), by_protocol in sorted(rows.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), str(kv[0][2]))):
        init = next(iter(by_protocol.values())).get("init")
        cells = [f"floor: {floor_label(method, init)}" if floor else str(method), str(run or "")]
        for p in protocols:
            rec = by_protocol.get(p)
            cells.append(_fmt(rec["value"]) if rec else "–")
            if paper[p]:
                known = rec.get("paper_value") if rec else None
                cells.append(_fmt(known if known is not None else paper_values.get(run, {}).get(p)))
        lines.append("| " + " | ".join(cells) + " |")
    metrics = sorted({(r["protocol"], r["metric"]) for r in records if r["protocol"] in protocols})
    lines.append("")
    lines.append("Headline metrics: " + "; ".join(f"{p}: `{m}`" for p, m in metrics) + ".")
    return "\n".join(lines)


def per_layer_curves(records: list[dict], protocol: str, pattern: str) -> dict[str, tuple[list[int], list[float]]]:
    regex = re.compile(pattern)
    curves = {}
    for r in latest(records):
        if r["protocol"] != protocol:
            continue
        points = sorted((int(m.group(1)), v) for k, v in r["metrics"].items() if (m := regex.match(k)))
        if len(points) > 1:
            curves[_label(r)] = ([l for l, _ in points], [v for _, v in points])
    return curves


def plot_per_layer(records: list[dict], out_dir: str | Path) -> list[Path]:
    """One PNG per per-layer quantity present in the records, one curve per run."""
    from eval.metrics import _block_axis

    written = []
    for name, (protocol, pattern, ylabel) in PER_LAYER.items():
        curves = per_layer_curves(records, protocol, pattern)
        if not curves:
            continue
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for label, (layers, values) in sorted(curves.items()):
            ax.plot(layers, values, marker="o", label=label)
        _block_axis(ax)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        written.append(save_figure(fig, Path(out_dir) / f"{name}.png", dpi=120))
    return written


def render(paths, out: str | Path | None = None, plots: str | Path | None = None,
           paper_values: dict | None = None) -> str:
    records = load_records(paths)
    if not records:
        raise FileNotFoundError(f"no result records under {[str(p) for p in paths]}; run python eval/launch.py first")
    by_data = defaultdict(list)
    for r in records:
        by_data[r.get("dataset")].append(r)
    parts = []
    for data, recs in sorted(by_data.items(), key=lambda kv: str(kv[0])):
        parts += [f"### {data}", "", table(recs, paper_values), ""]
    if plots:
        pngs = plot_per_layer(records, plots)
        parts += [f"![{p.stem}]({p.resolve()})" for p in pngs]
    text = "\n".join(parts).rstrip() + "\n"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python eval/report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["results"])
    parser.add_argument("--out", default=None, help="write the markdown here")
    parser.add_argument("--plots", default=None, help="directory for per-layer PNG plots")
    args = parser.parse_args(argv)
    try:
        print(render(args.paths, args.out, args.plots), end="")
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
