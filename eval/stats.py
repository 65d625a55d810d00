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
    """``51.0 ± 1.0``: mean ± sample std, one decimal (the tables' number format); at least two values.
    A std that one decimal would print as 0.0 (seeds agreeing within 0.05) gets two: ``67.51 ± 0.03``."""
    mean, std = mean_std(values)
    if std is None:
        raise ValueError("mean ± std needs at least two values")
    digits = 1 if round(std, 1) > 0 else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
