"""Linear semantic segmentation on frozen patch tokens (protocol ``segment``), DINOv2's "linear"
ADE20K evaluation (iBOT and BEiT report the same kind of linear dense probe):

* features: the final-normed patch tokens of the last ``seg.n_last_blocks`` blocks, concatenated,
  laid out on the patch grid ``[B, D, h, w]`` (class tokens are not used);
* head: BatchNorm2d (``seg.bn``) then a 1x1 convolution = a linear layer per patch; its logits
  are upsampled bilinearly to the label resolution, loss = cross-entropy with the ignore index;
* optimisation: AdamW on the head only, linear warm-up then poly (power 1) decay, iteration-based;
* evaluation: prediction at the annotation's own resolution (``slide`` windows or ``resize``),
  one confusion matrix over the validation set, mIoU = mean over classes present in prediction
  or ground truth of TP / (TP + FP + FN) (mmseg's convention), reported in percent.

Data: ``eval.seg.data`` = the root of an ADE20K-layout folder (``eval.segdata``).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from common.io import atomic_write
from common.provenance import resolve_device
from eval.context import EvalContext
from eval.encoders import PixelEncoder
from eval.features import Extraction, Preprocess
from eval.segdata import (IGNORE, SegmentationFolder, random_scale_crop_flip, resize_pair, short_side_size,
                          window_starts)

VAL_MODES = ("slide", "resize")


def record_dataset(cfg) -> str:
    """The dataset field of the record (the segmentation folder, not ``eval.data``)."""
    return str(cfg.seg.data)


# --------------------------------------------------------------------------- context
def build_context(encoder_path, cfg, out_dir) -> EvalContext:
    from eval.encoders import load as load_encoder_spec

    s = cfg.seg
    if not s.data:
        raise ValueError("protocol segment needs eval.seg.data=<root of an ADE20K-layout folder> "
                         "(images/{training,validation}/*.jpg, annotations/{training,validation}/*.png)")
    if s.val_mode not in VAL_MODES:
        raise ValueError(f"eval.seg.val_mode={s.val_mode!r}; choose one of {VAL_MODES}")
    seed = int(cfg.seed)
    train = SegmentationFolder(s.data, "training", int(s.num_classes), cfg.train_subset, seed)
    val = SegmentationFolder(s.data, "validation", int(s.num_classes), cfg.val_subset, seed)
    # ADE20K-like photographs: the floors get ImageNet statistics; the pixel floor's size is the crop
    encoder = load_encoder_spec(str(encoder_path), "imagenet", (3, int(s.img_size or 224)), seed=seed)
    pre = Preprocess(encoder.meta, "none")
    return EvalContext(encoder=encoder, cfg=cfg, train=Extraction(train, "training", pre, cfg.train_subset, seed),
                       val=Extraction(val, "validation", pre, cfg.val_subset, seed),
                       num_classes=int(s.num_classes), device=resolve_device(cfg.device), out_dir=Path(out_dir))


def crop_size(ctx) -> int:
    return int(ctx.cfg.seg.img_size or ctx.train.preprocess.size)


def frozen_backbone(ctx, size: int) -> nn.Module:
    """The encoder in eval mode, rebuilt with a resampled position table when the crop is not
    the size it was trained at (DINOv2 evaluates its 224-px models on 512-px crops)."""
    model = ctx.encoder.model
    if not isinstance(model, PixelEncoder) and tuple(model.patch_embed.img_size) != (size, size):
        from common.vit import ViT

        resized = ViT(**{**model.arch, "dynamic_img_size": True})
        resized.load_state_dict(model.state_dict())
        model = resized
    return model.to(ctx.device).eval().requires_grad_(False)


def patch_features(model: nn.Module, x: torch.Tensor, n_last_blocks: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, D * n, H/p, W/p]``: final-normed patch tokens of the last n blocks."""
    B, _, H, W = x.shape
    p = model.patch_size
    if isinstance(model, PixelEncoder):
        tokens = model.patchify(x)
    else:
        if not 1 <= n_last_blocks <= model.depth:
            raise ValueError(f"eval.seg.n_last_blocks={n_last_blocks}: the encoder has {model.depth} blocks")
        layers = list(range(model.depth - n_last_blocks + 1, model.depth + 1))
        out = model(x, layers=layers, norm_layers=True)
        P = model.num_prefix_tokens
        tokens = torch.cat([out.hidden[layer][:, P:] for layer in layers], dim=-1)
    return tokens.float().transpose(1, 2).reshape(B, tokens.shape[-1], H // p, W // p)


class LinearSegHead(nn.Module):
    """BatchNorm2d (optional) + 1x1 convolution, logits upsampled bilinearly to ``size``."""

    def __init__(self, dim: int, num_classes: int, bn: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(dim) if bn else nn.Identity()
        self.conv = nn.Conv2d(dim, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)  # mmseg decode-head init
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.conv(self.bn(features))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- training
class TrainCrops(Dataset):
    """Sample ``k`` of the run: image ``perm_e[k % n]`` of pass ``e = k // n``, augmented from
    ``(seed, k)``, so the run is reproducible whatever the loader workers."""

    def __init__(self, dataset: SegmentationFolder, pre: Preprocess, crop: int, scale_range, flip: bool,
                 seed: int, total: int):
        self.dataset, self.pre, self.crop, self.scale_range, self.flip = dataset, pre, crop, tuple(scale_range), flip
        self.seed, self.total = seed, total

    def __len__(self) -> int:
        return self.total

    @lru_cache(maxsize=2)
    def order(self, epoch: int) -> list[int]:
        return torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch)).tolist()

    def __getitem__(self, k: int):
        n = len(self.dataset)
        image, label = self.dataset[self.order(k // n)[k % n]]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        image, label = random_scale_crop_flip(image, label, self.crop, self.scale_range, self.flip, gen)
        return self.pre.normalise(self.pre.channels(image)), label


def lr_at(it: int, s) -> float:
    """Linear warm-up over ``warmup_iters``, times poly decay ``(1 - it/iters)^1`` to 0."""
    warm = min(1.0, (it + 1) / int(s.warmup_iters)) if int(s.warmup_iters) > 0 else 1.0
    return float(s.lr) * warm * (1.0 - it / int(s.iters))


def train_head(ctx, model: nn.Module, head: LinearSegHead, crop: int) -> tuple[list[float], int]:
    """The head's losses and the iterations run: ``seg.iters``, or ``max_steps`` when set (tests of
    paper recipes stop early; the warm-up and poly schedule still span ``seg.iters``)."""
    s = ctx.cfg.seg
    batch, iters = int(s.batch_size), int(s.iters)
    stop_at = iters if ctx.cfg.max_steps is None else min(iters, int(ctx.cfg.max_steps))
    crops = TrainCrops(ctx.train.dataset, ctx.train.preprocess, crop, s.scale_range, bool(s.flip),
                       int(ctx.cfg.seed), batch * iters)
    loader = DataLoader(crops, batch_size=batch, shuffle=False, num_workers=int(ctx.cfg.num_workers))
    optimizer = torch.optim.AdamW(head.parameters(), lr=float(s.lr), weight_decay=float(s.weight_decay))
    head.to(ctx.device).train()
    losses = []
    batches = enumerate(loader)
    if ctx.cfg.progress:
        from tqdm import tqdm
        batches = tqdm(batches, total=stop_at, desc="segmentation head", dynamic_ncols=True, mininterval=1.0, leave=False)
    done = 0
    for it, (images, labels) in batches:
        if it >= stop_at:
            break
        done = it + 1
        labels = labels.to(ctx.device)
        if not (labels != IGNORE).any():
            continue  # a batch of unlabelled crops carries no gradient
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it, s)
        with torch.no_grad():
            features = patch_features(model, images.to(ctx.device), int(s.n_last_blocks))
        loss = F.cross_entropy(head(features, tuple(labels.shape[-2:])), labels, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses, done


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(ctx, model: nn.Module, head: LinearSegHead, image: torch.Tensor, crop: int) -> torch.Tensor:
    """``[H, W]`` class indices for one uint8 image, at its own resolution."""
    s, pre = ctx.cfg.seg, ctx.val.preprocess
    H, W = image.shape[-2:]

    def logits_of(x: torch.Tensor, size) -> torch.Tensor:
        x = pre.normalise(pre.channels(x))[None].to(ctx.device)
        return head(patch_features(model, x, int(s.n_last_blocks)), size)[0]

    if s.val_mode == "resize":
        x, _ = resize_pair(image, None, (crop, crop))
        return logits_of(x, (H, W)).argmax(0).cpu()
    rh, rw = short_side_size(H, W, crop)
    x, _ = resize_pair(image, None, (rh, rw))
    stride = max(1, round(crop * float(s.val_stride)))
    total = torch.zeros(int(s.num_classes), rh, rw, device=ctx.device)
    count = torch.zeros(1, rh, rw, device=ctx.device)
    for top in window_starts(rh, crop, stride):
        for left in window_starts(rw, crop, stride):
            total[:, top:top + crop, left:left + crop] += logits_of(x[:, top:top + crop, left:left + crop], (crop, crop))
            count[:, top:top + crop, left:left + crop] += 1
    logits = F.interpolate((total / count)[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    return logits.argmax(0).cpu()


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` counts, rows = ground truth, columns = prediction; IGNORE pixels left out."""
    valid = label != IGNORE
    index = label[valid] * num_classes + pred[valid]
    return torch.bincount(index.flatten(), minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(conf: torch.Tensor) -> dict:
    """mIoU / mAcc over the classes present (NaN classes skipped) and pixel accuracy, in percent."""
    conf = conf.double()
    tp, truth, predicted = conf.diag(), conf.sum(1), conf.sum(0)
    iou = tp / (truth + predicted - tp)  # 0/0 = NaN: a class absent from both is not scored
    acc = tp / truth
    return {"mIoU": 100 * float(iou.nanmean()), "mAcc": 100 * float(acc.nanmean()),
            "aAcc": 100 * float(tp.sum() / conf.sum()), "per_class_iou": (100 * iou).tolist()}


def run(ctx) -> tuple[dict, str, dict]:
    s = ctx.cfg.seg
    crop = crop_size(ctx)
    model = frozen_backbone(ctx, crop)
    torch.manual_seed(int(ctx.cfg.seed))
    probe_in = patch_features(model, torch.zeros(1, ctx.train.preprocess.in_chans, crop, crop, device=ctx.device),
                              int(s.n_last_blocks))
    head = LinearSegHead(probe_in.shape[1], int(s.num_classes), bool(s.bn))
    losses, steps = train_head(ctx, model, head, crop)
    head.eval()
    conf = torch.zeros(int(s.num_classes), int(s.num_classes), dtype=torch.long)
    for i in range(len(ctx.val.dataset)):
        image, label = ctx.val.dataset[i]
        conf += confusion_matrix(predict(ctx, model, head, image, crop), label, int(s.num_classes))
    scores = segmentation_scores(conf)
    metrics = {f"segment/{k}": v for k, v in scores.items() if k != "per_class_iou"}
    probe = atomic_write(ctx.artifact_path("segment_head", "seg"),
                         {"format": "ssl-vit-seg-probe/1", "state_dict": head.cpu().state_dict(),
                          "config": {"n_last_blocks": int(s.n_last_blocks), "bn": bool(s.bn), "crop": crop}})
    per_class = [None if v != v else v for v in scores["per_class_iou"]]  # NaN (absent class) -> JSON null
    extra = {"per_class_iou": per_class, "crop": crop, "val_mode": s.val_mode, "steps": steps,
             "final_loss": losses[-1] if losses else None, "probe": str(probe)}
    return metrics, "segment/mIoU", extra
