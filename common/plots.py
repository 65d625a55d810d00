"""The figure set-up every paper, eval and the scripts share.

matplotlib is imported on first use (a training run never pays for it) on the Agg backend:
figures are written to files, and cluster nodes have no display.
"""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """`matplotlib.pyplot`, drawing to files only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int, tight: bool = True, **savefig_kwargs) -> Path:
    """Lay `fig` out (`tight_layout`, unless `tight=False`: a constrained layout, or
    `bbox_inches="tight"` in `savefig_kwargs`), write it to `path` (directories created) and close it."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **savefig_kwargs)
    pyplot().close(fig)
    return path
