"""Random-weight stand-ins for the Hybrid Distill smoke teachers, passed as explicit
``teachers.<role>.path`` overrides: trained ones come from ``scripts/build_teachers.py scale=smoke``
(tests/hybrid_distill/test_hd_build_teachers.py), which takes a minute."""
from __future__ import annotations

from pathlib import Path

import torch

from common.checkpoint import export_encoder
from common.vit import ViT

FM_MEAN, FM_STD = [0.2860406], [0.3530242]
SMOKE_TEACHERS = ("deit", "clip", "mae")


def save_teacher(path: Path, seed: int, embed_dim=48, num_heads=2, depth=3, img_size=16) -> Path:
    torch.manual_seed(seed)
    vit = ViT(img_size=img_size, patch_size=4, in_chans=1, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    meta = {"method": "random", "paper": "test", "run": path.parent.name, "config_hash": "x", "git_commit": "x",
            "step": 0, "feature": "cls", "img_size": img_size, "in_chans": 1, "mean": FM_MEAN, "std": FM_STD}
    export_encoder(vit, path, meta)
    return path


def smoke_teachers(root: Path) -> dict[str, Path]:
    """One random smoke-size encoder per teacher the smoke config names, under ``root/<name>/``."""
    return {name: save_teacher(root / name / "encoder.pt", seed) for seed, name in enumerate(SMOKE_TEACHERS)}


def teacher_overrides(paths: dict[str, Path]) -> list[str]:
    return [f"teachers.{name}.path={path}" for name, path in paths.items()]
