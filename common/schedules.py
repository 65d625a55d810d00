"""Per-iteration schedules (lr, weight decay, EMA momentum, temperatures, loss weights).

Every schedule is a pure function of the 0-based iteration ``step``: nothing to store in a
checkpoint, and a resumed run gets the same value as an uninterrupted one.  Steps past
``total_steps`` hold the final value.

Two conventions exist in the reference code and both are kept exactly:
- DINO (``utils.cosine_scheduler``): ``warmup_steps`` values ``linspace(start, base)``
  (the last warmup step already equals ``base``), then
  ``final + (base - final) * (1 + cos(pi * t / T)) / 2`` with ``t = step - warmup`` and
  ``T = total - warmup``.  MoCo v3, BYOL, DINO momentum/lr/wd and UDI use it.
- I-JEPA (``src/utils/schedulers.py``): the scheduler's ``step()`` runs before the value is
  used, so iteration ``i`` sees the schedule at ``i + 1``; warmup is ``start + (ref -
  start) * s / W``.  Bootleg follows I-JEPA.
"""
from __future__ import annotations

import math
from collections.abc import Callable


def _check(total_steps: int, warmup_steps: int) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in 0..total_steps={total_steps}, got {warmup_steps}")


def _dino_warmup(step: int, warmup_steps: int, start_value: float, base_value: float) -> float:
    """Value of ``numpy.linspace(start_value, base_value, warmup_steps)[step]``."""
    if warmup_steps == 1:
        return start_value
    return start_value + (base_value - start_value) * step / (warmup_steps - 1)


def cosine_schedule(step: int, total_steps: int, base_value: float, final_value: float,
                    warmup_steps: int = 0, start_warmup_value: float = 0.0) -> float:
    """DINO's ``cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs,
    start_warmup_value)[step]`` with ``total_steps = epochs * niter_per_ep``."""
    _check(total_steps, warmup_steps)
    if step < warmup_steps:
        return _dino_warmup(step, warmup_steps, start_warmup_value, base_value)
    t, decay_steps = step - warmup_steps, total_steps - warmup_steps
    if t >= decay_steps:
        return final_value
    return final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * t / decay_steps))


def linear_schedule(step: int, total_steps: int, base_value: float, final_value: float,
                    warmup_steps: int = 0, start_warmup_value: float = 0.0) -> float:
    """DINO-style warmup, then a straight line from ``base_value`` (first step after warmup)
    to ``final_value`` (reached at ``total_steps``).  Without warmup this is I-JEPA's
    momentum ramp ``m0 + step * (m1 - m0) / total_steps``."""
    _check(total_steps, warmup_steps)
    if step < warmup_steps:
        return _dino_warmup(step, warmup_steps, start_warmup_value, base_value)
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps)) if total_steps > warmup_steps else 1.0
    return base_value + (final_value - base_value) * progress


def constant_schedule(step: int, total_steps: int, base_value: float, final_value: float | None = None,
                      warmup_steps: int = 0, start_warmup_value: float = 0.0) -> float:
    """DINO-style warmup, then ``base_value`` (``final_value`` is ignored; it is accepted so
    every schedule has the same signature)."""
    _check(total_steps, warmup_steps)
    if step < warmup_steps:
        return _dino_warmup(step, warmup_steps, start_warmup_value, base_value)
    return base_value


SCHEDULES: dict[str, Callable[..., float]] = {
    "cosine": cosine_schedule,
    "linear": linear_schedule,
    "constant": constant_schedule,
}


def get_schedule(kind: str) -> Callable[..., float]:
    """The schedule function called ``kind`` (a config value)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; use one of {sorted(SCHEDULES)}")
    return SCHEDULES[kind]


# --------------------------------------------------------------------------- I-JEPA
def ijepa_warmup_cosine(step: int, total_steps: int, start_value: float, ref_value: float,
                        final_value: float, warmup_steps: int) -> float:
    """I-JEPA ``WarmupCosineSchedule`` as seen by iteration ``step``: linear warmup from
    ``start_value`` to ``ref_value`` over ``warmup_steps``, then cosine to ``final_value`` at
    ``total_steps`` (never below ``final_value``)."""
    _check(total_steps, warmup_steps)
    s = step + 1
    if s < warmup_steps:
        return start_value + (ref_value - start_value) * s / max(1, warmup_steps)
    progress = (s - warmup_steps) / max(1, total_steps - warmup_steps)
    value = final_value + (ref_value - final_value) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return max(final_value, value)


def ijepa_cosine_wd(step: int, total_steps: int, ref_value: float, final_value: float) -> float:
    """I-JEPA ``CosineWDSchedule``: a cosine ramp from ``ref_value`` to ``final_value``
    (0.04 -> 0.4, increasing) as seen by iteration ``step``."""
    _check(total_steps, 0)
    progress = min(1.0, (step + 1) / total_steps)
    return final_value + (ref_value - final_value) * 0.5 * (1 + math.cos(math.pi * progress))
