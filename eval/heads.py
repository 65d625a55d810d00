"""Training many classification heads at once on the same batches.

A *grid* is a set of independent heads (feature x learning rate x weight decay). Heads
share nothing but the batch order, so summing their losses and stepping one optimiser with
one param group per head is the same as training each alone -- from a single frozen
forward pass per batch (DINO trains one head; SDSSL's multi-exit trains one per block).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.io import atomic_write
from common.optim import apply_schedule
from common.schedules import cosine_schedule


@dataclass(frozen=True)
class HeadSpec:
    name: str          # unique key, e.g. "cls_last4/lr0.1"
    feature: str       # feature name the head reads
    lr: float          # absolute peak lr (already scaled by batch size)
    weight_decay: float = 0.0


class LinearHead(nn.Module):
    """(standardisation ->) (BatchNorm1d(affine=False, eps 1e-6) ->) Linear, weights ~
    N(0, init_std), bias 0.

    ``standardize``: a fixed per-dimension ``(x - mean) / std`` with the training features'
    statistics (``fit_standardization``), saved with the head. Unlike BatchNorm's eps, it is
    exactly invariant to a per-dimension affine map of the features, so near-constant features
    (a large common offset, a tiny spread: JEPA encoders at init) are as well conditioned as
    any others.
    """

    def __init__(self, in_dim: int, num_classes: int, bn: bool = False, init_std: float = 0.01,
                 standardize: bool = False):
        super().__init__()
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.standardize = bool(standardize)
        if self.standardize:
            self.register_buffer("shift", torch.zeros(in_dim))
            self.register_buffer("scale", torch.ones(in_dim))
        self.bn = nn.BatchNorm1d(in_dim, affine=False, eps=1e-6) if bn else nn.Identity()
        self.linear = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"this probe expects {self.in_dim}-dim features but got {x.shape[-1]}-dim ones: "
                             "extract the feature the probe was trained on (see its `feature`)")
        x = x.float()
        if self.standardize:
            x = (x - self.shift) * self.scale
        return self.linear(self.bn(x))

    @torch.no_grad()
    def fit_standardization(self, features: torch.Tensor) -> None:
        """Mean and 1/std per dimension of ``features`` ``[N, in_dim]`` (float64); a dimension
        with no spread at all gets scale 0 (it carries nothing)."""
        if not self.standardize:
            raise ValueError("this head was built with standardize=False")
        x = features.double()
        mean, std = x.mean(dim=0), x.std(dim=0)
        self.shift.copy_(mean)
        self.scale.copy_(torch.where(std > 0, 1.0 / std, torch.zeros_like(std)))


def build_optimizer(kind: str, groups: list[dict], momentum: float = 0.9):
    """``common.optim`` optimiser whose groups carry their own ``lr_scale`` (= peak lr) and
    ``wd_scale`` (= weight decay): the shared schedule is then a multiplier in [0, 1]."""
    from common.optim import build_optimizer as build

    return build(groups, {"name": kind, "lr": 0.0, "weight_decay": 1.0, "momentum": momentum})


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(#top-1 correct, #top-5 correct)."""
    k = min(5, logits.shape[1])
    ranked = logits.topk(k, dim=1).indices
    hits = ranked.eq(labels.view(-1, 1))
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


class CachedBatches:
    """Shuffled mini-batches of precomputed features; the order depends on (seed, epoch)."""

    def __init__(self, features: dict[str, torch.Tensor], labels: torch.Tensor, batch_size: int, seed: int = 0):
        self.features, self.labels = features, labels.long()
        self.batch_size, self.seed = min(int(batch_size), len(labels)), seed

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size  # drop_last: BatchNorm needs > 1 sample

    def epoch(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(len(self.labels), generator=g)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield {k: v[idx].float() for k, v in self.features.items()}, self.labels[idx]


@torch.no_grad()
def evaluate_heads(heads: dict[str, nn.Module], specs: list[HeadSpec], features: dict[str, torch.Tensor],
                   labels: torch.Tensor, batch_size: int = 4096, forward=None) -> dict[str, tuple[float, float]]:
    """``{head name: (top1 %, top5 %)}`` on held-out features."""
    for head in heads.values():
        head.eval()
    forward = forward or (lambda head, x: head(x))
    counts = {s.name: [0, 0] for s in specs}
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size]
        for s in specs:
            c1, c5 = accuracy(forward(heads[s.name], features[s.feature][start:start + batch_size].float()), y)
            counts[s.name][0] += c1
            counts[s.name][1] += c5
    n = max(1, len(labels))
    return {k: (100.0 * c1 / n, 100.0 * c5 / n) for k, (c1, c5) in counts.items()}


def train_grid(heads: dict[str, nn.Module], specs: list[HeadSpec], batches, val_features: dict[str, torch.Tensor],
               val_labels: torch.Tensor, *, epochs: int, optimizer: str = "sgd", momentum: float = 0.9,
               warmup_epochs: float = 0, report: str = "last", loss_fn=None, forward=None,
               progress: bool = False, desc: str = "probe", max_steps: int | None = None) -> dict[str, dict[str, float]]:
    """Train every head of ``heads`` (keyed by spec name); returns per head
    ``{"top1", "top5", "epoch"}`` (last epoch, or best validation top-1 when report=best).
    ``max_steps`` stops early (tests of paper recipes); the schedule still spans ``epochs``."""
    if report not in ("last", "best"):
        raise ValueError(f"report {report!r} unknown; use last or best")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ValueError("no training batch: the training set is smaller than the batch size")
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    groups = []
    for s in specs:  # no weight decay on biases and norms (1-D params), as V-JEPA's and MAE's probes
        params = [p for p in heads[s.name].parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        groups += [{"params": ps, "lr_scale": s.lr, "wd_scale": wd}
                   for ps, wd in ((decay, s.weight_decay), (rest, 0.0)) if ps]
    opt = build_optimizer(optimizer, groups, momentum)
    loss_fn = loss_fn or F.cross_entropy
    forward = forward or (lambda head, x: head(x))
    results = {s.name: {"top1": -1.0, "top5": -1.0, "epoch": -1} for s in specs}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
    step = 0
    stop_at = total if max_steps is None else min(total, int(max_steps))
    for epoch in range(epochs):
        for head in heads.values():
            head.train()
        for feats, y in batches.epoch(epoch):
            apply_schedule(opt, cosine_schedule(step, total, 1.0, 0.0, warmup), 1.0)
            loss = sum(loss_fn(forward(heads[s.name], feats[s.feature]), y) for s in specs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
            if step == stop_at:
                break
        if report == "best" or epoch == epochs - 1 or step == stop_at:
            accs = evaluate_heads(heads, specs, val_features, val_labels, forward=forward)
            for name, (top1, top5) in accs.items():
                if report == "last" or top1 > results[name]["top1"]:
                    results[name] = {"top1": top1, "top5": top5, "epoch": epoch + 1}
        if step == stop_at:
            break
    if bar is not None:
        bar.close()
    return results


# --------------------------------------------------------------------------- saved probes
def save_probe(path: str | Path, head: nn.Module, feature: str, meta: dict) -> Path:
    payload = {"format": "ssl-vit-probe/1", "kind": type(head).__name__, "feature": feature,
               "in_dim": head.in_dim, "num_classes": head.num_classes, "config": meta,
               "state_dict": head.state_dict()}
    return atomic_write(path, payload)


def load_probe(path: str | Path) -> tuple[LinearHead, str]:
    """A saved linear probe and the feature it reads."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != "ssl-vit-probe/1":
        raise ValueError(f"{path} is not a saved probe (written by eval.heads.save_probe)")
    if payload["kind"] != "LinearHead":
        raise ValueError(f"{path} holds a {payload['kind']}; load it with its own module")
    cfg = payload["config"]
    head = LinearHead(payload["in_dim"], payload["num_classes"], bn=cfg.get("bn", False),
                      standardize=cfg.get("standardize", False))
    head.load_state_dict(payload["state_dict"])
    return head.eval(), payload["feature"]
