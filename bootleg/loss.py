"""Targets and losses of Bootleg, I-JEPA and MAE.

Bootleg (paper Fig. 1): the predictor regresses, at the target positions, the teacher's
hidden states of K layers at once. Each layer is normalised on its own, the K layers are
concatenated along channels, and the regression loss of every layer is averaged with
per-layer weights. I-JEPA is the special case K = 1 with the final (normed) output, layer
norm and smooth-L1 (its code; its paper writes L2). MAE regresses per-patch pixels.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

TARGET_NORMS = ("layer", "instance", "none")
LOSSES = ("mse", "smooth_l1", "l1")


def normalize_target(h: torch.Tensor, mode: str, eps: float = 1e-5) -> torch.Tensor:
    """Normalise one teacher layer ``h`` ``[B, N, D]`` (all N tokens of the full image).

    ``layer``: per token over D without affine parameters (I-JEPA's ``F.layer_norm``);
    ``instance``: per channel over the N tokens of each image (data2vec's
    ``instance_norm_target_layer``); ``none``: unchanged.
    """
    if mode == "layer":
        return F.layer_norm(h, h.shape[-1:], eps=eps)
    if mode == "instance":
        return F.instance_norm(h.transpose(1, 2), eps=eps).transpose(1, 2)
    if mode == "none":
        return h
    raise ValueError(f"method.target_norm={mode!r}; choose one of {TARGET_NORMS}")


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, kind: str,
                     beta: float = 1.0) -> torch.Tensor:
    if kind == "mse":
        return (pred - target).pow(2)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    if kind == "l1":
        return (pred - target).abs()
    raise ValueError(f"method.loss={kind!r}; choose one of {LOSSES}")


def layer_weights(spec: str | Sequence[float], n_layers: int) -> torch.Tensor:
    """``equal`` -> 1/K each (the mean over all K*D channels); a list is used as given."""
    if isinstance(spec, str):
        if spec != "equal":
            raise ValueError(f"method.layer_weights={spec!r}; use 'equal' or a list of "
                             f"{n_layers} numbers")
        return torch.full((n_layers,), 1.0 / n_layers)
    weights = torch.tensor([float(w) for w in spec])
    if len(weights) != n_layers:
        raise ValueError(f"method.layer_weights has {len(weights)} entries but there are "
                         f"{n_layers} target layers; give one weight per target layer")
    return weights


def layerwise_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, kind: str,
                   beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum over layers of each layer's mean loss.

    ``pred`` and ``target`` are ``[..., K*D]`` (K layers concatenated); returns the total
    and the ``[K]`` per-layer means (for logging).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    k = len(weights)
    per_element = elementwise_loss(pred, target.detach(), kind, beta)
    per_layer = per_element.reshape(-1, k, pred.shape[-1] // k).mean(dim=(0, 2))
    return (weights.to(per_layer) * per_layer).sum(), per_layer.detach()


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, N, p*p*C]`` in raster patch order (MAE's layout)."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def pixel_targets(images: torch.Tensor, patch_size: int, norm_pix: bool) -> torch.Tensor:
    """MAE targets: patch pixels, standardised per patch when ``norm_pix`` (MAE's default)."""
    x = patchify(images, patch_size)
    if norm_pix:
        mean, var = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True)
        x = (x - mean) / (var + 1e-6).sqrt()
    return x
