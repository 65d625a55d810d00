"""Parameter groups, optimizer builders and the lr scaling rule.

A param group carries ``lr_scale`` and ``wd_scale``; every iteration the loop calls
``apply_schedule(optimizer, lr, wd)``, which sets ``lr = lr * lr_scale`` and
``weight_decay = wd * wd_scale`` per group.  ``wd_scale = 0`` is how a group is exempt
from weight decay, whatever the wd schedule does.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

NamedParams = Iterable[tuple[str, nn.Parameter]]


def _named(model_or_named_params: nn.Module | NamedParams) -> list[tuple[str, nn.Parameter]]:
    if isinstance(model_or_named_params, nn.Module):
        named = model_or_named_params.named_parameters()
    else:
        named = model_or_named_params
    return [(n, p) for n, p in named if p.requires_grad]


def _name_matches(name: str, patterns: Sequence[str]) -> bool:
    """``pos_embed`` matches ``pos_embed`` and ``encoder.pos_embed`` (a dotted suffix)."""
    return any(name == p or name.endswith("." + p) for p in patterns)


def exempt_from_weight_decay(name: str, param: torch.Tensor, no_decay_names: Sequence[str] = (),
                             exclude_1d: bool = True) -> bool:
    """Biases, 1-D parameters (norm scales/shifts) and the named ones get no weight decay
    (DINO / MAE / timm); with ``exclude_1d=False`` only the named ones are exempt (MoCo v3
    decays everything)."""
    if _name_matches(name, no_decay_names):
        return True
    return exclude_1d and (param.ndim <= 1 or name.endswith(".bias") or name == "bias")


def param_groups_weight_decay(model_or_named_params: nn.Module | NamedParams, no_decay_names: Sequence[str] = (),
                              exclude_1d: bool = True, lr_scale: float = 1.0) -> list[dict]:
    """Two groups, ``wd_scale`` 1 and 0; frozen parameters (``requires_grad=False``) are left out.

    ``no_decay_names`` adds exemptions by name, e.g. ``("pos_embed", "cls_token")`` for timm's
    ``no_weight_decay()`` set.  Empty groups are dropped.
    """
    decay, no_decay = [], []
    for name, param in _named(model_or_named_params):
        (no_decay if exempt_from_weight_decay(name, param, no_decay_names, exclude_1d) else decay).append(param)
    groups = [{"params": decay, "wd_scale": 1.0, "lr_scale": lr_scale},
              {"params": no_decay, "wd_scale": 0.0, "lr_scale": lr_scale}]
    return [g for g in groups if g["params"]]


_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING_NAMES = ("patch_embed", "cls_token", "reg_token", "pos_embed", "mask_token", "dist_token")


def vit_layer_id(name: str, depth: int) -> int:
    """BEiT/MAE layer id: embeddings (patch, position, class/register tokens) are 0, block i
    (0-based) is i + 1, everything after the blocks (final norm, head) is depth + 1."""
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if any(part in _EMBEDDING_NAMES for part in name.split(".")):
        return 0
    return depth + 1


def param_groups_layer_decay(model_or_named_params: nn.Module | NamedParams, depth: int, layer_decay: float,
                             no_decay_names: Sequence[str] = (), exclude_1d: bool = True) -> list[dict]:
    """Layer-wise lr decay for ViT fine-tuning (BEiT / MAE / timm): a parameter of layer id
    ``l`` gets ``lr_scale = layer_decay ** (depth + 1 - l)``, so the head keeps the full lr
    and the patch embedding the smallest; each layer is split into decay / no-decay groups."""
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in _named(model_or_named_params):
        layer = vit_layer_id(name, depth)
        exempt = exempt_from_weight_decay(name, param, no_decay_names, exclude_1d)
        group = groups.setdefault((layer, exempt), {
            "params": [], "wd_scale": 0.0 if exempt else 1.0,
            "lr_scale": layer_decay ** (depth + 1 - layer), "layer_id": layer})
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]


def scaled_lr(base_lr: float, global_batch: int, ref: int = 256, rule: str = "linear") -> float:
    """``base_lr * batch / ref`` (linear, Goyal et al.), ``base_lr * sqrt(batch / ref)``, or ``base_lr``."""
    if rule == "linear":
        return base_lr * global_batch / ref
    if rule == "sqrt":
        return base_lr * math.sqrt(global_batch / ref)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown lr scaling rule {rule!r}; use 'linear', 'sqrt' or 'none'")


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set every group's lr and weight decay for this iteration (scaled per group)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_scale", 1.0)


class LARS(torch.optim.Optimizer):
    """LARS as in MoCo v3 / MAE linear probing: for parameters with ndim > 1 the update is
    ``g + wd * p`` rescaled by the trust ratio ``eta * |p| / |g + wd * p|``; 1-D parameters
    (biases, norms) get neither weight decay nor the adaptation.  Then heavy-ball momentum
    ``mu = m * mu + update``, ``p -= lr * mu``."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = group["trust_coefficient"] * param_norm / update_norm
                    ratio = torch.where((param_norm > 0) & (update_norm > 0), trust, torch.ones_like(trust))
                    update = update.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(update)
                p.add_(mu, alpha=-group["lr"])
        return loss


OPTIMIZERS = ("adamw", "sgd", "lars")


def build_optimizer(groups: list[dict], optim_cfg: Mapping) -> torch.optim.Optimizer:
    """AdamW / SGD / LARS over ``groups`` from an ``optim`` config (keys: ``name``, ``lr``,
    ``weight_decay``, ``betas``, ``eps``, ``momentum``, ``nesterov``, ``trust_coefficient``).

    Initial lr / wd are the config values times each group's scales; ``apply_schedule``
    overwrites them every iteration.
    """
    name = str(optim_cfg.get("name", "adamw")).lower()
    lr, wd = float(optim_cfg.get("lr", 0.0)), float(optim_cfg.get("weight_decay", 0.0))
    prepared = []
    for group in groups:
        if not group.get("params"):
            raise ValueError("a param group has no parameters; drop empty groups before building the optimizer")
        prepared.append({**group, "lr": lr * group.get("lr_scale", 1.0),
                         "weight_decay": wd * group.get("wd_scale", 1.0)})
    if name == "adamw":
        betas = tuple(float(b) for b in optim_cfg.get("betas", (0.9, 0.999)))
        return torch.optim.AdamW(prepared, lr=lr, betas=betas, eps=float(optim_cfg.get("eps", 1e-8)))
    if name == "sgd":
        return torch.optim.SGD(prepared, lr=lr, momentum=float(optim_cfg.get("momentum", 0.9)),
                               nesterov=bool(optim_cfg.get("nesterov", False)))
    if name == "lars":
        return LARS(prepared, lr=lr, momentum=float(optim_cfg.get("momentum", 0.9)),
                    trust_coefficient=float(optim_cfg.get("trust_coefficient", 0.001)))
    raise ValueError(f"unknown optimizer {name!r}; use one of {list(OPTIMIZERS)}")
