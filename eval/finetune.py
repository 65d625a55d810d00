"""End-to-end fine-tuning, and supervised training from scratch (the DeiT-analogue teacher
of Hybrid Distill) through the same entry.

Recipes (``eval/configs/finetune/``): ``dbot`` (Hybrid Distill / MAE style: mean of the
pre-norm patch tokens -> ``fc_norm`` -> linear, as MAE's ``global_pool``), ``beit_ibot`` and
``deit`` (class-token head), ``supervised`` (from scratch, no layer decay). AdamW with
BEiT/MAE layer-wise lr decay (``common.optim.param_groups_layer_decay``), no weight decay on
biases, norms, position embedding and class tokens; lr = base x batch/256, per-step warmup +
cosine to ``min_lr``; mixup / cutmix (timm ``Mixup``, soft-target CE) and label smoothing as
switches; RandAugment and random erasing as augmentation switches.
Reproducible: each sample's augmentation is drawn from (seed, epoch, index), each step's
mixup / cutmix and drop path from (seed, step), whichever RNG (Python, numpy, torch) draws.
With ``finetune.export_encoder`` the trained encoder is written with
``common.checkpoint.export_encoder`` so that it can serve as a teacher.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common.optim import apply_schedule, build_optimizer, param_groups_layer_decay, scaled_lr
from common.schedules import cosine_schedule
from common.train import mix_seed, seed_everything
from common.vit import ViT
from eval.features import SeededAugmentation, iter_images
from eval.heads import accuracy

NO_DECAY = ("pos_embed", "cls_token", "reg_token")


class Classifier(nn.Module):
    """ViT encoder + classification head (``avg``: MAE fc_norm head; ``token``: class token)."""

    def __init__(self, encoder: ViT, num_classes: int, global_pool: str = "avg", head_init_std: float = 2e-5):
        super().__init__()
        if global_pool not in ("avg", "token"):
            raise ValueError(f"finetune.global_pool {global_pool!r} unknown; use avg or token")
        if global_pool == "token" and encoder.num_class_tokens == 0:
            raise ValueError("finetune.global_pool=token needs a class token; this encoder has none: use avg")
        self.encoder, self.global_pool = encoder, global_pool
        D = encoder.embed_dim
        self.fc_norm = nn.LayerNorm(D, eps=1e-6) if global_pool == "avg" else nn.Identity()
        self.head = nn.Linear(D, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        if self.global_pool == "avg":
            # MAE/dBOT: average the residual stream before the final norm, then fc_norm
            h = enc(x, layers=[enc.depth], norm_layers=False).hidden[enc.depth]
            return self.head(self.fc_norm(h[:, enc.num_prefix_tokens:].mean(dim=1)))
        return self.head(enc(x).tokens[:, 0])


def build_encoder(ctx, drop_path: float, from_scratch: bool) -> ViT:
    """The encoder to train: the loaded weights (or a seeded fresh init) with ``drop_path``."""
    if not ctx.encoder.is_vit:
        raise ValueError("finetune needs a ViT; the pixel floor has no weights "
                         "(use checkpoint=random:<arch> for the from-scratch floor)")
    arch = dict(ctx.encoder.arch, drop_path_rate=float(drop_path))
    torch.manual_seed(int(ctx.cfg.seed))
    vit = ViT(**arch)
    if not from_scratch:
        vit.load_state_dict(ctx.encoder.model.state_dict())
    return vit


def train_transform(ctx, aug: str, reprob: float):
    from torchvision.transforms import v2

    from common.augment import flip, random_resized_crop

    pre = ctx.train.preprocess
    if aug == "none":
        steps = [pre.geometry]
    elif aug in ("plain", "randaug"):
        steps = [random_resized_crop(pre.size, scale=(0.08, 1.0)), flip()]
        if aug == "randaug":
            # rand-m9-mstd0.5-inc1 approximated by torchvision's RandAugment(2 ops, magnitude 9)
            steps.append(v2.RandAugment(num_ops=2, magnitude=9))
    else:
        raise ValueError(f"finetune.aug {aug!r} unknown; use none, plain or randaug")
    steps += [pre.channels, pre.normalise]
    if reprob > 0:
        steps.append(v2.RandomErasing(p=reprob, value=0))
    return v2.Compose(steps)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, ctx, batch_size: int) -> tuple[float, float]:
    model.eval()
    c1 = c5 = n = 0
    for images, labels in iter_images(ctx.val.dataset, ctx.val.preprocess, batch_size, int(ctx.cfg.num_workers)):
        a, b = accuracy(model(images.to(ctx.device)).cpu(), labels)
        c1, c5, n = c1 + a, c5 + b, n + len(labels)
    return 100.0 * c1 / n, 100.0 * c5 / n


def export_trained(ctx, model: Classifier, path: str, step: int, section_hash: str) -> tuple[str, str]:
    from common.checkpoint import export_encoder

    c = ctx.cfg.finetune
    meta = ctx.encoder.meta
    method = "supervised" if c.from_scratch else f"{meta.get('method', 'encoder')}-finetuned"
    new_meta = {"method": method, "paper": meta.get("paper"), "run": meta.get("run"),
                "config_hash": section_hash, "step": step,
                "feature": "cls" if c.global_pool == "token" else "avgpool",
                "img_size": ctx.train.preprocess.size, "in_chans": ctx.train.preprocess.in_chans,
                "mean": ctx.train.preprocess.mean.flatten().tolist(), "std": ctx.train.preprocess.std.flatten().tolist(),
                "finetune_recipe": c.recipe, "dataset": ctx.cfg.data, "source_sha256": ctx.encoder.sha256}
    sha = export_encoder(model.encoder.eval(), path, new_meta)
    return str(path), sha


def run(ctx) -> tuple[dict, str, dict]:
    from common.data import subset_indices
    from eval.settings import section_hash

    c = ctx.cfg.finetune
    seed = int(ctx.cfg.seed)
    encoder = build_encoder(ctx, float(c.drop_path), bool(c.from_scratch))
    model = Classifier(encoder, ctx.num_classes, str(c.global_pool),
                       head_init_std=0.02 if c.from_scratch else 2e-5).to(ctx.device)
    train_ds = ctx.train.dataset
    # finetune.train_subset subsamples the eval's training images; when the eval already uses
    # fewer (eval.train_subset), those are all the fine-tuning gets
    if c.train_subset and int(c.train_subset) < len(train_ds):
        train_ds = train_ds.subset(subset_indices(train_ds.targets, int(c.train_subset), seed))
    batch_size = int(c.batch_size)
    if len(train_ds) < batch_size:
        raise ValueError(f"finetune: {len(train_ds)} training images < finetune.batch_size={batch_size}")
    data = SeededAugmentation(train_ds, train_transform(ctx, str(c.aug), float(c.reprob)), seed=seed)
    steps_per_epoch = len(data) // batch_size
    total = steps_per_epoch * int(c.epochs)
    warmup = min(total, int(round(float(c.warmup_epochs) * steps_per_epoch)))
    groups = param_groups_layer_decay(model.named_parameters(), encoder.depth, float(c.layer_decay),
                                      no_decay_names=NO_DECAY)
    peak = scaled_lr(float(c.lr), batch_size)
    opt = build_optimizer(groups, {"name": "adamw", "lr": peak, "weight_decay": float(c.weight_decay),
                                   "betas": (0.9, 0.999)})
    mixing = float(c.mixup) > 0 or float(c.cutmix) > 0
    if mixing:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        mixer = Mixup(mixup_alpha=float(c.mixup), cutmix_alpha=float(c.cutmix),
                      label_smoothing=float(c.label_smoothing), num_classes=ctx.num_classes)
        criterion = SoftTargetCrossEntropy()
    else:
        mixer = None

        def criterion(logits, y):
            return F.cross_entropy(logits, y, label_smoothing=float(c.label_smoothing))

    bar = None
    if ctx.cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="finetune", leave=False, dynamic_ncols=True, mininterval=1.0)
    best = {"top1": -1.0, "top5": -1.0, "epoch": 0}
    step, loss_sum, loss_n = 0, 0.0, 0
    stop_at = total if ctx.cfg.max_steps is None else min(total, int(ctx.cfg.max_steps))
    for epoch in range(int(c.epochs)):
        data.set_epoch(epoch)
        model.train()
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                            num_workers=int(ctx.cfg.num_workers),
                            generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for images, labels in loader:
            images, labels = images.to(ctx.device), labels.to(ctx.device)
            # timm's Mixup draws from numpy and drop path from torch; seeding per step keeps the
            # draws independent of the process and of what ran before (the evaluations of report=best)
            seed_everything(mix_seed(seed, 0xF1AE, step))
            if mixer is not None:
                images, labels = mixer(images, labels)
            apply_schedule(opt, cosine_schedule(step, total, peak, float(c.min_lr), warmup), float(c.weight_decay))
            loss = criterion(model(images), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"finetune: non-finite loss at step {step}; lower finetune.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if float(c.clip_grad) > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(c.clip_grad))
            opt.step()
            step += 1
            if epoch == int(c.epochs) - 1 or stop_at < total:  # a capped run reports its steps' loss
                loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            if bar is not None:
                bar.update(1)
            if step == stop_at:
                break
        if c.report == "best" or epoch == int(c.epochs) - 1 or step == stop_at:
            top1, top5 = evaluate_classifier(model, ctx, int(ctx.cfg.batch_size))
            if c.report == "last" or top1 > best["top1"]:
                best = {"top1": top1, "top5": top5, "epoch": epoch + 1}
        if step == stop_at:
            break
    if bar is not None:
        bar.close()
    metrics = {"finetune/top1": best["top1"], "finetune/top5": best["top5"],
               "finetune/last_epoch_loss": loss_sum / max(1, loss_n)}
    extra = {"recipe": c.recipe, "from_scratch": bool(c.from_scratch), "epochs": int(c.epochs),
             "steps": step, "train_images": len(train_ds), "reported_epoch": best["epoch"]}
    if c.export_encoder:
        extra["exported_encoder"], extra["exported_sha256"] = export_trained(
            ctx, model.cpu(), str(c.export_encoder), step, section_hash(ctx.cfg, "finetune"))
    return metrics, "finetune/top1", extra
