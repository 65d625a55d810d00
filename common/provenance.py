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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no GPU is visible; use train.device=cpu or auto")
    return device


def git_commit() -> str:
    """HEAD of the repository holding this file, `<sha>-dirty` with uncommitted tracked changes."""
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
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
