"""DINO projection head and UDI's SRS self-attention module (official ``vision_transformer.py``)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm
from torch.nn.utils.parametrizations import weight_norm

from common.vit import take_tokens


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DINOHead(nn.Module):
    """MLP (``nlayers`` Linear, [BatchNorm,] GELU) -> bottleneck -> L2-normalise -> weight-normed
    Linear(bottleneck, out_dim, no bias) whose norm ``g`` is fixed to 1 when
    ``norm_last_layer`` (DINO's default; UDI's official run trains it). ``use_bn`` is the
    official ``--use_bn_in_head`` (off for ViTs there): BatchNorm after every hidden Linear."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"head nlayers must be >= 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad = not norm_last_layer

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d reads dim 1 as features: patch inputs [R, M, D] go through as [R * M, D]
        z = self.mlp(x.flatten(0, -2)).unflatten(0, x.shape[:-1])
        return F.normalize(z, dim=-1, p=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.bottleneck(x))


def gather_weighted(tokens: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_k weight[r, m, k] * tokens[r, index[r, m, k]]``: ``tokens [R, N, D]``, ``index`` /
    ``weight`` ``[R, M, k]`` -> ``[R, M, D]`` (the official ``Map @ tokens`` in gather form)."""
    R, M, k = index.shape
    picked = take_tokens(tokens, index.reshape(R, M * k))
    return (picked.reshape(R, M, k, -1) * weight.unsqueeze(-1).to(tokens.dtype)).sum(2)


class SRSAttention(nn.Module):
    """UDI's patch-level module: one multi-head attention whose queries are the sampled (or
    bilinearly interpolated) patch tokens and whose keys/values are all patch tokens.

    ``X = norm1(raw last-block patch tokens)``; ``Q, K, V = qkv(X)``; for a query map ``S``:
    ``z = norm(proj(softmax(S Q K^T / sqrt(d)) V) + [S X if skip_connection])``.  No MLP,
    no dropout.  The official code keeps the skip connection; the paper says "without".
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, skip_connection: bool = True,
                 norm_eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SRS attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.skip_connection = num_heads, skip_connection
        self.norm1 = LayerNorm(dim, eps=norm_eps)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm = LayerNorm(dim, eps=norm_eps)
        self.apply(_init_linear)

    def forward(self, patches: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``patches [R, N, D]`` (raw, before the backbone's final norm); ``index`` / ``weight``
        ``[R, M, k]`` query maps (``k = 1`` one-hot, ``k = 4`` bilinear) -> ``[R, M, D]``."""
        R, N, D = patches.shape
        H = self.num_heads
        x = self.norm1(patches)
        q, k, v = self.qkv(x).reshape(R, N, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
        q = gather_weighted(q.transpose(1, 2).reshape(R, N, D), index, weight)
        q = q.reshape(R, -1, H, D // H).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(R, -1, D)
        out = self.proj(out)
        if self.skip_connection:
            out = out + gather_weighted(x, index, weight)
        return self.norm(out)
