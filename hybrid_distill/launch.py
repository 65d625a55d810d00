"""Entry point: ``python hybrid_distill/launch.py [--slurm] [--dry-run] [experiment=...] [k=v ...]``.

Without arguments it runs the mini comparison (Hybrid Distill vs Distill-DeiT / -MAE /
-CLIP on Fashion-MNIST) and prints its table. The mini teachers are inputs, not runs of this
paper: ``python scripts/build_teachers.py scale=mini`` (or ``dvc repro teachers``) trains them
and records them in ``results/hybrid_distill/teachers.json`` (hybrid_distill/manifest.py). A
teacher that is missing stops the launcher before it writes anything, with that command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from common.cli import user_errors
from common.launch import RunSpec, main, parse_args, plan_runs
from eval.api import evaluate, evaluate_run
from hybrid_distill.manifest import MissingTeacherError, resolve_encoder_teacher
from hybrid_distill.model import build_student, used_teachers
from hybrid_distill.tables import render

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


def evaluate_floors(overrides: list[str]) -> None:
    """The two floor rows of every table (raw pixels, randomly initialised student) under the
    experiment's protocols; skipped when their records exist."""
    cfg = plan_runs(PAPER, overrides)[0].cfg
    arch_file = Path(cfg.train.out_root) / PAPER / f"student_arch_{cfg.scale_name}.json"
    arch_file.parent.mkdir(parents=True, exist_ok=True)
    arch_file.write_text(json.dumps(build_student(cfg).arch, sort_keys=True))
    for run_name, spec in (("floor_pixels", "pixels"), ("floor_random", f"random:{arch_file}")):
        out_dir = Path(cfg.results_root) / PAPER / run_name
        for protocol in cfg.eval.protocols:
            if protocol == "finetune" and spec == "pixels":
                continue  # nothing to fine-tune
            if not (out_dir / f"{protocol}.json").is_file():
                evaluate(spec, protocol, cfg.eval, out_dir=out_dir, run_info={"run": run_name, "table": "floor"})


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
    elif not args.slurm and not args.only:  # the floors belong to the whole table, not to a subset of its runs
        evaluate_floors(list(args.overrides))
    main(paper=PAPER, argv=argv, after_train=evaluate_run, render_table=render)


if __name__ == "__main__":
    run(sys.argv[1:])
