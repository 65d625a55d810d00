"""Which top-level directories are papers: found on disk, never listed by hand.

A paper is a directory of the repository root with a `configs/config.yaml` (its Hydra
configs) and a `launch.py` (its entry point). The scripts that build the DVC run list, render
the tables and package the distribution all ask `discover_papers`, so a new paper directory
(copied from docs/template_paper, see docs/ADDING_A_PAPER.md) joins them without an edit.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def is_paper(directory: Path) -> bool:
    return (directory.is_dir() and (directory / "configs" / "config.yaml").is_file()
            and (directory / "launch.py").is_file())


def discover_papers(root: str | Path = REPO) -> tuple[str, ...]:
    """The paper directories directly under `root`, sorted by name.

    Hidden directories and the shared ones (common, eval, tests, docs, ...) never match: they
    have no `configs/config.yaml` beside a `launch.py`.
    """
    root = Path(root)
    return tuple(sorted(d.name for d in root.iterdir() if not d.name.startswith((".", "_")) and is_paper(d)))
