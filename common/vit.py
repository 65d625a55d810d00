"""The one ViT backbone of the repository: timm's ``VisionTransformer`` plus the hooks
that the four papers need (see ``docs/CONTRACTS.md``, "common.vit.ViT").

``ViT`` subclasses timm's ``VisionTransformer`` and reuses its modules unchanged, so the
state dict of a one-class-token model has exactly timm's keys and timm / MAE / DeiT / CLIP
checkpoints load as they are.  What it adds:

* ``forward(x, keep, layers, norm_layers, relations)``: a token-subset forward (``keep``
  selects patch tokens after the position embedding), hidden states after chosen blocks and
  per-head pre-softmax relations ``Q K^T / sqrt(d_head)`` of chosen blocks.  Blocks whose
  relations are not requested run timm's own ``Block.forward`` (fused SDPA attention);
  only the requested blocks materialise the ``[B, H, N, N]`` matrix.
* 0, 1 or 2 class tokens, each with its own position-embedding slot, and register tokens.
  Token layout: ``[cls_1, (cls_2,) reg_1 .. reg_R, patch_1 .. patch_N]``.  Registers also
  get a position slot (timm's ``no_embed_class=False`` layout, which keeps timm/MAE/DeiT
  keys and shapes); DINOv2-style registers without position embedding are not offered.  A second class
  token lives in ``cls_token[:, 1]`` (``cls_token`` is ``[1, 2, D]``) and its position
  embedding in ``pos_embed[:, 1]`` (``pos_embed`` is ``[1, 2 + R + N, D]``), which is the
  layout of the official UDI checkpoints.
* ``pos_embed="sincos"``: the fixed 2-D sin-cos table of MAE / MoCo v3 (prefix slots zero),
  stored in the usual ``pos_embed`` key with ``requires_grad=False``.
* ``freeze_patch_embed=True``: MoCo v3's frozen random patch projection.

* ``dynamic_img_size=True`` (multi-crop): the patch part of the table is resized to the
  input's grid (bicubic; ``pos_interp_antialias`` chooses timm's antialiased resize or the
  plain one of DINO-style code); prefix slots are unchanged.
* Hidden states may include layer 0, the embedded tokens that enter block 1.

Helpers: ``load_state_dict_checked`` (strict load with a readable report) and
``attention_probs`` (softmax attention maps of chosen blocks, for analysis metrics).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from functools import partial
from typing import Iterable, Mapping

import torch
import torch.nn as nn
from timm.layers import LayerNorm, resample_abs_pos_embed
from timm.layers.attention import Attention
from timm.models.vision_transformer import VisionTransformer
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ViT",
    "ViTOutput",
    "RelationAttention",
    "sincos_pos_embed_2d",
    "ijepa_init",
    "load_state_dict_checked",
    "attention_probs",
]

POS_EMBED_KINDS = ("learn", "sincos")
GLOBAL_POOLS = ("token", "avg", "")
ACT_LAYERS = ("gelu", "quick_gelu")
# timm's schemes ("" is timm's default, trunc-normal 0.02) and I-JEPA's (``ijepa_init``)
WEIGHT_INITS = ("", "jax", "moco", "ijepa")


class RelationAttention(Attention):
    """timm ``Attention`` that can also return its pre-softmax relations.

    It has no parameters of its own, so the state dict is timm's.  ``forward`` is timm's
    (fused SDPA when ``fused_attn``); ``forward_with_relations`` is the explicit path used
    only for the blocks whose relations a caller asked for.
    """

    def forward_with_relations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(attention output [B, N, D], relations [B, H, N, N])``.

        The relations are ``Q K^T / sqrt(d_head)`` per head, before softmax, and keep
        their autograd graph (a student can be trained on them).
        """
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        relations = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.attn_drop(relations.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(B, N, self.attn_dim)
        out = self.norm(out)
        if gate is not None:
            out = out * gate
        out = self.proj_drop(self.proj(out))
        return out, relations


def _block_with_relations(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Block.forward`` with the attention replaced by its relation-returning twin.

    Mirrors the pre-norm residual structure of ``timm.models.vision_transformer.Block``;
    a unit test checks that the output equals ``block(x)``.
    """
    attn_out, relations = block.attn.forward_with_relations(block.norm1(x))
    x = x + block.drop_path1(block.ls1(attn_out))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, relations


def sincos_pos_embed_2d(embed_dim: int, grid_size: tuple[int, int], temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position table ``[grid_h * grid_w, embed_dim]`` in raster order.

    MAE's ``get_2d_sincos_pos_embed`` layout: channel quarters
    ``[sin(c w), cos(c w), sin(r w), cos(r w)]`` with ``c`` the column, ``r`` the row and
    ``w_k = temperature^(-k / (D/4))``, ``k = 0 .. D/4 - 1``.  MoCo v3's
    ``build_2d_sincos_position_embedding`` puts the row half first: a fixed permutation of
    the channels, so training from scratch is the same in distribution (initialisations and
    LayerNorm do not depend on the channel order); MoCo v3 / MAE checkpoints carry their own
    table in ``pos_embed``, so loading one reproduces it exactly.
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
    grid_h, grid_w = grid_size
    quarter = embed_dim // 4
    omega = temperature ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    col_angles = cols.reshape(-1, 1) * omega
    row_angles = rows.reshape(-1, 1) * omega
    table = torch.cat([col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()], dim=1)
    return table.float()


def take_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The tokens of ``x [..., N, D]`` at ``index [..., n]`` (positions along the token
    dimension, same leading dimensions) -> ``[..., n, D]``."""
    return x.gather(-2, index.unsqueeze(-1).expand(*index.shape, x.shape[-1]))


@dataclass
class ViTOutput:
    """Result of ``ViT.forward``; ``prefix`` and ``patches`` are views of ``tokens``."""

    tokens: torch.Tensor  # [B, P + n, D], final norm applied
    num_prefix_tokens: int
    num_class_tokens: int
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    relations: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def prefix(self) -> torch.Tensor:
        return self.tokens[:, : self.num_prefix_tokens]

    @property
    def patches(self) -> torch.Tensor:
        return self.tokens[:, self.num_prefix_tokens :]

    @property
    def class_tokens(self) -> torch.Tensor:
        """``[B, num_class_tokens, D]`` (registers excluded)."""
        return self.tokens[:, : self.num_class_tokens]


def ijepa_init(module: nn.Module, blocks: nn.ModuleList, std: float = 0.02,
               conv_ref_fan_in: int | None = None) -> None:
    """I-JEPA's init (facebookresearch/ijepa ``_init_weights`` + ``fix_init_weight``): trunc-normal
    linear and conv weights, zero biases, unit LayerNorm, then each block's residual
    projections divided by sqrt(2 * block index).

    ``conv_ref_fan_in``: scale the conv (patch-embedding) std by sqrt(ref / fan_in), so that the
    patch embedding's output has the scale std 0.02 gives at that fan-in (768 = 16x16 RGB
    patches). A 4x4 grey patch has fan-in 16: with std 0.02 its embedding is ~7x smaller than
    at ImageNet scale and the sin-cos position table dominates every token."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            scale = math.sqrt(conv_ref_fan_in / fan_in) if conv_ref_fan_in and isinstance(m, nn.Conv2d) else 1.0
            nn.init.trunc_normal_(m.weight, std=std * scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for i, block in enumerate(blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * i))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * i))


def _to_pair(size: int | Iterable[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    pair = tuple(int(s) for s in size)
    if len(pair) != 2:
        raise ValueError(f"img_size must be an int or (height, width), got {size!r}")
    return pair


class ViT(VisionTransformer):
    """timm ``VisionTransformer`` encoder (no classifier head) with the repository's hooks.

    Arguments beyond the contract in ``docs/CONTRACTS.md`` (all defaulted to ViT/DeiT/MAE
    values): ``pos_interp_antialias`` (timm resizes the position table for other input sizes
    with antialiased bicubic interpolation; DINO-style code bases use plain bicubic, False),
    ``pre_norm`` (LayerNorm before the blocks, no patch bias: CLIP), ``norm_eps``
    (1e-5 for CLIP), ``act_layer`` (``"quick_gelu"`` for OpenAI CLIP) and ``weight_init``
    (timm's init scheme, ``""`` or ``"moco"`` / ``"jax"``, or I-JEPA's ``"ijepa"``). The init is
    part of ``arch``, so ``ViT(**arch)`` -- e.g. a random-init floor -- starts like the run did.

    Class tokens are initialised as timm does (normal, std 1e-6) and a learned position
    embedding as trunc-normal std 0.02; a method whose reference code differs re-initialises
    them after construction.
    """

    def __init__(
        self,
        img_size: int | Iterable[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_class_tokens: int = 1,
        reg_tokens: int = 0,
        pos_embed: str = "learn",
        freeze_patch_embed: bool = False,
        drop_path_rate: float = 0.0,
        fused_attn: bool = True,
        grad_checkpointing: bool = False,
        dynamic_img_size: bool = False,
        pos_interp_antialias: bool = True,
        global_pool: str = "token",
        pre_norm: bool = False,
        norm_eps: float = 1e-6,
        act_layer: str = "gelu",
        weight_init: str = "",
        patch_embed_ref_fan_in: int | None = None,
    ) -> None:
        # the constructor arguments, first thing: arch() returns them so a checkpoint rebuilds this ViT
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        img_hw = _to_pair(img_size)
        if num_class_tokens not in (0, 1, 2):
            raise ValueError(f"num_class_tokens must be 0, 1 or 2, got {num_class_tokens}")
        if reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {reg_tokens}")
        if pos_embed not in POS_EMBED_KINDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}, got {pos_embed!r}")
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
        if global_pool == "token" and num_class_tokens == 0:
            raise ValueError("global_pool='token' needs a class token; use global_pool='avg' with num_class_tokens=0")
        if act_layer not in ACT_LAYERS:
            raise ValueError(f"act_layer must be one of {ACT_LAYERS}, got {act_layer!r}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        if patch_embed_ref_fan_in is not None and weight_init != "ijepa":
            raise ValueError(f"patch_embed_ref_fan_in={patch_embed_ref_fan_in} rescales I-JEPA's init only; "
                             f"set weight_init='ijepa' or patch_embed_ref_fan_in=null")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        for name, size in zip(("height", "width"), img_hw):
            if size % patch_size:
                raise ValueError(f"img_size {name} {size} is not divisible by patch_size {patch_size}")

        super().__init__(
            img_size=img_hw,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            global_pool=global_pool,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            class_token=num_class_tokens > 0,
            reg_tokens=reg_tokens,
            pre_norm=pre_norm,
            # The final norm is always `norm` (timm moves it to `fc_norm` for avg pooling),
            # so `forward` returns normed tokens whatever the pooling.
            fc_norm=False,
            dynamic_img_size=dynamic_img_size,
            drop_path_rate=drop_path_rate,
            # initialised below, once the class tokens have their final shape
            weight_init="skip",
            norm_layer=partial(LayerNorm, eps=norm_eps),
            act_layer=act_layer,
            attn_layer=RelationAttention,
        )
        self._init_kwargs = dict(
            arguments,
            img_size=list(img_hw) if img_hw[0] != img_hw[1] else img_hw[0],
            mlp_ratio=float(mlp_ratio),
            drop_path_rate=float(drop_path_rate),
            norm_eps=float(norm_eps),
        )
        self.patch_embed_ref_fan_in = patch_embed_ref_fan_in
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.num_class_tokens = num_class_tokens
        self.num_prefix_tokens = num_class_tokens + reg_tokens

        self.pos_embed_kind = pos_embed
        self.pos_interp_antialias = pos_interp_antialias
        self.freeze_patch_embed = freeze_patch_embed
        if num_class_tokens == 2:
            # timm builds one class token; widen it and the prefix part of the table so that
            # each class token has its own position embedding.
            self.cls_token = nn.Parameter(torch.empty(1, 2, embed_dim))
            self.pos_embed = nn.Parameter(torch.empty(1, self.patch_embed.num_patches + self.num_prefix_tokens, embed_dim))
        # Same call, and so the same random draws, as timm's own constructor: with one class
        # token a seeded ViT starts from exactly the weights of a seeded timm model.
        self.weight_init_mode = "" if weight_init == "ijepa" else weight_init  # timm's own modes only
        self.init_weights(weight_init, needs_reset=False)
        for block in self.blocks:
            block.attn.fused_attn = fused_attn
        self.set_grad_checkpointing(grad_checkpointing)

    # ------------------------------------------------------------------ construction
    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's initialisation, then the fixed parts (sin-cos table, frozen projection),
        so that re-initialising never turns them into random trainable weights. ``ijepa``:
        timm's default first (the same random draws), then ``ijepa_init``."""
        super().init_weights("" if mode == "ijepa" else mode, needs_reset)
        if mode == "ijepa":
            ijepa_init(self, self.blocks, conv_ref_fan_in=self.patch_embed_ref_fan_in)
        if self.pos_embed_kind == "sincos":
            self._set_sincos_pos_embed()
        if self.freeze_patch_embed:
            self._freeze_random_patch_embed()

    def _set_sincos_pos_embed(self) -> None:
        with torch.no_grad():
            self.pos_embed.zero_()  # prefix slots stay zero (MAE, MoCo v3)
            self.pos_embed[0, self.num_prefix_tokens :] = sincos_pos_embed_2d(self.embed_dim, self.grid_size)
        self.pos_embed.requires_grad = False

    def _freeze_random_patch_embed(self) -> None:
        """MoCo v3: xavier-uniform over (fan_in + fan_out) = (C p^2 + D), zero bias, frozen."""
        proj = self.patch_embed.proj
        bound = math.sqrt(6.0 / float(proj.in_channels * self.patch_size**2 + self.embed_dim))
        with torch.no_grad():
            nn.init.uniform_(proj.weight, -bound, bound)
            if proj.bias is not None:
                proj.bias.zero_()
        for p in proj.parameters():
            p.requires_grad = False

    # ------------------------------------------------------------------ attributes
    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    @property
    def arch(self) -> dict:
        """Constructor kwargs (JSON-serialisable): ``ViT(**vit.arch)`` rebuilds the model."""
        return dict(self._init_kwargs, grad_checkpointing=bool(self.grad_checkpointing))

    # ------------------------------------------------------------------ input checks
    def _check_image(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images [B, {self.in_chans}, H, W], got shape {tuple(x.shape)}")
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(
                f"image size {H}x{W} is not divisible by patch size {p}; "
                f"use sizes that are multiples of {p} (e.g. {self.grid_size[0] * p}x{self.grid_size[1] * p})"
            )
        expected = tuple(self.patch_embed.img_size)
        if not self.dynamic_img_size and (H, W) != expected:
            raise ValueError(
                f"image size {H}x{W} differs from the model's {expected[0]}x{expected[1]}; "
                "build the ViT with dynamic_img_size=True for other resolutions (multi-crop)"
            )

    def _check_block_ids(self, ids: Iterable[int] | None, what: str, allow_zero: bool) -> list[int]:
        if ids is None:
            return []
        low = 0 if allow_zero else 1
        if isinstance(ids, (int, str)) or not isinstance(ids, Iterable):
            raise TypeError(f"{what} layers must be a list of block numbers (1-indexed), got {ids!r}")
        checked = []
        for i in ids:
            try:
                i = operator.index(i)
            except TypeError:
                raise TypeError(f"{what} must be integers (1-indexed blocks), got {i!r}") from None
            if not low <= i <= self.depth:
                zero_note = " (0 = embedded tokens before block 1)" if allow_zero else ""
                raise ValueError(
                    f"{what} layer {i} does not exist: allowed {low}..{self.depth}{zero_note}, "
                    f"1-indexed blocks of this depth-{self.depth} ViT"
                )
            checked.append(i)
        return sorted(set(checked))

    def _gather_kept(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, D = tokens.shape
        P = self.num_prefix_tokens
        N = L - P
        if keep.dim() != 2 or keep.shape[0] != B:
            raise ValueError(f"keep must be a [B={B}, n] index tensor, got shape {tuple(keep.shape)}")
        if keep.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"keep must hold integer patch indices (torch.long), got {keep.dtype}")
        # the range check reads the indices on the host: a graph break under torch.compile and a
        # sync per forward on GPU; compiled code relies on the gather's own bounds check instead
        if keep.numel() and not torch.compiler.is_compiling():
            low, high = torch.aminmax(keep)
            if low < 0 or high >= N:
                raise ValueError(
                    f"keep indices must lie in 0..{N - 1} (patch positions in raster order, prefix tokens "
                    f"are always kept), got min {int(low)} max {int(high)}"
                )
        kept = take_tokens(tokens[:, P:], keep.to(tokens.device, torch.long))
        return torch.cat([tokens[:, :P], kept], dim=1)

    # ------------------------------------------------------------------ forward
    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend class and register tokens and add the position table (timm's layout with a
        slot per prefix token); for another input size only the patch part of the table is
        resized (bicubic)."""
        if self.dynamic_img_size:
            grid = x.shape[1:3]  # the patch embedding returns NHWC in this mode
            x = x.flatten(1, 2)
            pos_embed = resample_abs_pos_embed(
                self.pos_embed, grid, self.grid_size, num_prefix_tokens=self.num_prefix_tokens,
                antialias=self.pos_interp_antialias,
            )
        else:
            pos_embed = self.pos_embed
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        return self.pos_drop(torch.cat(prefix + [x], dim=1) + pos_embed)

    def embed(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embedding + prefix tokens + position embedding (+ token subset) ``[B, P + n, D]``."""
        self._check_image(x)
        tokens = self._pos_embed(self.patch_embed(x))
        if keep is not None:
            tokens = self._gather_kept(tokens, keep)
        return self.norm_pre(tokens)

    def _run_block(self, block: nn.Module, x: torch.Tensor, with_relations: bool):
        fn = partial(_block_with_relations, block) if with_relations else block
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def forward(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        layers: Iterable[int] | None = None,
        norm_layers: bool = True,
        relations: Iterable[int] | None = None,
    ) -> ViTOutput:
        """Encode ``x [B, C, H, W]``.

        Args:
            keep: ``[B, n]`` patch indices (0..N-1, raster order) kept after the position
                embedding; prefix (class + register) tokens are always kept.
            layers: blocks (1-indexed; 0 = the embedded input of block 1) whose residual
                stream is returned in ``out.hidden``.
            norm_layers: pass ``out.hidden`` through the final norm.
            relations: blocks (1-indexed) whose pre-softmax ``Q K^T / sqrt(d_head)``
                ``[B, H, P + n, P + n]`` is returned in ``out.relations``.
        """
        hidden_ids = self._check_block_ids(layers, "hidden", allow_zero=True)
        relation_ids = set(self._check_block_ids(relations, "relation", allow_zero=False))
        hidden: dict[int, torch.Tensor] = {}
        captured: dict[int, torch.Tensor] = {}

        def record(i: int, h: torch.Tensor) -> None:
            if i in hidden_ids:
                hidden[i] = self.norm(h) if norm_layers else h

        h = self.embed(x, keep)
        record(0, h)
        for i, block in enumerate(self.blocks, start=1):
            if i in relation_ids:
                h, captured[i] = self._run_block(block, h, with_relations=True)
            else:
                h = self._run_block(block, h, with_relations=False)
            record(i, h)
        tokens = hidden[self.depth] if norm_layers and self.depth in hidden else self.norm(h)
        return ViTOutput(tokens, self.num_prefix_tokens, self.num_class_tokens, hidden, captured)


def set_fused_attention(module: nn.Module, fused: bool) -> int:
    """Switch every attention layer under ``module`` (timm's and this file's: those with a
    ``fused_attn`` attribute) between torch's fused scaled-dot-product kernels and the explicit
    softmax(QK^T / sqrt(d)) V; the two compute the same function. Returns how many it switched."""
    layers = [m for m in module.modules() if hasattr(m, "fused_attn")]
    for layer in layers:
        layer.fused_attn = fused
    return len(layers)


def load_state_dict_checked(
    vit: nn.Module, state_dict: Mapping[str, torch.Tensor], ignore_prefixes: Iterable[str] = ()
) -> None:
    """Load ``state_dict`` strictly; on any mismatch raise one error listing every problem.

    ``ignore_prefixes`` drops checkpoint keys that are not part of the encoder, e.g.
    ``("head.",)`` for a classifier checkpoint or ``("decoder", "mask_token")`` for MAE
    pre-training checkpoints.
    """
    ignore_prefixes = tuple(ignore_prefixes)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    own = vit.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        lines = ["state dict does not match the model architecture:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
        if unexpected and all(k.startswith(("head.", "fc_norm.")) for k in unexpected):
            lines.append("  hint: a classifier checkpoint; pass ignore_prefixes=('head.',) to load the encoder only")
        if missing and len(missing) == len(own):
            lines.append("  hint: no key matches; strip the checkpoint's prefix (e.g. 'module.' or 'encoder.')")
        if any(k.startswith("pos_embed") for k in misshaped):
            lines.append(
                "  hint: pos_embed differs: build the ViT with the checkpoint's img_size / patch_size / "
                "number of class and register tokens"
            )
        raise ValueError("\n".join(lines))
    vit.load_state_dict(state_dict, strict=True)


@torch.no_grad()
def attention_probs(
    vit: ViT, x: torch.Tensor, layers: Iterable[int], keep: torch.Tensor | None = None
) -> dict[int, torch.Tensor]:
    """Row-stochastic attention ``softmax(Q K^T / sqrt(d_head))`` ``[B, H, N, N]`` of chosen
    blocks (1-indexed), for analysis metrics (attention distance, NMI).  No gradient."""
    out = vit(x, keep=keep, relations=layers)
    return {i: r.softmax(dim=-1) for i, r in out.relations.items()}
