"""Each paper's claimed direction, tested on the mini runs over pretraining seeds.

A claim "A > B" is measured as the paired difference A - B per seed (seed i of A against seed i
of B: both pretrained with the same `train.seed`), its mean and a 95% Student-t interval over
the seeds. The verdict says only what the interval says: above 0 the claim holds at the mini
scale, below 0 it is reversed, across 0 the difference is within the seed-to-seed noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from eval.stats import mean_std

LEVEL = 0.95
NO_INTERVAL = "one seed: no interval"


@dataclass(frozen=True)
class Claim:
    paper: str
    better: str  # run names of dvc_runs.yaml
    worse: str
    source: str  # where the paper says so


CLAIMS = (
    Claim("bootleg", "bootleg", "ijepa", "abstract: Bootleg outperforms comparable baselines (+10% over I-JEPA)"),
    Claim("bootleg", "bootleg", "mae", "abstract: Bootleg outperforms comparable baselines (MAE, the generative one)"),
    Claim("sdssl", "sd_simclr", "simclr", "abstract: SDSSL outperforms SimCLR in linear and k-NN"),
    Claim("sdssl", "sd_byol", "byol", "abstract: SDSSL outperforms BYOL in linear and k-NN"),
    Claim("sdssl", "sd_moco_v3", "moco_v3", "abstract: SDSSL outperforms MoCo v3 in linear and k-NN"),
    Claim("hybrid_distill", "hybrid_clip", "distill_mae", "Tab. 1: Hybrid Distill surpasses Distill-MAE"),
    Claim("hybrid_distill", "hybrid_clip", "distill_clip", "Tab. 1: Hybrid Distill (CLIP+MAE) outperforms Distill-CLIP"),
    Claim("udi", "udi", "dino", "Tab. 4: UDI outperforms DINO in linear probing and k-NN"),
)


def paired_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """Mean of the paired differences and its two-sided Student-t interval (None, None for n=1)."""
    if not diffs:
        raise ValueError("paired_interval needs at least one difference")
    mean, std = mean_std(diffs)
    if std is None:
        return mean, None, None
    half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def verdict(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return NO_INTERVAL
    if low > 0:
        return "holds"
    if high < 0:
        return "reversed"
    return "within noise"


def assess(better: dict[int, float], worse: dict[int, float]) -> dict | None:
    """The claim "better > worse" over the seed indices both sides have (None if none)."""
    seeds = sorted(set(better) & set(worse))
    if not seeds:
        return None
    diffs = [better[s] - worse[s] for s in seeds]
    mean, low, high = paired_interval(diffs)
    return {"seeds": seeds, "differences": diffs, "mean": mean, "low": low, "high": high,
            "level": LEVEL, "verdict": verdict(low, high)}
