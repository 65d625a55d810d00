"""Where and how a run or an evaluation ran: commit, hardware, peak memory, device.

Kept apart from the training loop so that `eval` and the papers can record provenance
without importing `common.train`.
"""
from __future__ import annotations

import os
import platform
import resource
import subprocess
from pathlib import Path

import torch

from common.papers import discover_papers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no GPU is visible; use train.device=cpu or auto")
    return device


REPO = Path(__file__).resolve().parents[1]

# The tracked files the DVC pipeline writes itself (the outs of dvc.yaml, scripts/results.py's
# RESULTS.md and plots, dvc.lock): were they counted, every record after the pipeline's first
# stage would be `-dirty`, and the flag would no longer tell an uncommitted code change apart.
PIPELINE_OUTPUTS = ("results", "tables", "docs/results", "RESULTS.md", "dvc.lock")


def pipeline_outputs(root: Path = REPO) -> list[str]:
    """`PIPELINE_OUTPUTS` and every paper's README.md, whose table block
    scripts/sync_readme_tables.py rewrites (relative to `root`)."""
    return [*PIPELINE_OUTPUTS, *(f"{paper}/README.md" for paper in discover_papers(root))]


def git_commit(root: Path = REPO) -> str:
    """HEAD of the repository at `root` (the one holding this file), `<sha>-dirty` with
    uncommitted changes to tracked files other than the pipeline's outputs (`pipeline_outputs`)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        excludes = [f":(top,exclude){path}" for path in pipeline_outputs(root)]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *excludes],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()} threads={torch.get_num_threads()}"


def peak_memory_mb() -> float:
    """Peak of this process's resident memory and of CUDA allocations, in MiB."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return max(rss_kb / 1024, gpu)
