"""The ``analysis`` protocol: attention distance and NMI per head and block, CKA between
blocks and alignment / uniformity / negative alignment per block, with PNG plots.

Images: ``metrics.n_images`` validation images (a seeded draw) for the attention metrics and
CKA; ``metrics.align_batch`` images, each seen under ``metrics.align_pairs_per_image``
pairs of two random-resized-crop + flip views [inferred: "two pre-training augmentations"],
for alignment and uniformity. Features are the per-block ``eval.token`` after the final norm
(SDSSL's representation), L2-normalised for alignment and uniformity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.vit import attention_probs
from eval import metrics as M
from eval.features import compute_atoms, parse_feature


def _images(ctx, n: int, seed: int) -> torch.Tensor:
    """uint8 ``[n, C, H, W]`` validation images (a seeded draw)."""
    ds = ctx.val.dataset
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:min(n, len(ds))]
    return torch.stack([ds.load_image(int(i)) for i in idx])


def _views(ctx, images: torch.Tensor, seed: int) -> torch.Tensor:
    from common.augment import flip, random_resized_crop

    size = ctx.val.preprocess.size
    crop, hflip = random_resized_crop(size, scale=(0.2, 1.0)), flip()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([hflip(crop(img)) for img in images])


@torch.no_grad()
def _layer_features(ctx, images: torch.Tensor, layers: list[int], batch: int = 128) -> list[torch.Tensor]:
    pre = ctx.val.preprocess
    atoms = [a for l in layers for a in parse_feature(f"{ctx.token}@{l}", ctx.depth)]
    model = ctx.encoder.model.to(ctx.device).eval()
    chunks = [compute_atoms(model, pre(images[s:s + batch]).to(ctx.device), atoms)
              for s in range(0, len(images), batch)]
    return [torch.cat([c[a] for c in chunks]).float().cpu() for a in atoms]


@torch.no_grad()
def attention_metrics(ctx, images: torch.Tensor, layers: list[int], renorm: bool, nmi_tokens: str,
                      batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(MAD [L, H], NMI [L, H])`` weighted by batch size over all images."""
    vit = ctx.encoder.model.to(ctx.device).eval()
    pre = ctx.val.preprocess
    mad = torch.zeros(len(layers), vit.num_heads)
    nmi = torch.zeros(len(layers), vit.num_heads)
    for s in range(0, len(images), batch):
        x = pre(images[s:s + batch]).to(ctx.device)
        probs = attention_probs(vit, x, layers)
        w = len(x) / len(images)
        for i, l in enumerate(layers):
            A = probs[l].cpu()
            mad[i] += w * M.attention_distance(A, vit.grid_size, vit.patch_size, vit.num_prefix_tokens, renorm)
            nmi[i] += w * M.attention_nmi(A, vit.num_prefix_tokens, nmi_tokens)
    return mad, nmi


def run(ctx) -> tuple[dict, str, dict]:
    if not ctx.encoder.is_vit:
        raise ValueError("the analysis protocol needs a ViT encoder (attention maps); not the pixel floor")
    c = ctx.cfg.metrics
    if c.feature != "backbone":
        raise ValueError("metrics.feature=projector needs the method's projector, which encoder.pt does not "
                         "hold; use metrics.feature=backbone")
    layers = ctx.layers
    seed = int(ctx.cfg.seed)
    metrics: dict[str, float] = {}
    plots = ctx.out_dir / "plots"

    images = _images(ctx, int(c.n_images), seed)
    mad, nmi = attention_metrics(ctx, images, layers, bool(c.mad_renorm), str(c.nmi_tokens))
    for i, l in enumerate(layers):
        metrics[f"analysis/mad/layer{l}"] = float(mad[i].mean())
        metrics[f"analysis/nmi/layer{l}"] = float(nmi[i].mean())
        for h in range(mad.shape[1]):
            metrics[f"analysis/mad/layer{l}/head{h}"] = float(mad[i, h])
            metrics[f"analysis/nmi/layer{l}/head{h}"] = float(nmi[i, h])

    feats = _layer_features(ctx, images, layers)
    cka = M.cka_matrix(feats, str(c.cka))
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            if i < j:
                metrics[f"analysis/cka/{a}-{b}"] = float(cka[i, j])

    base = _images(ctx, int(c.align_batch), seed + 1)
    curves = {k: [0.0] * len(layers) for k in ("align", "uniformity", "neg_align")}
    pairs = int(c.align_pairs_per_image)
    for p in range(pairs):
        v1 = _layer_features(ctx, _views(ctx, base, seed + 2 + 2 * p), layers)
        v2 = _layer_features(ctx, _views(ctx, base, seed + 3 + 2 * p), layers)
        for i in range(len(layers)):
            f1, f2 = F.normalize(v1[i], dim=1), F.normalize(v2[i], dim=1)
            curves["align"][i] += M.alignment(f1, f2, float(c.align_gamma)) / pairs
            curves["uniformity"][i] += M.uniformity(f1, float(c.unif_t)) / pairs
            curves["neg_align"][i] += M.negative_alignment(f1, float(c.align_gamma)) / pairs
    for i, l in enumerate(layers):
        ali, uni, neg = curves["align"][i], curves["uniformity"][i], curves["neg_align"][i]
        metrics[f"analysis/align/layer{l}"] = ali
        metrics[f"analysis/uniformity/layer{l}"] = uni
        metrics[f"analysis/neg_align/layer{l}"] = neg
        metrics[f"analysis/align_ratio/layer{l}"] = neg / max(ali, M.EPS)
        metrics[f"analysis/unif_align_ratio/layer{l}"] = -uni / max(ali, M.EPS)

    extra = {"feature": ctx.token, "layers": layers, "n_images": len(images), "align_images": len(base)}
    if c.plots:
        name = ctx.encoder.meta.get("run") or ctx.encoder.meta.get("method") or "encoder"
        extra["plots"] = [str(p) for p in (
            M.plot_per_head(mad, plots / "attention_distance.png", "mean attention distance (px)", name),
            M.plot_per_head(nmi, plots / "attention_nmi.png", "attention NMI", name),
            M.plot_heatmap(cka, plots / "cka.png", f"{c.cka} CKA, {name}", layers),
            M.plot_layer_curves({"-L_uni": [-u for u in curves["uniformity"]], "L_ali": curves["align"],
                                 "-L_uni/L_ali": [metrics[f"analysis/unif_align_ratio/layer{l}"] for l in layers]},
                                plots / "alignment_uniformity.png", "value", name, layers),
            M.plot_layer_curves({"L^n_ali": curves["neg_align"],
                                 "R = L^n_ali/L_ali": [metrics[f"analysis/align_ratio/layer{l}"] for l in layers]},
                                plots / "negative_alignment.png", "value", name, layers))]
    return metrics, f"analysis/mad/layer{layers[-1]}", extra
