"""Entry point: ``python hybrid_distill/launch.py [--slurm] [--dry-run] [experiment=...] [k=v ...]``.

Without arguments it runs the mini comparison (Hybrid Distill vs Distill-DeiT / -MAE /
-CLIP on Fashion-MNIST) and prints its table. The mini teachers are inputs, not runs of this
paper: ``python scripts/build_teachers.py scale=mini`` (or ``dvc repro teachers``) trains them
and records them in ``results/hybrid_distill/teachers.json`` (hybrid_distill/manifest.py). A
teacher that is missing stops the launcher before it writes anything, with that command.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from common.cli import user_errors
from common.launch import RunSpec, main, parse_args, plan_runs
from eval.api import evaluate_run
from eval.tables import table_after_runs
from hybrid_distill.manifest import MissingTeacherError, resolve_encoder_teacher
from hybrid_distill.model import used_teachers

PAPER = "hybrid_distill"


def missing_teachers(specs: list[RunSpec]) -> dict[str, str]:
    """Teacher name -> why it cannot be loaded, for the encoder teachers the runs use (timm
    teachers are weight files found at load time, on the machine that trains)."""
    missing, checked = {}, set()
    for spec in specs:
        cfg = spec.cfg
        for name in used_teachers(cfg):
            teacher = OmegaConf.to_container(cfg.teachers[name], resolve=True) if name in cfg.teachers else {}
            if teacher.get("kind") != "encoder" or (name, teacher.get("path")) in checked:
                continue
            checked.add((name, teacher.get("path")))
            try:
                resolve_encoder_teacher(name, teacher, cfg.scale_name, cfg.train.out_root, cfg.results_root)
            except MissingTeacherError as exc:
                missing.setdefault(name, str(exc))
    return missing


def run(argv: list[str]) -> None:
    args = parse_args(PAPER, argv)
    with user_errors(debug=args.debug):
        specs = plan_runs(PAPER, list(args.overrides), args.only)
    missing = missing_teachers(specs) if args.stage != "eval" else {}
    if args.dry_run:
        for reason in missing.values():
            print(f"# {reason}")
    elif missing:
        first, *others = missing
        more = f" (also missing: {', '.join(others)})" if others else ""
        sys.exit(f"error: {missing[first]}{more}")
    main(paper=PAPER, argv=argv, after_train=evaluate_run, render_table=table_after_runs(PAPER))


if __name__ == "__main__":
    run(sys.argv[1:])
