"""Train the teachers Hybrid Distill distils from, and record them (the `teachers` stage of dvc.yaml).

The mini teachers are a run of Bootleg (MAE), a run of SDSSL (MoCo v3) and a supervised ViT
that eval/ fine-tunes from a random encoder; scripts/teachers/<scale>.yaml holds their recipes.
Each is trained by its own entry point, as a user would run it, and then recorded (path,
sha256, scale, command) in <results_root>/hybrid_distill/teachers.json, the manifest that
hybrid_distill/launch.py reads. A paper never runs another paper's launcher: this script does.

A finished teacher is reused: its paper's launcher reuses a finished run (and refuses one of
another configuration); an existing supervised encoder is kept. Paths are relative to the
working directory, the repository root, like every entry point's.

    python scripts/build_teachers.py [--dry-run] [scale=mini] [train.out_root=runs] [results_root=results]
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.checkpoint import sha256_file
from common.cli import OneLineArgumentParser, user_errors
from common.io import atomic_write
from common.launch import plan_runs
from common.papers import discover_papers
from common.train import run_dir_of
from hybrid_distill.manifest import DEFAULT_ROOTS, PAPER, manifest_path, read_manifest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "scripts" / "teachers"
DEFAULTS = {"scale": "mini", **DEFAULT_ROOTS}
FINETUNE = "finetune"  # the trainer that is eval's supervised fine-tuning, not a paper


@dataclass
class Teacher:
    role: str
    trainer: str         # a paper, or FINETUNE
    script: str          # entry point, relative to the repository root
    args: list[str]      # its key=value arguments
    encoder: Path        # the encoder.pt it exports

    @property
    def command(self) -> str:
        return shlex.join(["python", self.script, *self.args])


def parse(argv: list[str]) -> tuple[dict[str, str], bool]:
    p = OneLineArgumentParser(prog="python scripts/build_teachers.py", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="print the commands and the encoder paths, train nothing")
    p.add_argument("settings", nargs="*", metavar="key=value", help=f"keys: {', '.join(DEFAULTS)}")
    args = p.parse_args(argv)
    settings = dict(DEFAULTS)
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            p.error(f"{item!r}: expected key=value with key one of {', '.join(DEFAULTS)}")
        settings[key] = value
    return settings, args.dry_run


def load_recipes(scale: str) -> dict[str, dict]:
    path = RECIPES / f"{scale}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES.glob("*.yaml"))
        raise SystemExit(f"error: no teacher recipes for scale={scale} ({path}); scale must be one of {', '.join(known)}")
    return yaml.safe_load(path.read_text())


def plan_teacher(role: str, recipe: dict, scale: str, out_root: str, results_root: str) -> Teacher:
    """The command that trains one teacher and the encoder it exports, located from the run's
    config (common.train.run_dir_of), never from a path written here."""
    records = Path(results_root) / PAPER / "teachers"
    run, trainer = recipe["run"], recipe["trainer"]
    if trainer == FINETUNE:
        # no paper's run: the encoder is kept where a Hybrid Distill run of that name would be
        placed = [f"scale={scale}", "experiment=none", f"run_name={run}", f"train.out_root={out_root}"]
        encoder = run_dir_of(plan_runs(PAPER, placed)[0].cfg) / "encoder.pt"
        arch = os.path.relpath(RECIPES / recipe["arch"])
        args = [f"checkpoint=random:{arch}", "protocol=finetune", *recipe["overrides"],
                f"finetune.export_encoder={encoder}", f"out={records / 'eval' / run}"]
        return Teacher(role, trainer, "eval/launch.py", args, encoder)
    if trainer not in discover_papers(REPO):
        raise SystemExit(f"error: teacher {role!r}: trainer {trainer!r} is neither a paper directory "
                         f"({', '.join(discover_papers(REPO))}) nor {FINETUNE!r}; fix {RECIPES}/{scale}.yaml")
    # experiment=none: one run, and no table of the paper rendered after it; a teacher of an
    # earlier recipe is moved aside (a changed recipe here is meant, and nothing is deleted)
    args = ["experiment=none", f"scale={scale}", *recipe["overrides"], f"run_name={run}",
            f"train.out_root={out_root}", f"results_root={records}", "train.on_config_change=archive"]
    encoder = run_dir_of(plan_runs(trainer, args)[0].cfg) / "encoder.pt"
    return Teacher(role, trainer, f"{trainer}/launch.py", args, encoder)


def plan(scale: str, out_root: str, results_root: str) -> list[Teacher]:
    with user_errors():
        return [plan_teacher(role, recipe, scale, out_root, results_root)
                for role, recipe in load_recipes(scale).items()]


def refuse_other_scale(results_root: str, scale: str) -> None:
    """The manifest holds one scale's teachers: building another scale's over it would drop them."""
    recorded = {entry.get("scale") for entry in read_manifest(results_root).values()} - {scale}
    if recorded:
        raise SystemExit(f"error: {manifest_path(results_root)} records the scale={recorded.pop()} teachers; "
                         f"pass another results_root= for the scale={scale} ones, or delete that file")


def train(teacher: Teacher) -> None:
    if teacher.trainer == FINETUNE and teacher.encoder.is_file():
        print(f"# teacher {teacher.role}: reusing {teacher.encoder}", flush=True)
        return
    print(f"# teacher {teacher.role}: {teacher.command}", flush=True)
    done = subprocess.run([sys.executable, os.path.relpath(REPO / teacher.script), *teacher.args])
    if done.returncode != 0:
        raise SystemExit(f"error: teacher {teacher.role!r} failed (exit {done.returncode}, output above): {teacher.command}")
    if not teacher.encoder.is_file():
        raise SystemExit(f"error: teacher {teacher.role!r} finished but {teacher.encoder} does not exist: "
                         f"its entry point exports elsewhere; fix {teacher.command}")


def write_manifest(teachers: list[Teacher], scale: str, results_root: str) -> Path:
    entries = {t.role: {"path": str(t.encoder), "sha256": sha256_file(t.encoder), "scale": scale, "build": t.command}
               for t in teachers}
    return atomic_write(manifest_path(results_root), json.dumps(entries, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    settings, dry_run = parse(argv)
    scale, out_root, results_root = settings["scale"], settings["train.out_root"], settings["results_root"]
    teachers = plan(scale, out_root, results_root)
    if dry_run:
        for t in teachers:
            print(f"# teacher {t.role} -> {t.encoder}\n{t.command}")
        return 0
    refuse_other_scale(results_root, scale)
    for teacher in teachers:
        train(teacher)
    print(f"wrote {write_manifest(teachers, scale, results_root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
