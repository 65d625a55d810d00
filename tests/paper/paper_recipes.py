"""What the paper-recipe tests may change in a run's config, the runs they cannot execute, and
which runs are cheap enough for the CI share.

CI rule (``ci_cost``): a run, eval recipe or compile case joins the daily rotation only if its
trained model is at most ViT-B (``model.embed_dim`` <= 768 and ``model.depth`` <= 12) and every
timm teacher is at most ViT-B by its timm name (``vit_/deit_`` + tiny|small|base; CLIP-L, MAE-L,
anything unrecognised is not). ViT-L/H students, ViT-L teachers and the ViT-L fine-tune run
only under ``pytest -m paper tests/paper``.
"""
from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import OmegaConf

from common.papers import discover_papers

# torch threads per test process; PAPER_RECIPES_THREADS=1 lets two processes share two cores, each
# running half of the set (two 1-thread processes beat one 2-thread process at batch 2)
TORCH_THREADS = int(os.environ.get("PAPER_RECIPES_THREADS", "2"))
REPO = Path(__file__).resolve().parents[2]
CONFIGS_EVAL = REPO / "eval" / "configs"
PAPERS = discover_papers(REPO)

# Identity keys (common.config.identity) the test overrides; any other difference fails the test.
# (The monitor keys it also sets are not identity keys: they measure and change no weights.)
ALLOWED_DIFFERENCES = {"data.name", "data.per_process_batch", "train.max_steps", "train.device"}

# (paper, run) -> why it is not executed as configured. Depth cuts would be listed here with the
# key they cut; none is needed: every run executes at its paper depth.
CUTS: dict[tuple[str, str], str] = {}

# paper precision -> (precision the test runs instead, why). The substituted key is passed as an
# explicit override, so it is the only extra difference the config check allows, for these runs only.
PRECISION_STANDINS: dict[str, tuple[str, str]] = {
    "fp16": ("bf16", "fp16 autocast on CPU is emulated (one UDI ViT-S/16 step took ~19 min); bf16 autocast runs "
                     "the same autocast path at CPU speed. The GradScaler that only fp16 uses is exercised at smoke "
                     "scale by tests/paper/test_paper_precision.py (2 fp16 steps of the toy method on CPU, then resume)"),
}

# the synthetic ADE20K-layout folder under data/ (conftest writes it; the segmentation recipe reads it)
SEG_FOLDER = "ADEChallengeData2016"

CI_MAX_WIDTH, CI_MAX_DEPTH = 768, 12  # ViT-B
CI_TEACHER_SIZES = ("tiny", "small", "base")


def precision_standin(cfg) -> list[str]:
    """The override that replaces the run's paper precision on CPU, if PRECISION_STANDINS names it."""
    standin = PRECISION_STANDINS.get(str(cfg.train.precision))
    return [f"train.precision={standin[0]}"] if standin else []


def model_cost(model) -> str | None:
    """Why a model (a resolved ``model`` block) is too big for CI, or None."""
    width, depth = int(model.get("embed_dim", 0)), int(model.get("depth", 0))
    if width > CI_MAX_WIDTH or depth > CI_MAX_DEPTH:
        return f"model {width} wide x {depth} deep is above ViT-B"
    return None


def teacher_size(name: str) -> str | None:
    """``vit_base_patch16_clip_224.openai`` -> ``base``; None where the name says no size."""
    found = re.search(r"(?:^|_)(?:vit|deit)_([a-z]+)", name)
    return found.group(1) if found else None


def ci_cost(cfg) -> str | None:
    """Why a run (its resolved config) stays out of the CI share, or None if CI may train it."""
    teachers = OmegaConf.to_container(cfg.teachers, resolve=True) if cfg.get("teachers") else {}
    for key, spec in teachers.items():
        if spec.get("kind", "timm") == "timm" and teacher_size(spec["name"]) not in CI_TEACHER_SIZES:
            return f"teacher {key} ({spec['name']}) is above ViT-B"
        if spec.get("kind", "timm") != "timm":
            return f"teacher {key} is a trained encoder ({spec.get('path')}) of unknown size"
    return model_cost(cfg.model)


def synthetic_data_name(name: str, workdir: Path) -> str:
    """``kind:<path>`` -> ``kind:<workdir>/data/<basename of path>`` (the synthetic folder)."""
    kind, _, path = name.partition(":")
    return f"{kind}:{workdir / 'data' / Path(path).name}" if path else name


def paper_overrides(cfg, workdir: Path, out: Path) -> list[str]:
    """Where data and outputs live, the device, 2 images per process and 2 steps."""
    # the training monitors probe eval.data (not an identity key): it moves with data.name
    eval_data = cfg.eval.get("data") if cfg.get("eval") else None
    moved = [f"eval.data={synthetic_data_name(str(eval_data), workdir)}"] if eval_data else []
    return [*moved, f"data.name={synthetic_data_name(str(cfg.data.name), workdir)}",
            "data.per_process_batch=2", "train.max_steps=2", "train.device=cpu",
            # not identity keys: where outputs go and how often they are written
            f"train.out_root={out / 'runs'}", f"results_root={out / 'results'}",
            "train.ckpt_every_steps=1", "train.keep_checkpoints=3", "train.log_every=1",
            "train.progress=false", f"train.threads={TORCH_THREADS}",
            "data.num_workers=1",  # paper configs start up to 10 loader processes: 2 cores, 2 images
            # the health monitor on 2 images, and no k-NN monitor: its class-balanced subsets need an
            # image per class of 1000 (2000 paper-size forwards per measurement); see ALLOWED_DIFFERENCES
            "train.health.probe_images=2", "train.knn_monitor.every=0"]


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


class Unplannable(NamedTuple):
    """An experiment whose paper-scale plan fails: its test case fails with the planning error."""
    error: str
    name: str = "plan"


def planned(paper: str, exp: str) -> list:
    try:
        return plan(paper, exp)
    except Exception as exc:  # noqa: BLE001 - reported by the test case, not as a collection error
        return [Unplannable(f"{type(exc).__name__}: {exc}")]


def rotation_key() -> int:
    """The CI share changes every day (or with PAPER_RECIPES_ROTATION=<int>), deterministically."""
    return int(os.environ.get("PAPER_RECIPES_ROTATION") or datetime.date.today().toordinal())
