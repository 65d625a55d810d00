"""What the paper-recipe tests may change in a run's config, and the runs they cannot execute."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

TORCH_THREADS = 2
REPO = Path(__file__).resolve().parents[2]
CONFIGS_EVAL = REPO / "eval" / "configs"
PAPERS = ("bootleg", "sdssl", "hybrid_distill", "udi")

# Identity keys (common.config.identity) the test overrides; any other difference fails the test.
ALLOWED_DIFFERENCES = {"data.name", "data.per_process_batch", "train.max_steps", "train.device"}

# (paper, run) -> why it is not executed as configured. Depth cuts would be listed here with the
# key they cut; none is needed: every run executes at its paper depth.
CUTS: dict[tuple[str, str], str] = {}


def synthetic_data_name(name: str, workdir: Path) -> str:
    """``kind:<path>`` -> ``kind:<workdir>/data/<basename of path>`` (the synthetic folder)."""
    kind, _, path = name.partition(":")
    return f"{kind}:{workdir / 'data' / Path(path).name}" if path else name


def paper_overrides(cfg, workdir: Path, out: Path) -> list[str]:
    return [f"data.name={synthetic_data_name(str(cfg.data.name), workdir)}",
            "data.per_process_batch=2", "train.max_steps=2", "train.device=cpu",
            # not identity keys: where outputs go and how often they are written
            f"train.out_root={out / 'runs'}", f"results_root={out / 'results'}",
            "train.ckpt_every_steps=1", "train.keep_checkpoints=3", "train.log_every=1",
            "train.progress=false", f"train.threads={TORCH_THREADS}"]


def random_teacher_file(path: Path, timm_name: str) -> Path:
    """``path`` holding the teacher's architecture with random weights (the official checkpoints
    are never downloaded; their key layouts are tested in tests/hybrid_distill/test_hd_teachers.py)."""
    import timm
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        net = timm.create_model(timm_name, pretrained=False, num_classes=0)
        torch.save(net.state_dict(), path)
    return path


def prepare_teachers(cfg, workdir: Path) -> None:
    """Random-weight files for the run's timm teachers where the config expects the official ones."""
    teachers = OmegaConf.to_container(cfg.teachers, resolve=True) if cfg.get("teachers") else {}
    for spec in teachers.values():
        if spec.get("kind", "timm") == "timm":
            default = Path(spec.get("weights_dir", "data/teachers")) / f"{spec['name']}.pth"
            random_teacher_file(workdir / (spec.get("path") or default), spec["name"])


def experiments() -> list[tuple[str, str]]:
    """Every (paper, experiment) by its config file: cheap, no config composition."""
    return [(paper, p.stem) for paper in PAPERS
            for p in sorted((REPO / paper / "configs" / "experiment").glob("*.yaml"))]


def plan(paper: str, experiment: str):
    from common.launch import plan_runs
    return plan_runs(paper, [f"experiment={experiment}", "scale=paper"])


def rotation_key() -> int:
    """The CI share changes every day (or with PAPER_RECIPES_ROTATION=<int>), deterministically."""
    return int(os.environ.get("PAPER_RECIPES_ROTATION", datetime.date.today().toordinal()))
