"""Write `results/<paper>/MODEL_ZOO.yaml` from the result records: never edit those files by hand.

Each model entry names its config, checkpoint path and sha256, training time, hardware,
commit and result records. A record without provenance is refused, so a number that
cannot be traced to a checkpoint and a commit never reaches the zoo.

    python scripts/model_zoo.py [--results results] [--papers bootleg sdssl ...]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from common.config import run_location
from common.train import run_dir_of
from eval.records import load_records

PROVENANCE = ("checkpoint_sha256", "config_hash", "git_commit", "hardware", "dataset_hash", "created")
FLOOR_METHODS = ("pixels", "random")  # reference rows, not trained models


class ProvenanceError(ValueError):
    pass


def check_provenance(record: dict) -> None:
    missing = [k for k in PROVENANCE if not record.get(k)]
    if missing:
        raise ProvenanceError(f"record {record.get('_path', '?')} lacks provenance {missing}; "
                              "re-run its evaluation with eval/launch.py (which records them)")


def model_of(rec: dict, results_root: Path) -> tuple[str, str, str] | None:
    """(paper, scale, run) of a record that eval.records.records_dir filed for a run of its paper,
    `<results_root>/<paper>/<scale>/<run>/[<extra evaluation>/]<protocol>.json`; None for the
    others: results/cross/ repeats the runs under the cross-paper protocols, results/sweeps/
    holds recipe sweeps whose encoders are not kept, and the teachers that another paper's
    launcher trained are filed under that paper (results/hybrid_distill/teachers/)."""
    parts = Path(rec["_path"]).relative_to(results_root).parts
    if len(parts) < 4 or parts[0] != rec.get("paper"):
        return None
    return parts[0], parts[1], parts[2]


def zoo_entries(records: list[dict], runs_root: Path, results_root: Path) -> dict[str, list[dict]]:
    """Model entries per paper, one per (paper, scale, run), newest record per protocol. A model
    is named by its records' directory, not by the `run` field inside them, so records made
    before a run was renamed join the model of its new name."""
    by_run: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for rec in records:
        floor = rec.get("method") in FLOOR_METHODS or rec.get("encoder_kind") in FLOOR_METHODS
        model = None if floor else model_of(rec, results_root)  # floors are not models
        if model is None:
            continue
        check_provenance(rec)
        by_run[model].append(rec)
    zoo: dict[str, list[dict]] = defaultdict(list)
    for (paper, scale, run), recs in sorted(by_run.items()):
        shas = {r["checkpoint_sha256"] for r in recs}
        if len(shas) > 1:
            raise ProvenanceError(f"run {paper}/{scale}/{run} has records of {len(shas)} different checkpoints "
                                  f"({sorted(s[:12] for s in shas)}); re-evaluate the current one")
        first = recs[0]
        results = {}
        for r in sorted(recs, key=lambda r: r["created"]):
            results[r["protocol"]] = {"metric": r["metric"], "value": round(float(r["value"]), 4),
                                      "record": r["_path"]}
        run_dir = run_dir_of(run_location(paper, scale, run, runs_root))
        zoo[paper].append({
            "name": run,
            "scale": scale,
            "method": first["method"],
            "config": str(run_dir / "config.yaml"),
            "config_hash": first["config_hash"],
            "checkpoint": str(run_dir / "encoder.pt"),
            "sha256": first["checkpoint_sha256"],
            "training_time_s": first.get("train_time_s"),
            "training_hardware": first.get("train_hardware") or first["hardware"],
            "commit": first["git_commit"],  # of the evaluation
            "training_commit": first.get("train_git_commit"),  # from the run's done.json
            "dataset": first.get("dataset"),
            "results": results,
        })
    return zoo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results")
    p.add_argument("--runs", default="runs")
    p.add_argument("--papers", nargs="+", default=None, help="write only these papers' zoos (default: all)")
    p.add_argument("--out-root", default="results",
                   help="zoo files go to <out-root>/<paper>/MODEL_ZOO.yaml (outside the paper's code, "
                        "which the pretrain stages depend on)")
    args = p.parse_args(argv)
    try:
        zoo = zoo_entries(load_records([args.results]), Path(args.runs), Path(args.results))
    except ProvenanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for paper, models in zoo.items():
        if args.papers and paper not in args.papers:
            continue
        out = Path(args.out_root) / paper / "MODEL_ZOO.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        header = "# Generated by scripts/model_zoo.py from results/ - do not edit by hand.\n"
        out.write_text(header + yaml.safe_dump({"paper": paper, "models": models}, sort_keys=False))
        print(f"wrote {out} ({len(models)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
