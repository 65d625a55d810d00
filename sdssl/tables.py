"""SDSSL tables: our measured rows beside the paper's (``python sdssl/tables.py [experiment]``).

``render("mini")`` (printed by ``python sdssl/launch.py``) gives the mini comparison: final-layer
k-NN and linear of the six methods with the raw-pixel and random-encoder floors, then the
multi-exit tables (a linear probe and a k-NN per block).  ``render("table1")`` gives Table 1
at paper scale, ``table5`` / ``table6`` / ``fig9`` the ablations.  Missing runs show as "-".
Records are read from ``results/sdssl/<run>/<protocol>.json`` (eval/ writes them with their
provenance); every row names its checkpoint sha256 and config hash.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

RESULTS = Path("results") / "sdssl"
METHODS = ["simclr", "sd_simclr", "byol", "sd_byol", "moco_v3", "sd_moco_v3"]
LABELS = {"simclr": "SimCLR", "sd_simclr": "SD-SimCLR", "byol": "BYOL", "sd_byol": "SD-BYOL",
          "moco_v3": "MoCo v3", "sd_moco_v3": "SD-MoCo v3"}
BASELINE_OF = {"sd_simclr": "simclr", "sd_byol": "byol", "sd_moco_v3": "moco_v3"}

# Paper Table 1: ImageNet (k-NN, linear) per architecture [paper §4.2].
PAPER_TABLE1 = {
    "simclr": {"s32": (51.5, 52.8), "s16": (57.8, 62.1), "b16": (62.1, 70.5)},
    "sd_simclr": {"s32": (53.4, 55.3), "s16": (59.1, 65.0), "b16": (64.4, 72.1)},
    "byol": {"s32": (56.4, 59.8), "s16": (66.0, 70.3), "b16": (68.1, 73.7)},
    "sd_byol": {"s32": (57.9, 61.8), "s16": (67.2, 71.5), "b16": (70.3, 74.5)},
    "moco_v3": {"s32": (57.1, 60.7), "s16": (66.5, 70.0), "b16": (69.7, 75.1)},
    "sd_moco_v3": {"s32": (59.0, 63.7), "s16": (68.0, 71.5), "b16": (72.0, 76.0)},
}
ARCHS = {"s32": "ViT-S/32", "s16": "ViT-S/16", "b16": "ViT-B/16"}
# Tables 5 and 6 (ViT-S/16, MoCo v3, 100 epochs, ImageNet k-NN) [paper §4.5].
PAPER_TABLE5 = {"moco_v3": ("MoCo v3", 60.5), "moco_v3_plus_pred": ("+ pred. loss", 60.8),
                "sd_moco_v3": ("SD-MoCo v3", 62.6), "no_ratio_anneal": ("- ratio anneal", 60.2),
                "no_pred_loss": ("- pred. loss", 61.9)}
PAPER_TABLE6 = {"moco_v3": ("MoCo v3", 60.5), "wo_mlp": ("w/o MLP", 60.3), "mlp2": ("2L-MLP", 61.3),
                "mlp_every4": ("MLP/4", 61.3), "mlp_every3": ("MLP/3", 61.5), "mlp_every2": ("MLP/2", 61.5),
                "mlp_every1": ("MLP/1", 62.6)}
# Fig. 3 gives values only in the text: SD-MoCo v3 minus MoCo v3, ViT-S/16 linear [paper §4.2].
PAPER_MULTI_EXIT_TEXT = "paper (Fig. 3, ViT-S/16, text only): SD-MoCo v3 - MoCo v3 = +1.2 at layer 12, +34.3 at layer 6"
FLOORS = {"floor-pixels": "raw pixels", "floor-random": "random init (same ViT)"}


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(value, base) -> str:
    return "" if value is None or base is None else f" ({value - base:+.1f})"


def load_records(run: str, results: Path = RESULTS) -> dict[str, dict]:
    """``{protocol: record}`` of one run (empty when it has not been evaluated)."""
    out = {}
    for path in sorted((results / run).glob("*.json")):
        record = json.loads(path.read_text())
        out[record["protocol"]] = record
    return out


def _metric(records: dict, protocol: str, key: str):
    record = records.get(protocol)
    return None if record is None else record["metrics"].get(key)


def final_knn(records: dict):
    """k-NN top-1 (k=20) of the encoder's default feature: the final normed class token (pixels for the floor)."""
    record = records.get("knn")
    return None if record is None else record["metrics"].get(f"knn/{record.get('feature', 'cls')}/k20/top1")


def final_linear(records: dict, depth: int | None):
    """Linear top-1 of the final feature (best lr of the grid): the last block's head of the
    multi-exit probe, or the only feature of a single-feature probe (pixel floor)."""
    record = records.get("linear")
    if record is None:
        return None
    if len(record.get("features") or []) == 1:
        return record["metrics"].get("linear/best/top1")
    return None if depth is None else record["metrics"].get(f"linear/cls@{depth}/best/top1")


def per_layer(records: dict, protocol: str, depth: int) -> list:
    key = {"knn": "knn/cls@{l}/k20/top1", "linear": "linear/cls@{l}/best/top1"}[protocol]
    return [_metric(records, protocol, key.format(l=l)) for l in range(1, depth + 1)]


def run_depth(run: str, results: Path = RESULTS) -> int | None:
    """Depth of the run's ViT, from the linear record's feature list or the run's config."""
    config = Path("runs") / "sdssl" / run / "config.yaml"
    if config.is_file():
        return int(OmegaConf.load(config).model.depth)
    record = load_records(run, results).get("linear")
    if record and record.get("features"):
        return len(record["features"])
    return None


def _provenance(records: dict) -> str:
    record = next(iter(records.values()), None)
    if record is None:
        return "not run"
    sha = (record.get("checkpoint_sha256") or "")[:12]
    return f"`{sha}` cfg `{(record.get('config_hash') or '')[:8]}`"


# ---------------------------------------------------------------------------- mini
def render_mini(results: Path = RESULTS) -> str:
    runs = {m: load_records(m, results) for m in METHODS}
    depth = next((d for d in (run_depth(m, results) for m in METHODS) if d), None)
    lines = ["### SDSSL mini comparison (Fashion-MNIST, CPU)", "",
             "Final layer (class token after the final LayerNorm). k-NN: k=20, T=0.07. Linear: best base lr of",
             "the grid. Deltas: SD minus its baseline. Paper columns: ImageNet ViT-S/16, 300 epochs (Table 1).", "",
             "| method | k-NN top-1 | linear top-1 | paper k-NN | paper linear | checkpoint / config |",
             "|---|---|---|---|---|---|"]
    for floor, label in FLOORS.items():
        rec = load_records(floor, results)
        lines.append(f"| {label} | {_fmt(final_knn(rec))} | {_fmt(final_linear(rec, depth))} | | | {_provenance(rec)} |")
    for m in METHODS:
        rec, base = runs[m], runs.get(BASELINE_OF.get(m, ""), {})
        knn, lin = final_knn(rec), final_linear(rec, depth)
        pk, pl = PAPER_TABLE1[m]["s16"]
        bk, bl = (PAPER_TABLE1[BASELINE_OF[m]]["s16"] if m in BASELINE_OF else (None, None))
        lines.append(f"| {LABELS[m]} | {_fmt(knn)}{_delta(knn, final_knn(base)) if base else ''} | "
                     f"{_fmt(lin)}{_delta(lin, final_linear(base, depth)) if base else ''} | "
                     f"{pk}{_delta(pk, bk)} | {pl}{_delta(pl, bl)} | {_provenance(rec)} |")
    if depth:
        for protocol, title in (("linear", "linear probe per block (multi-exit, Fig. 3)"),
                                ("knn", "k-NN per block")):
            lines += ["", f"**{title}**, top-1 on block 1..{depth}; Δ rows: SD minus baseline", "",
                      "| method | " + " | ".join(f"L{l}" for l in range(1, depth + 1)) + " |",
                      "|---|" + "---|" * depth]
            random_rec = load_records("floor-random", results)
            lines.append("| random init | " + " | ".join(_fmt(v) for v in per_layer(random_rec, protocol, depth)) + " |")
            for m in METHODS:
                values = per_layer(runs[m], protocol, depth)
                lines.append(f"| {LABELS[m]} | " + " | ".join(_fmt(v) for v in values) + " |")
                if m in BASELINE_OF:
                    base = per_layer(runs[BASELINE_OF[m]], protocol, depth)
                    diffs = ["-" if a is None or b is None else f"{a - b:+.1f}" for a, b in zip(values, base)]
                    lines.append(f"| Δ {LABELS[m]} | " + " | ".join(diffs) + " |")
        lines += ["", PAPER_MULTI_EXIT_TEXT]
    lines += ["", _footer([r for rec in runs.values() for r in rec.values()])]
    return "\n".join(lines)


def _footer(records: list[dict]) -> str:
    if not records:
        return "_no records yet: run `python sdssl/launch.py`_"
    commits = sorted({r.get("git_commit", "?")[:10] for r in records})
    hardware = sorted({r.get("train_hardware") or r.get("hardware", "?") for r in records})
    train_s = sorted({r["train_time_s"] for r in records if r.get("train_time_s")})
    total = f"{sum(train_s) / 60:.1f} min total pretraining" if train_s else ""
    return f"_records: {len(records)}; git {', '.join(commits)}; {'; '.join(hardware)}; {total}_"


# ---------------------------------------------------------------------------- paper scale
def render_table1(results: Path = RESULTS) -> str:
    header = "| method | " + " | ".join(f"{a} k-NN (paper) | {a} linear (paper)" for a in ARCHS.values()) + " |"
    lines = ["### Table 1: ImageNet k-NN / linear, 300 epochs (ours vs paper)", "", header,
             "|---|" + "---|---|" * len(ARCHS)]
    for m in METHODS:
        cells = []
        for arch in ARCHS:
            rec = load_records(f"table1-{arch}-{m}", results)
            pk, pl = PAPER_TABLE1[m][arch]
            cells += [f"{_fmt(final_knn(rec))} ({pk})", f"{_fmt(final_linear(rec, 12))} ({pl})"]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    lines += ["", "**Multi-exit (Fig. 3), ViT-S/16 linear per block, ours**", "",
              "| method | " + " | ".join(f"L{l}" for l in range(1, 13)) + " |", "|---|" + "---|" * 12]
    for m in METHODS:
        values = per_layer(load_records(f"table1-s16-{m}", results), "linear", 12)
        lines.append(f"| {LABELS[m]} | " + " | ".join(_fmt(v) for v in values) + " |")
    lines += ["", PAPER_MULTI_EXIT_TEXT]
    return "\n".join(lines)


def _render_knn_ablation(title: str, prefix: str, paper: dict, results: Path) -> str:
    lines = [f"### {title} (ImageNet k-NN, ViT-S/16, MoCo v3, 100 epochs)", "",
             "| setting | ours | paper |", "|---|---|---|"]
    for key, (label, value) in paper.items():
        lines.append(f"| {label} | {_fmt(final_knn(load_records(f'{prefix}-{key}', results)))} | {value} |")
    return "\n".join(lines)


def render_fig9(results: Path = RESULTS) -> str:
    lines = ["### Fig. 9: alpha / beta sweeps (ImageNet k-NN, ViT-S/16, SD-MoCo v3, 100 epochs)", "",
             "The paper gives no values; it reports accuracy rising up to 1.0 for both, alpha mattering more.", "",
             "| run | k-NN |", "|---|---|"]
    for path in sorted(results.glob("fig9-*")):
        lines.append(f"| {path.name} | {_fmt(final_knn(load_records(path.name, results)))} |")
    return "\n".join(lines)


def render(experiment: str = "mini") -> str:
    if experiment == "mini":
        floors_missing = not all((RESULTS / f).is_dir() for f in FLOORS)
        if floors_missing and (Path("runs") / "sdssl" / "moco_v3" / "encoder.pt").is_file():
            evaluate_floors()  # a table is published only with its floor rows (DESIGN.md)
        return render_mini()
    if experiment == "table1":
        return render_table1()
    if experiment == "table5":
        return _render_knn_ablation("Table 5: ablation", "table5", PAPER_TABLE5, RESULTS)
    if experiment == "table6":
        return _render_knn_ablation("Table 6: head design", "table6", PAPER_TABLE6, RESULTS)
    if experiment == "fig9":
        return render_fig9()
    raise ValueError(f"no SDSSL table for experiment {experiment!r}; use mini, table1, table5, table6 or fig9")


def evaluate_floors(results: Path = RESULTS, run: str = "moco_v3") -> None:
    """Raw-pixel and random-encoder rows under the mini evaluation config of ``run``.

    Pixels get the final-feature protocols (there are no blocks); the random ViT (the
    architecture of ``run``) gets the same per-layer protocols as the trained runs.
    """
    from eval.api import evaluate

    cfg = OmegaConf.load(Path("runs") / "sdssl" / run / "config.yaml")
    encoder = Path("runs") / "sdssl" / run / "encoder.pt"
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    for protocol in eval_cfg.pop("protocols"):
        evaluate(f"random:{encoder}", protocol, eval_cfg, out_dir=results / "floor-random",
                 run_info={"run": "floor-random", "method": "random", "paper": "sdssl"})
        pixel_cfg = dict(eval_cfg, knn=dict(eval_cfg["knn"], per_layer=False),
                         linear=dict(eval_cfg["linear"], protocol="sdssl"))
        evaluate("pixels", protocol, pixel_cfg, out_dir=results / "floor-pixels",
                 run_info={"run": "floor-pixels", "method": "pixels", "paper": "sdssl"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiments", nargs="*", default=["mini", "table1"],
                        help="mini | table1 | table5 | table6 | fig9 (default: mini and table1)")
    parser.add_argument("--floors", action="store_true", help="first evaluate the pixel and random-init floors")
    parser.add_argument("--write", type=Path, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if args.floors:
        evaluate_floors()
    text = "\n\n".join(render(e) for e in args.experiments)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
