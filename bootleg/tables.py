"""Render a Bootleg table (or figure's runs) from the evaluation records, paper column included.

    python bootleg/tables.py [compare-mini | main_table-paper | ...] [--out FILE] [key=value ...]

An experiment name is ``<experiment>-<scale>`` (``experiment_name`` of the config), so the
records are looked up where that experiment at that scale writes them. Every table carries
the floor rows under the same protocols: raw pixels, and one randomly initialised encoder per
distinct init of its runs (Bootleg and I-JEPA start from I-JEPA's init, MAE from timm's), each
with the architecture and init of a run that uses it; when the runs are local they are
evaluated here if missing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.config import load_config

PROTOCOLS = {"knn": "k-NN top-1", "linear": "linear top-1", "attentive": "attentive top-1"}
METHOD_NAMES = {"bootleg": "Bootleg", "ijepa": "I-JEPA", "mae": "MAE", "mae_ema": "MAE-EMA",
                "crossmae": "CrossMAE", "data2vec": "data2vec 2.0"}

# Published numbers our text holds. The Bootleg paper's tables are not in our copy (only its
# abstract: "+10% over I-JEPA" on IN-1k and iNat21, and the main table's header naming MAE,
# CrossMAE, data2vec 2.0, I-JEPA and Bootleg), so the only values are I-JEPA's own IN-1k
# linear-probe numbers (Assran et al. 2023, Table 1), keyed by (method, model); the CrossMAE
# and data2vec 2.0 rows (ViT-S/16) have none: that paper lists data2vec 1.0 at ViT-L only.
PAPER_LINEAR_IN1K = {("ijepa", "vit_b16"): "72.9 (I-JEPA paper, 600 ep)",
                     ("ijepa", "vit_l16"): "77.5 (I-JEPA paper, 600 ep)",
                     ("mae", "vit_b16"): "68.0 (I-JEPA paper, MAE 1600 ep)",
                     ("mae", "vit_l16"): "76.0 (I-JEPA paper, MAE 1600 ep)"}
NOT_IN_TEXT = "not in our text"


def experiment_config(name: str, overrides=()):
    """The experiment's config; ``overrides`` (e.g. ``results_root=...``) as given to its launch."""
    experiment, _, scale = name.rpartition("-")
    if not experiment:
        raise ValueError(f"experiment name {name!r} is not <experiment>-<scale>, e.g. compare-mini")
    return load_config("bootleg", [f"experiment={experiment}", f"scale={scale}", *overrides])


def read_records(directory: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def run_configs(name: str, cfg, overrides=()) -> dict:
    """Run name -> its full config, as the experiment's launch resolves it."""
    experiment = name.rpartition("-")[0]
    # the order of common.launch.plan_runs: the run table's overrides, then the user's
    return {run: load_config("bootleg", [f"experiment={experiment}", f"scale={cfg.scale_name}", *run_overrides,
                                         *overrides, f"run_name={run}"])
            for run, run_overrides in cfg.runs.items()}


def floor_specs(cfg, runs: dict) -> dict[str, tuple[str | dict, Path]]:
    """Floor row name -> (``pixels`` or an encoder arch, records directory): raw pixels, then a
    random encoder for each distinct init among ``runs`` (their configs), with the arch of the
    first run that uses it. Floors live beside the experiment's records: their eval settings
    are the experiment's (subsets, epochs), so another table's floors must not overwrite them."""
    from common.config import encoder_arch
    from eval.encoders import floor_label, init_name

    root = Path(cfg.results_root) / cfg.paper / f"floors-{cfg.experiment_name}"
    specs = {"raw pixels (floor)": ("pixels", root / "pixels")}
    for run_cfg in runs.values():
        arch = encoder_arch(run_cfg)
        init = init_name(arch)
        specs.setdefault(f"{floor_label('random', init)} (floor)", (arch, root / f"random-init-{init}"))
    return specs


def ensure_floors(cfg, runs: dict) -> None:
    """Evaluate the floor rows that have no record under the experiment's current eval
    settings (a changed probe schedule re-evaluates them; local runs only: cheap at mini scale)."""
    from eval.api import evaluate_unless_current
    from eval.encoders import random_spec

    for source, out in floor_specs(cfg, runs).values():
        spec = source if source == "pixels" else random_spec(source, out)
        for protocol in cfg.eval.protocols:
            evaluate_unless_current(spec, protocol, cfg.eval, out_dir=out)


def _paper_value(method: str, model_name: str, protocol: str, dataset: str) -> str:
    if protocol == "linear" and dataset.startswith("imagefolder") and "imagenet" in dataset:
        return PAPER_LINEAR_IN1K.get((method, model_name), NOT_IN_TEXT)
    return NOT_IN_TEXT if not dataset.startswith("fashion_mnist") else "-"


def _fmt(record: dict | None) -> str:
    return "missing" if record is None else f"{record['value']:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _provenance(name: str, r: dict) -> str:
    return (f"{name}: {r['metric']}={r['value']:.2f} ckpt {str(r['checkpoint_sha256'])[:12]} "
            f"config {r['config_hash']} commit {str(r['git_commit'])[:12]} "
            f"data {str(r['dataset_hash'])[:12]} {r['hardware']} eval {r['wall_time_s']:.0f} s, "
            f"{r['created']}")


def render(name: str = "compare-mini", compute_floors: bool | None = None, overrides=()) -> str:
    cfg = experiment_config(name, overrides)
    protocols = [p for p in PROTOCOLS if p in cfg.eval.protocols]
    if compute_floors is None:
        compute_floors = cfg.cluster.executor == "inprocess"
    runs = run_configs(name, cfg, overrides)
    if compute_floors:
        ensure_floors(cfg, runs)
    root = Path(cfg.results_root) / cfg.paper
    header = ["row", *(PROTOCOLS[p] for p in protocols), "pretrain time", "paper"]
    lines = [f"### {name}: {cfg.eval.data}",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    provenance = []
    for run, run_cfg in runs.items():
        records = read_records(root / run)
        label = (f"{METHOD_NAMES.get(run_cfg.method.name, run_cfg.method.name)} "
                 f"(run {run}, {run_cfg.method.export_encoder} encoder)")
        train_s = next((r.get("train_time_s") for r in records.values() if r.get("train_time_s")), None)
        paper = "; ".join(sorted({_paper_value(run_cfg.method.name, run_cfg.arch, p, cfg.eval.data)
                                  for p in protocols}))
        cells = [_fmt(records.get(p)) for p in protocols]
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {_duration(train_s)} | {paper} |")
        provenance += [_provenance(f"{run}/{p}", records[p]) for p in protocols if p in records]
    for label, (_, out) in floor_specs(cfg, runs).items():
        records = read_records(out)
        lines.append(f"| {label} | " + " | ".join(_fmt(records.get(p)) for p in protocols) + " | - | - |")
        provenance += [_provenance(f"{out.name}/{p}", records[p]) for p in protocols if p in records]
    lines += ["", "Top-1 accuracy (%) on the test split. Provenance:", ""]
    lines += [f"- {line}" for line in provenance]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bootleg/tables.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default="compare-mini",
                        help="<experiment>-<scale> (default compare-mini)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--no-floors", action="store_true", help="do not evaluate missing floor rows")
    what.add_argument("--floors-only", action="store_true",
                      help="only evaluate the floor rows that are missing or stale (the `floors` stage of dvc.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value as given to the launch, e.g. results_root=results")
    args = parser.parse_intermixed_args(argv)  # options may sit between experiment and overrides
    if args.floors_only:
        cfg = experiment_config(args.experiment, args.overrides)
        ensure_floors(cfg, run_configs(args.experiment, cfg, args.overrides))
        return
    text = render(args.experiment, compute_floors=False if args.no_floors else None, overrides=args.overrides)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
