"""Distillation distances of Hybrid Distill, from the paper's Eqs. 1-3.

L = D(T_c(x) ⊙ M, S(M ⊙ x)) + alpha * D(T'_m(x) ⊙ M, S'(M ⊙ x)), D = smooth-L1.

* Feature term: the teacher tokens are whitened by a non-affine per-token LayerNorm
  (FD / dBOT ``norm_feature_loss``); the student tokens pass through a linear head to the
  teacher width (in model.py). Mean over channels, then a token-weighted mean in which the
  class row has weight ``cls_weight`` (1 = every kept token and the class token count once).
* Relation term: per-head token relations of several layers are compared as one tensor
  (Eq. 3 concatenates them), so every layer weighs the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

RELATION_FORMS = ("scaled", "pre_softmax", "softmax")
TARGET_CENTERS = ("none", "batch", "batch_std")  # method.target_center; none = the paper's / dBOT's targets
WHITEN_EPS = 1e-6  # dBOT/FD: (x - mean) / sqrt(var + 1e-6)


def whiten(tokens: torch.Tensor) -> torch.Tensor:
    """Non-affine LayerNorm over channels: every token has zero mean and unit variance."""
    return F.layer_norm(tokens, tokens.shape[-1:], eps=WHITEN_EPS)


def center_targets(tokens: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """``batch``: subtract each channel's mean over the batch's images and rows ``[B, N]`` from
    the (whitened) ``[B, N, D]`` targets, so the part of the target every image shares (the
    dataset-mean token) is not a target; ``batch_std`` also divides each channel by its std
    over ``[B, N]`` (a non-affine BatchNorm of the targets); ``none`` returns them unchanged
    (the paper)."""
    if mode not in TARGET_CENTERS:
        raise ValueError(f"method.target_center={mode!r}; choose one of {TARGET_CENTERS}")
    if mode == "none":
        return tokens
    centered = tokens - tokens.mean(dim=(0, 1), keepdim=True)
    if mode == "batch_std":  # and divide by the channel's std over [B, N]
        centered = centered / torch.sqrt(centered.square().mean(dim=(0, 1), keepdim=True) + WHITEN_EPS)
    return centered


def _row_weights(num_rows: int, cls_weight: float, device) -> torch.Tensor:
    w = torch.ones(num_rows, device=device)
    w[0] = cls_weight
    return w


def feature_distance(student: torch.Tensor, target: torch.Tensor, beta: float = 2.0,
                     cls_weight: float = 1.0) -> torch.Tensor:
    """Smooth-L1 between ``[B, N, D]`` student predictions and (already whitened) targets;
    row 0 is the class token."""
    if student.shape != target.shape:
        raise ValueError(f"feature target {tuple(target.shape)} != student {tuple(student.shape)}")
    per_token = F.smooth_l1_loss(student, target, beta=beta, reduction="none").mean(-1)  # [B, N]
    w = _row_weights(per_token.shape[1], cls_weight, per_token.device)
    return (per_token * w).sum(-1).mean() / w.sum()


def relation_distance(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                      head_dim: int, form: str = "scaled", beta: float = 2.0,
                      include_cls: bool = True) -> torch.Tensor:
    """Distance between per-head relations ``[B, H, N, N]`` of several layers.

    Inputs are ``Q K^T / sqrt(d_head)`` (what ``common.vit`` and the teachers capture).
    ``scaled`` compares them as they are, ``pre_softmax`` compares the unscaled ``Q K^T``
    (Eq. 2 read literally), both with smooth-L1; ``softmax`` compares the attention maps
    softmax(Q K^T / sqrt(d_head)) row by row with KL(teacher || student) (MiniLM style).
    """
    if form not in RELATION_FORMS:
        raise ValueError(f"hd.relation_form={form!r}; choose one of {RELATION_FORMS}")
    if len(student) != len(teacher) or not student:
        raise ValueError(f"{len(student)} student vs {len(teacher)} teacher relation layers")
    s, t = torch.stack(list(student)), torch.stack(list(teacher))  # [layers, B, H, N, N]
    if s.shape != t.shape:
        raise ValueError(f"teacher relations {tuple(t.shape)} != student {tuple(s.shape)}")
    if not include_cls:
        s, t = s[..., 1:, 1:], t[..., 1:, 1:]
    if form == "softmax":
        log_s, log_t = s.log_softmax(-1), t.log_softmax(-1)
        return (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    if form == "pre_softmax":
        s, t = s * math.sqrt(head_dim), t * math.sqrt(head_dim)
    return F.smooth_l1_loss(s, t, beta=beta)
