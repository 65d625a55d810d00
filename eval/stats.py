"""Summaries over pretraining seeds, shared by the paper tables (eval/tables.py) and the
cross-paper results and claims (scripts/results.py, scripts/claims.py)."""
from __future__ import annotations

import statistics
from typing import Iterable


def mean_std(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n-1); no std for a single value."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_pm_std(values: Iterable[float]) -> str:
    """``51.0 ± 1.0``: mean ± sample std, one decimal (the tables' number format); at least two values."""
    mean, std = mean_std(values)
    if std is None:
        raise ValueError("mean ± std needs at least two values")
    return f"{mean:.1f} ± {std:.1f}"
