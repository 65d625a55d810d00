"""Linear probes on frozen features: a grid of heads (feature types x learning rates)
trained together from one frozen forward pass per batch; per-layer probes (SDSSL
multi-exit) are the grid with one feature per block.

Recipes (DINO, MoCo v3, SDSSL, SDSSL multi-exit, UDI, MAE-BN) are configs of this one
implementation (``eval/configs/linear/``). With ``linear.aug: none`` the heads train on
cached features (mini scale); otherwise every epoch re-encodes augmented images.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from eval import features as F
from eval.heads import CachedBatches, HeadSpec, LinearHead, save_probe, train_grid


def feature_grid(ctx) -> list[str]:
    """Feature names the heads read (``linear.features``, per-layer, or the recipe's)."""
    c = ctx.cfg.linear
    token = ctx.token
    if c.per_layer:
        return [f"{token}@{l}" for l in ctx.layers]
    if c.features:
        return list(c.features)
    n = min(int(c.n_last_blocks), ctx.depth)
    name = token if n == 1 else f"{token}_last{n}"
    if c.avgpool and token not in ("avgpool", "pixels"):
        name += "+avgpool"
    return [name]


def lr_tag(base_lr: float) -> str:
    return f"lr{base_lr:g}"


def head_specs(features: list[str], base_lrs: list[float], batch_size: int, weight_decay: float) -> list[HeadSpec]:
    """One head per (feature, base lr); the absolute lr is ``base x batch_size / 256``."""
    return [HeadSpec(f"{f}/{lr_tag(lr)}", f, lr * batch_size / 256.0, weight_decay)
            for f in features for lr in base_lrs]


class AugmentedBatches:
    """Every epoch, augmented training images through the frozen encoder (paper scale)."""

    def __init__(self, ctx, features: list[str], transform, batch_size: int, seed: int):
        self.ctx, self.features = ctx, features
        self.atoms_of = {f: F.parse_feature(f, ctx.depth) for f in features}
        self.atoms = sorted({a for v in self.atoms_of.values() for a in v})
        self.dataset = F.SeededAugmentation(ctx.train.dataset, transform, seed=seed)
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    @torch.no_grad()
    def _encode(self, images):
        model = self.ctx.encoder.model.to(self.ctx.device).eval()
        values = F.compute_atoms(model, images.to(self.ctx.device), self.atoms)
        return {k: v.float().cpu() for k, v in F.assemble(self.atoms_of, values).items()}

    def epoch(self, epoch: int):
        self.dataset.set_epoch(epoch)
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                            generator=g, num_workers=int(self.ctx.cfg.num_workers))
        for images, labels in loader:
            yield self._encode(images), labels.long()


def train_transform(ctx, kind: str):
    """uint8 ``[C, H, W]`` -> augmented normalised float: ``plain`` (RRC + flip), ``mugs_strong``
    (UDI linear probe) or ``autoaug`` (V-JEPA attentive probe: AutoAugment + random erasing)."""
    from torchvision.transforms import v2

    from common.augment import flip, random_resized_crop

    pre = ctx.train.preprocess
    steps = [random_resized_crop(pre.size, scale=(0.08, 1.0)), flip()]
    if kind == "mugs_strong":
        # Mugs/UDI: RandAugment m9 (torchvision's, without timm's magnitude noise) + colour jitter 0.4
        steps += [v2.RandAugment(num_ops=2, magnitude=9), v2.ColorJitter(0.4, 0.4, 0.4)]
    elif kind == "autoaug":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))  # timm's 'original' policy is ImageNet's
    elif kind != "plain":
        raise ValueError(f"augmentation {kind!r} unknown; use none, plain, mugs_strong or autoaug")
    steps += [pre.channels, pre.normalise]
    if kind in ("mugs_strong", "autoaug"):
        steps.append(v2.RandomErasing(p=0.25))
    return v2.Compose(steps)


def run(ctx) -> tuple[dict, str, dict]:
    c = ctx.cfg.linear
    feats = feature_grid(ctx)
    base_lrs = list(c.lr_sweep) if c.lr_sweep else [float(c.lr)]
    batch_size = int(c.batch_size)
    specs = head_specs(feats, base_lrs, batch_size, float(c.weight_decay))
    val = ctx.features("val", feats)
    dims = {f: v.shape[-1] for f, v in val.items()}
    # torch seeds every process at random: the heads' initial weights must come after this
    torch.manual_seed(int(ctx.cfg.seed))
    heads = {s.name: LinearHead(dims[s.feature], ctx.num_classes, bn=bool(c.bn), init_std=float(c.init_std),
                                standardize=bool(c.standardize)) for s in specs}
    if c.standardize:  # statistics of the unaugmented training features, also when the heads see augmented ones
        train_feats = ctx.features("train", feats)
        for s in specs:
            heads[s.name].fit_standardization(train_feats[s.feature])
    if c.aug == "none":
        batches = CachedBatches(ctx.features("train", feats), ctx.labels("train"), batch_size, int(ctx.cfg.seed))
    else:
        batches = AugmentedBatches(ctx, feats, train_transform(ctx, c.aug), batch_size, int(ctx.cfg.seed))
    results = train_grid(heads, specs, batches, val, ctx.labels("val"), epochs=int(c.epochs),
                         optimizer=c.optimizer, momentum=float(c.momentum), warmup_epochs=float(c.warmup_epochs),
                         report=c.report, progress=bool(ctx.cfg.progress), desc="linear heads",
                         max_steps=ctx.cfg.max_steps)
    metrics = {}
    for s in specs:
        metrics[f"linear/{s.name}/top1"] = results[s.name]["top1"]
        metrics[f"linear/{s.name}/top5"] = results[s.name]["top5"]
    for f in feats:  # best lr per feature: the per-layer curve reads these
        best = max((s for s in specs if s.feature == f), key=lambda s: results[s.name]["top1"])
        metrics[f"linear/{f}/best/top1"] = results[best.name]["top1"]
        metrics[f"linear/{f}/best/top5"] = results[best.name]["top5"]
    best = max(specs, key=lambda s: results[s.name]["top1"])
    metrics["linear/best/top1"] = results[best.name]["top1"]
    metrics["linear/best/top5"] = results[best.name]["top5"]
    probe_path = save_probe(ctx.artifact_path("linear_best", "linear"), heads[best.name], best.feature,
                            {"bn": bool(c.bn), "standardize": bool(c.standardize), "lr": best.lr,
                             "protocol": c.protocol})
    extra = {"best_head": best.name, "feature": best.feature, "linear_protocol": c.protocol,
             "probe": str(probe_path), "features": feats}
    return metrics, "linear/best/top1", extra
