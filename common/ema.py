"""Exponential-moving-average teachers and their momentum schedules.

``teacher <- momentum * teacher + (1 - momentum) * student`` for parameters; buffers
(e.g. BatchNorm statistics) are copied from the student, as DINO / MoCo v3 / BYOL do for
teachers that never run their own batch statistics.
"""
from __future__ import annotations

import torch
from torch import nn

from common.schedules import cosine_schedule, linear_schedule


def _matching(teacher: nn.Module, student: nn.Module, kind: str):
    named_t = dict(getattr(teacher, f"named_{kind}")())
    named_s = dict(getattr(student, f"named_{kind}")())
    if named_t.keys() != named_s.keys():
        missing = sorted(named_s.keys() - named_t.keys())
        extra = sorted(named_t.keys() - named_s.keys())
        raise ValueError(f"teacher and student {kind} differ: only in student {missing}, only in teacher {extra}")
    pairs = [(named_t[k], named_s[k]) for k in named_s]
    for (name, (t, s)) in zip(named_s, pairs):
        if t.shape != s.shape:
            raise ValueError(f"{kind[:-1]} {name}: teacher shape {tuple(t.shape)} != student shape {tuple(s.shape)}")
    return pairs


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In-place EMA of ``student`` into ``teacher``; momentum 1 keeps the teacher, 0 copies
    the student (``lerp`` is exact at both ends)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    params = _matching(teacher, student, "parameters")
    if params:
        t_params, s_params = zip(*params)
        torch._foreach_lerp_(list(t_params), [s.detach() for s in s_params], 1.0 - momentum)
    for t_buf, s_buf in _matching(teacher, student, "buffers"):
        t_buf.copy_(s_buf)


def momentum_schedule(step: int, total_steps: int, base_momentum: float, final_momentum: float = 1.0,
                      kind: str = "cosine") -> float:
    """Teacher momentum at iteration ``step``.

    - ``cosine`` (DINO, BYOL, MoCo v3, UDI): ``1 - (1 - m0) (1 + cos(pi t / T)) / 2``;
    - ``linear`` (I-JEPA): ``m0 + t (m1 - m0) / T`` (I-JEPA stretches ``T`` by ``ipe_scale``:
      pass ``total_steps * ipe_scale``).
    """
    if kind == "cosine":
        return cosine_schedule(step, total_steps, base_momentum, final_momentum)
    if kind == "linear":
        return linear_schedule(step, total_steps, base_momentum, final_momentum)
    raise ValueError(f"unknown momentum schedule {kind!r}; use 'cosine' or 'linear'")
