"""Evaluate one mini encoder (or the floor rows) with the cross-paper protocol set.

Every method of the four papers goes through exactly the same protocols, with the same eval
config, so the rows of RESULTS.md are comparable: k-NN, linear (final token and one head per
block), attentive probe, low-shot 1%/10%, and k-NN transfer to MNIST-5k.

    python scripts/cross_eval.py --run bootleg               # records in results/cross/<scale>/<run>/
    python scripts/cross_eval.py --floors                    # pixels + a random encoder per init and
                                                             # arch, in results/cross/floors-cross-<scale>/
    python scripts/cross_eval.py --run bootleg-seed1 --trim  # a seed run: k-NN + last-block linear
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from common.config import run_location
from common.train import run_dir_of
from eval.api import SEED_PROTOCOLS, evaluate
from eval.records import CROSS, records_dir
from eval.tables import PIXELS, Floor, ensure_floors, floors_dir, pixel_eval_cfg, random_floor_name

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = ("knn", "linear", "attentive", "lowshot")
# One config for every row; the per-layer heads come from the same frozen pass as the final one.
# Class-balanced subsets (10k train / 2k test images) keep sixteen encoders x five protocols
# within a CPU budget; every row uses the same images.
# Schedules are pinned here, not taken from eval's scale defaults, so every row of the table
# is trained with the same probe budget even if those defaults change.
CROSS_CFG = {"linear": {"per_layer": True, "epochs": 100}, "attn_probe": {"epochs": 20},
             "lowshot": {"epochs": 30}, "table": "cross", "progress": False,
             "train_subset": 10000, "val_subset": 2000}
# The smoke scale only proves the pipeline runs: small subsets, one short schedule.
SMOKE_CFG = {"train_subset": 1000, "val_subset": 200, "knn": {"k": [5], "report_k": 5},
             "linear": {"per_layer": True, "epochs": 2, "lr_sweep": [0.1]}, "attn_probe": {"epochs": 1},
             "lowshot": {"epochs": 5}}
TRANSFER = {"data": "mnist5k", "train_subset": None, "val_subset": None}  # all 4,000 / 1,000
# Seeds >= 1 of the headline runs: only the two columns that get intervals (eval.api's
# SEED_PROTOCOLS, as in the paper tables). The linear head is the per-layer grid restricted to
# the last block (layers=1), so its record names the same metric as seed 0's last-block column,
# from the same features, recipe and lr grid.
TRIMMED_PROTOCOLS = SEED_PROTOCOLS
TRIMMED_CFG = {"layers": 1}


def runs_table(seeds: bool = False) -> dict:
    """The runs of dvc_runs.yaml, with its seed runs too if `seeds`."""
    table = yaml.safe_load((REPO / "dvc_runs.yaml").read_text())
    return {**table["runs"], **(table.get("seed_runs") or {})} if seeds else table["runs"]


def cross_cfg(scale: str, trim: bool = False) -> dict:
    return {**CROSS_CFG, **(SMOKE_CFG if scale == "smoke" else {}), **(TRIMMED_CFG if trim else {})}


def evaluate_all(encoder: str, out_dir: Path, scale: str, run_info: dict | None = None,
                 trim: bool = False) -> None:
    cfg = cross_cfg(scale, trim)
    for protocol in TRIMMED_PROTOCOLS if trim else PROTOCOLS:
        evaluate(encoder, protocol, cfg, out_dir=out_dir, run_info=run_info)
    if not trim:
        evaluate(encoder, "knn", {**cfg, **TRANSFER}, out_dir=out_dir / "mnist5k", run_info=run_info)


def evaluate_floors(results: Path, scale: str) -> None:
    """The floor rows of RESULTS.md (one layout with every table's: eval/tables.py), unless
    current: raw pixels and a random encoder per distinct init and architecture of the runs,
    ``random-init-<key>`` for each key of `floor_archs` (the floors `run_floors` measures the
    runs against), under the same protocols as the runs, the MNIST-5k transfer included."""
    archs = yaml.safe_load((REPO / "dvc_runs.yaml").read_text())["floor_archs"]
    cfg = {**cross_cfg(scale), "protocols": list(PROTOCOLS)}
    root = floors_dir(results.parent, results.name, "cross", scale)
    # not make_floors: floor_archs is already floor_keys over every paper's runs, and one eval block serves all
    floors = [Floor(PIXELS, None, pixel_eval_cfg(cfg), root / PIXELS),
              *(Floor(random_floor_name(key), arch, cfg, root / random_floor_name(key)) for key, arch in archs.items())]
    transfer = [replace(f, eval_cfg={**f.eval_cfg, **TRANSFER, "protocols": ["knn"]}, out_dir=f.out_dir / "mnist5k")
                for f in floors]
    ensure_floors([*floors, *transfer], {"table": "cross"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", nargs="+", help="run names of dvc_runs.yaml")
    what.add_argument("--floors", action="store_true",
                      help="raw pixels and a random encoder per distinct init and architecture of the runs")
    p.add_argument("--scale", choices=("smoke", "mini"), default="mini")
    p.add_argument("--runs-root", default="runs", help="train.out_root of the runs")
    p.add_argument("--results-root", default="results",
                   help="records go to <results-root>/cross/<scale>/<run>/ (floors: <results-root>/cross/floors-cross-<scale>/)")
    p.add_argument("--trim", action="store_true",
                   help="only k-NN and the last-block linear head (the extra seeds of the headline runs)")
    args = p.parse_args(argv)
    out = Path(args.results_root) / CROSS
    if args.floors:
        evaluate_floors(out, args.scale)
        return 0
    runs = runs_table(seeds=True)
    unknown = [r for r in args.run if r not in runs]
    if unknown:
        print(f"error: unknown run(s) {unknown}; known: {', '.join(runs)}", file=sys.stderr)
        return 2
    for run in args.run:
        where = run_location(runs[run]["paper"], args.scale, run, args.runs_root, args.results_root)
        evaluate_all(str(run_dir_of(where) / "encoder.pt"), records_dir(where, CROSS), args.scale, trim=args.trim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
