"""Entry point: ``python hybrid_distill/launch.py [--slurm] [--dry-run] [experiment=...] [k=v ...]``.

Without arguments it runs the mini comparison (Hybrid Distill vs Distill-DeiT / -MAE /
-CLIP on Fashion-MNIST) and prints its table. Before the runs, every teacher they need
that is an ``encoder.pt`` of this repository and does not exist yet is built by running
its ``build`` command (another entry point of the repository, as a subprocess: a paper
directory never imports another one). Existing teachers are reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common.checkpoint import sha256_file
from common.cli import user_errors
from common.io import atomic_write
from common.launch import main, parse_args, plan_runs
from eval.api import evaluate_run
from eval.tables import table_after_runs
from hybrid_distill.model import used_teachers

REPO = Path(__file__).resolve().parents[1]

PAPER = "hybrid_distill"
MANIFEST = Path("results") / PAPER / "teachers.json"


def needed_teachers(overrides: list[str], only: str | None = None) -> dict[str, dict]:
    """Encoder teachers used by the selected runs: path -> {name, build, exists}."""
    specs = plan_runs(PAPER, overrides, only)
    needed = {}
    for spec in specs:
        for name in used_teachers(spec.cfg):
            t = spec.cfg.teachers[name]
            if t.kind == "encoder":
                needed[str(t.path)] = {"name": name, "build": list(t.get("build") or []),
                                       "exists": Path(t.path).is_file()}
    return needed


def build_teachers(needed: dict[str, dict], dry_run: bool) -> None:
    for path, t in needed.items():
        if t["exists"]:
            continue
        if not t["build"]:
            message = (f"teacher {t['name']!r} ({path}) is missing and its config has no `build` "
                       "command; train it or point teachers.<name>.path to an encoder.pt")
            if dry_run:
                print(f"# {message}")
                continue
            raise SystemExit(message)
        cmd = [sys.executable, *t["build"]]
        print(f"# building missing teacher {t['name']}: {' '.join(cmd)}", flush=True)
        if dry_run:
            continue
        subprocess.run(cmd, check=True, cwd=REPO)
        if not Path(path).is_file():
            raise SystemExit(f"the build command of teacher {t['name']!r} finished but {path} does not exist; "
                             "its run name or export path disagrees with teachers/<scale>.yaml")


def write_manifest(needed: dict[str, dict]) -> None:
    """Teachers by path + sha256 + the command that built them (provenance of the mini table)."""
    entries = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    for path, t in needed.items():
        if Path(path).is_file():
            entries[t["name"]] = {"path": path, "sha256": sha256_file(path), "build": " ".join(["python", *t["build"]])}
    atomic_write(MANIFEST, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def run(argv: list[str]) -> None:
    args = parse_args(PAPER, argv)
    if not args.slurm:  # paper-scale teachers are timm weight files; nothing to build for SLURM
        with user_errors(debug=args.debug):
            needed = needed_teachers(list(args.overrides), args.only)
        build_teachers(needed, args.dry_run)
        if not args.dry_run and needed:
            write_manifest(needed)
    main(paper=PAPER, argv=argv, after_train=evaluate_run, render_table=table_after_runs(PAPER))


if __name__ == "__main__":
    run(sys.argv[1:])
