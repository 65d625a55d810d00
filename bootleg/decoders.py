"""The two baselines' decoders that are not I-JEPA's predictor (``predictor.kind``).

Both share the predictor's call, ``decoder(z, context, targets) -> [M, B, Nt, out_dim]``,
so ``bootleg.model.MaskedPrediction`` drives every method the same way; ``z`` is what the
student hands over (``encoder_layers`` below says which of its layers).

* ``CrossDecoder`` (CrossMAE, Fu et al. 2024, TonyLianLong/CrossMAE ``models_cross.py``):
  each target position is a query (mask token + sin-cos position) that reads the visible
  tokens through cross-attention only; no self-attention among the queries unless
  ``self_attn``, so a query's output does not depend on which other positions are predicted.
  With ``feature_mix`` every decoder block reads its own learned linear mix of several
  encoder layers (CrossMAE's ``WeightedFeatureMaps``, one LayerNorm per decoder block);
  without it, every block reads the final normed encoder output.
* ``ConvDecoder`` (data2vec 2.0, Baevski et al. 2023, fairseq ``Decoder2d``): the visible
  tokens are put back on the patch grid, masked positions are filled with Gaussian noise,
  and ``layers`` grouped 2-D convolutions (each followed by a non-affine LayerNorm over
  channels and GELU, with a residual from the second on) run over the grid; a linear layer
  maps back to the encoder width.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm, Mlp

from common.vit import sincos_pos_embed_2d, take_tokens

PREDICTOR_KINDS = ("ijepa", "cross", "conv")


def _xavier_init(module: nn.Module) -> None:
    """MAE's (and CrossMAE's) decoder init: xavier-uniform linears, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resolve_mix_layers(spec, depth: int, with_input: bool) -> list[int]:
    """Encoder layers a feature-mixing decoder reads: ``all`` or a list of 1-indexed blocks
    (negative counts from the end, CrossMAE's ``use_fm``); ``with_input`` adds layer 0, the
    embedded patches (CrossMAE's ``use_input``)."""
    if spec == "all":
        blocks = list(range(1, depth + 1))
    else:
        blocks = [int(b) + depth + 1 if int(b) < 0 else int(b) for b in spec]
        bad = [b for b in blocks if not 1 <= b <= depth]
        if bad or len(set(blocks)) != len(blocks):
            raise ValueError(f"predictor.mix_layers={list(spec)} must list distinct blocks of the "
                             f"depth-{depth} encoder (1..{depth}, or -1 for the last); or use 'all'")
    return ([0] if with_input else []) + blocks


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: [self-attention] + cross-attention to the encoder tokens + MLP."""

    def __init__(self, enc_dim: int, dim: int, num_heads: int, mlp_ratio: float, self_attn: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"predictor.width={dim} is not divisible by predictor.num_heads={num_heads}")
        self.num_heads = num_heads
        norm = partial(LayerNorm, eps=1e-6)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True) if self_attn else None
        self.norm0 = norm(dim) if self_attn else None
        self.norm1 = norm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(enc_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def cross_attention(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H = self.num_heads
        q = self.q(x).view(B, N, H, D // H).transpose(1, 2)
        k, v = self.kv(memory).view(B, memory.shape[1], 2, H, D // H).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            h = self.norm0(x)
            x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attention(self.norm1(x), memory)
        return x + self.mlp(self.norm2(x))


class CrossDecoder(nn.Module):
    """CrossMAE's decoder; ``encoder_layers`` is ``None`` (final normed output) or the layers
    whose raw residual streams ``z`` lists, in that order."""

    def __init__(self, embed_dim: int, grid: tuple[int, int], out_dim: int, width: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0, self_attn: bool = False,
                 encoder_layers: list[int] | None = None):
        super().__init__()
        self.encoder_layers = encoder_layers
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, width))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(width, grid), persistent=False)
        self.blocks = nn.ModuleList(CrossAttentionBlock(embed_dim, width, num_heads, mlp_ratio, self_attn)
                                    for _ in range(depth))
        if encoder_layers is not None:
            k = len(encoder_layers)
            # one mixing weight per (decoder block, encoder layer): CrossMAE's bias-free Linear(k, depth)
            self.mix = nn.Parameter(torch.randn(depth, k) / math.sqrt(k))
            self.mix_norms = nn.ModuleList(LayerNorm(embed_dim, eps=1e-6) for _ in range(depth))
        self.norm = LayerNorm(width, eps=1e-6)
        self.proj = nn.Linear(width, out_dim)
        _xavier_init(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def memories(self, z) -> list[torch.Tensor]:
        """The encoder tokens each decoder block attends to."""
        if self.encoder_layers is None:
            return [z] * len(self.blocks)
        if len(z) != self.mix.shape[1]:
            raise ValueError(f"feature mixing expects {self.mix.shape[1]} encoder layers, got {len(z)}")
        mixed = torch.einsum("jk,kbnd->jbnd", self.mix.to(z[0].dtype), torch.stack(list(z)))
        return [norm(m) for norm, m in zip(self.mix_norms, mixed)]

    def forward(self, z, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        M, B, Nt = targets.shape
        memories = self.memories(z)
        x = (self.mask_token + self.pos_embed[targets]).reshape(M * B, Nt, -1)
        for block, memory in zip(self.blocks, memories):
            x = block(x, memory.repeat(M, 1, 1))
        return self.proj(self.norm(x)).view(M, B, Nt, -1)


class ConvDecoder(nn.Module):
    """data2vec 2.0's convolutional decoder over the full patch grid."""

    encoder_layers = None  # reads the final normed student output

    def __init__(self, embed_dim: int, grid: tuple[int, int], out_dim: int, width: int, depth: int,
                 kernel: int = 3, groups: int = 16, noise_std: float = 0.01):
        super().__init__()
        for name, dim in (("model.embed_dim", embed_dim), ("predictor.width", width)):
            if dim % groups:
                raise ValueError(f"{name}={dim} is not divisible by predictor.groups={groups}")
        if kernel % 2 == 0:
            raise ValueError(f"predictor.kernel={kernel} must be odd so the grid keeps its size")
        self.grid, self.noise_std = tuple(grid), float(noise_std)
        self.convs = nn.ModuleList(
            nn.Conv2d(embed_dim if i == 0 else width, width, kernel, padding=kernel // 2, groups=groups)
            for i in range(depth))
        self.residual_from = 0 if embed_dim == width else 1
        self.proj = nn.Linear(width, out_dim)

    def fill_grid(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Visible tokens at their positions, N(0, noise_std) noise elsewhere: ``[B, N, D]``."""
        B, _, D = z.shape
        full = z.new_empty(B, self.grid[0] * self.grid[1], D).normal_(0.0, self.noise_std)
        return full.scatter(1, context.unsqueeze(-1).expand(-1, -1, D), z)

    def forward(self, z: torch.Tensor, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        B = z.shape[0]
        x = self.fill_grid(z, context).transpose(1, 2).reshape(B, -1, *self.grid)
        for i, conv in enumerate(self.convs):
            h = F.gelu(F.layer_norm(conv(x).transpose(1, -1), (conv.out_channels,)).transpose(1, -1))
            x = x + h if i >= self.residual_from else h
        out = self.proj(x.flatten(2).transpose(1, 2))  # [B, N, out_dim]
        M, _, Nt = targets.shape
        flat = out.unsqueeze(0).expand(M, -1, -1, -1)
        return take_tokens(flat, targets)
