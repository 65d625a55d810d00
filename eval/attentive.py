"""Attentive probe on frozen patch tokens (the protocol Bootleg reports).

``vjepa`` follows facebookresearch/jepa ``AttentivePooler`` + ``AttentiveClassifier``: one
learnable query ``[1, 1, D]`` (trunc-normal std 0.02), ``depth - 1`` self-attention blocks on
the tokens, then one cross-attention block -- the query attends to ``LN(tokens)`` with
``num_heads`` heads and qkv bias, residual onto the query, then ``LN -> MLP(ratio 4, GELU)``
with a residual -- and a linear classifier. ``aim`` follows apple/ml-aim's attention-pooling
probe: ``BatchNorm1d(affine=False)`` on the tokens, one query, bias-free k/v, softmax attention,
mean over queries, linear classifier.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block

from eval.heads import CachedBatches, HeadSpec, train_grid
from eval.linear import AugmentedBatches, train_transform


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        B, n, D = x.shape
        h = self.num_heads
        q = self.q(q).reshape(B, q.shape[1], h, D // h).transpose(1, 2)
        k, v = self.kv(x).reshape(B, n, 2, h, D // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, -1, D))


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class VJEPAProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_heads: int, depth: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"attn_probe.depth must be >= 1, got {depth}")
        self.in_dim, self.num_classes = dim, num_classes
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth - 1))
        self.cross = CrossAttentionBlock(dim, num_heads, mlp_ratio)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens(tokens, self.in_dim)
        x = tokens.float()
        for blk in self.blocks:
            x = blk(x)
        q = self.cross(self.query.expand(len(x), -1, -1), x)
        return self.head(q.squeeze(1))


class AIMProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_heads: int, num_queries: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: dim {dim} is not divisible by num_heads {num_heads}")
        self.in_dim, self.num_classes, self.num_heads = dim, num_classes, num_heads
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.query = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens(tokens, self.in_dim)
        B, n, D = tokens.shape
        h = self.num_heads
        x = self.bn(tokens.float().transpose(1, 2)).transpose(1, 2)
        q = self.query.expand(B, -1, -1).reshape(B, -1, h, D // h).transpose(1, 2)
        k = self.k(x).reshape(B, n, h, D // h).transpose(1, 2)
        v = self.v(x).reshape(B, n, h, D // h).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, D)
        return self.head(pooled.mean(dim=1))


def _check_tokens(tokens: torch.Tensor, dim: int) -> None:
    if tokens.dim() != 3 or tokens.shape[-1] != dim:
        raise ValueError(f"the attentive probe expects patch tokens [B, n, {dim}], got {tuple(tokens.shape)}")


def build_probe(kind: str, dim: int, num_classes: int, num_heads: int, depth: int = 1, mlp_ratio: float = 4.0):
    if kind == "vjepa":
        return VJEPAProbe(dim, num_classes, num_heads, depth, mlp_ratio)
    if kind == "aim":
        return AIMProbe(dim, num_classes, num_heads)
    raise ValueError(f"attn_probe.kind {kind!r} unknown; use vjepa or aim")


def run(ctx) -> tuple[dict, str, dict]:
    c = ctx.cfg.attn_probe
    dtype = getattr(torch, str(c.token_dtype))
    val = ctx.features("val", ["patch_tokens"], token_dtype=dtype)
    dim = val["patch_tokens"].shape[-1]
    heads = int(c.num_heads or ctx.encoder.model.num_heads)
    torch.manual_seed(int(ctx.cfg.seed))
    probe = build_probe(c.kind, dim, ctx.num_classes, heads, int(c.depth), float(c.mlp_ratio))
    spec = HeadSpec(c.kind, "patch_tokens", float(c.lr), float(c.wd))
    if c.aug == "none":
        train = ctx.features("train", ["patch_tokens"], token_dtype=dtype)
        batches = CachedBatches(train, ctx.labels("train"), int(c.batch_size), int(ctx.cfg.seed))
    else:  # V-JEPA: augmented images through the frozen encoder every epoch
        batches = AugmentedBatches(ctx, ["patch_tokens"], train_transform(ctx, str(c.aug)), int(c.batch_size),
                                   int(ctx.cfg.seed))
    res = train_grid({spec.name: probe}, [spec], batches, val, ctx.labels("val"),
                     epochs=int(c.epochs), optimizer="adamw", warmup_epochs=float(c.warmup_epochs),
                     report=c.report, progress=bool(ctx.cfg.progress), desc="attentive probe",
                     max_steps=ctx.cfg.max_steps)[spec.name]
    metrics = {"attentive/top1": res["top1"], "attentive/top5": res["top5"]}
    return metrics, "attentive/top1", {"kind": c.kind, "num_heads": heads, "epoch": res["epoch"]}
