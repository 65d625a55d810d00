"""Bootleg, I-JEPA and MAE (pixel or EMA-hidden targets) as one masked-prediction method.

All four are: a student ViT encodes the context tokens, a narrow predictor (I-JEPA's
predictor, which is also MAE's decoder) fills mask tokens at the target positions, and
a regression loss compares its output with targets at those positions. They differ in
the masks (collator) and the targets:

* I-JEPA: the EMA teacher's final (normed) output, layer-normed, smooth-L1;
* Bootleg: the EMA teacher's hidden states of K blocks, each normalised, concatenated
  along channels (the predictor outputs K*D channels), MSE;
* MAE: per-patch pixels (``targets=pixels``), MAE-EMA: a teacher hidden layer instead of
  (``hidden``) or in addition to (``pixels+hidden``) the pixels (paper Figs. 2-3);
* CrossMAE (main-table baseline): MAE's pixel targets read by a cross-attention decoder
  (``predictor.kind=cross``, ``bootleg.decoders``) that may predict a subset of the masked
  tokens (``mask.predict_ratio``) from a mix of encoder layers;
* data2vec 2.0 (main-table baseline): the mean of the teacher's top-K instance-normed FFN
  outputs, layer-normed (``target_source=ffn``, ``target_post_norm=layer``), regressed by a
  convolutional decoder (``predictor.kind=conv``), with several masks per image sharing
  one teacher pass (``mask.clones``).

MAE's "all masked tokens in one decoder pass" is the predictor with a single target
block that holds every masked position.
"""
from __future__ import annotations

import copy
from functools import partial

import torch
import torch.nn as nn
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torchvision.transforms import v2

from bootleg.decoders import PREDICTOR_KINDS, ConvDecoder, CrossDecoder, resolve_mix_layers
from bootleg.loss import layer_weights, layerwise_loss, normalize_target, pixel_targets
from bootleg.masks import MaskCollator, build_mask_generator
from common.config import encoder_arch
from common.data import TransformedDataset, flip, get_dataset, normalize, random_resized_crop
from common.ema import ema_update, momentum_schedule
from common.method import MethodBase, input_meta_of
from common.optim import param_groups_weight_decay
from common.vit import ViT, ijepa_init, sincos_pos_embed_2d, take_tokens

TARGET_KINDS = ("hidden", "pixels", "pixels+hidden")
TARGET_SOURCES = ("residual", "ffn")
# method.export_encoder -> the network exported (I-JEPA calls them target and context encoders)
EXPORT_ENCODERS = {"teacher": "teacher", "target": "teacher", "student": "student",
                   "context": "student"}
FINAL = "final"


# ----------------------------------------------------------------------------- predictor
def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, N, C]`` at ``index`` ``[M, B, n]`` -> ``[M, B, n, C]``."""
    M, B, n = index.shape
    flat = x.unsqueeze(0).expand(M, -1, -1, -1).reshape(M * B, x.shape[1], x.shape[2])
    picked = take_tokens(flat, index.reshape(M * B, n))
    return picked.view(M, B, n, x.shape[2])


class Predictor(nn.Module):
    """I-JEPA's ``VisionTransformerPredictor`` with a configurable output width.

    The context embeddings (+ sin-cos position) are repeated once per target block; each
    copy gets one learnable mask token (+ position) per target position, runs through the
    blocks, and only the mask-token outputs are projected to ``out_dim`` channels.
    """

    encoder_layers = None  # reads the final normed student output

    def __init__(self, embed_dim: int, grid: tuple[int, int], out_dim: int, width: int = 384,
                 depth: int = 6, num_heads: int = 6, mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, width))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(width, grid), persistent=False)
        self.blocks = nn.ModuleList(
            Block(width, num_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(LayerNorm, eps=1e-6))
            for _ in range(depth))
        self.norm = LayerNorm(width, eps=1e-6)
        self.proj = nn.Linear(width, out_dim)
        ijepa_init(self, self.blocks)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, z: torch.Tensor, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``z`` ``[B, Nc, D]`` at ``context`` ``[B, Nc]`` -> predictions ``[M, B, Nt, out]``."""
        M, B, Nt = targets.shape
        x = self.embed(z) + self.pos_embed[context]
        queries = self.mask_token + self.pos_embed[targets]
        x = torch.cat([x.unsqueeze(0).expand(M, -1, -1, -1), queries], dim=2)
        x = x.reshape(M * B, -1, x.shape[-1])
        for block in self.blocks:
            x = block(x)
        x = self.proj(self.norm(x[:, -Nt:]))
        return x.view(M, B, Nt, -1)


# ----------------------------------------------------------------------------- targets
def resolve_target_layers(spec, depth: int, include_final: bool = False) -> list:
    """Target list from ``method.target_layers``: 1-indexed blocks and/or ``final``.

    ``spec`` is a list (or one entry) of: a block number, ``final`` (the final-norm output,
    I-JEPA's target), ``all`` (every block), ``even:K`` (K evenly spaced blocks ending at
    the last one: ``even:4`` = 3, 6, 9, 12 at depth 12) or ``top:K`` (the last K blocks,
    data2vec's ``average_top_k_layers``); both give every block when the encoder has fewer
    than K, so one default serves every model size.
    """
    entries = [spec] if isinstance(spec, (str, int)) else list(spec)
    layers = []
    for entry in entries:
        if isinstance(entry, str) and entry.startswith(("even:", "top:")):
            k = int(entry.split(":", 1)[1])
            if k < 1:
                raise ValueError(f"method.target_layers: {entry!r} needs K >= 1")
            k = min(k, depth)
            if entry.startswith("even:"):
                layers += [round(depth * i / k) for i in range(1, k + 1)]
            else:
                layers += list(range(depth - k + 1, depth + 1))
        elif entry == "all":
            layers += list(range(1, depth + 1))
        elif entry == FINAL or (isinstance(entry, int) and 1 <= entry <= depth):
            layers.append(entry)
        else:
            raise ValueError(
                f"method.target_layers: {entry!r} is not a block of the depth-{depth} encoder; "
                f"use 1-indexed blocks 1..{depth}, 'final', 'all', 'even:K' or 'top:K'")
    if include_final and FINAL not in layers:
        layers.append(FINAL)
    if len(set(layers)) != len(layers):
        raise ValueError(f"method.target_layers lists a layer twice: {layers}")
    return layers


class HiddenTargets(nn.Module):
    """Teacher features at every position: ``[B, N, K*D]`` (concat) or ``[B, N, D]`` (mean).

    Block ``i`` is, with ``source=residual``, the residual stream after block i (the last
    block taken before the final norm unless ``last_layer_source=post_norm``), and with
    ``source=ffn`` the output of its MLP before the residual add (data2vec 2.0's
    ``end_of_block_targets=false``); ``final`` is the final-norm output (I-JEPA's target).
    Each layer is normalised on its own before combining; ``post_norm`` normalises the
    combination (data2vec 2.0's ``layer_norm_targets``).
    """

    def __init__(self, layers: list, depth: int, norm: str, combine: str, last_layer_source: str,
                 source: str = "residual", post_norm: str = "none"):
        super().__init__()
        if combine not in ("concat", "mean"):
            raise ValueError(f"method.target_combine={combine!r}; choose 'concat' or 'mean'")
        if last_layer_source not in ("pre_norm", "post_norm"):
            raise ValueError(f"method.last_layer_source={last_layer_source!r}; "
                             f"choose 'pre_norm' or 'post_norm'")
        if source not in TARGET_SOURCES:
            raise ValueError(f"method.target_source={source!r}; choose one of {TARGET_SOURCES}")
        if source == "ffn" and FINAL in layers:
            raise ValueError("method.target_source=ffn reads block MLP outputs; 'final' is not a "
                             "block: drop it from method.target_layers (and include_final_output)")
        for mode in (norm, post_norm):  # rejects an unknown mode now, not mid-run
            normalize_target(torch.zeros(1, 2, 2), mode)
        self.layers, self.depth, self.norm = layers, depth, norm
        self.combine, self.last_layer_source = combine, last_layer_source
        self.source, self.post_norm = source, post_norm

    @property
    def n_outputs(self) -> int:
        return len(self.layers) if self.combine == "concat" else 1

    def _ffn_outputs(self, teacher: ViT, images: torch.Tensor) -> dict[int, torch.Tensor]:
        captured: dict[int, torch.Tensor] = {}
        handles = [teacher.blocks[layer - 1].mlp.register_forward_hook(
            lambda _m, _inp, out, layer=layer: captured.__setitem__(layer, out))
            for layer in self.layers]
        try:
            teacher(images)
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _layer_features(self, teacher: ViT, images: torch.Tensor) -> list[torch.Tensor]:
        P = teacher.num_prefix_tokens
        if self.source == "ffn":
            ffn = self._ffn_outputs(teacher, images)
            return [ffn[layer][:, P:] for layer in self.layers]
        out = teacher(images, layers=[l for l in self.layers if l != FINAL], norm_layers=False)
        feats = []
        for layer in self.layers:
            if layer == FINAL:
                h = out.patches
            else:
                h = out.hidden[layer][:, P:]
                if layer == self.depth and self.last_layer_source == "post_norm":
                    h = teacher.norm(h)
            feats.append(h)
        return feats

    @torch.no_grad()
    def forward(self, teacher: ViT, images: torch.Tensor) -> torch.Tensor:
        feats = [normalize_target(h, self.norm) for h in self._layer_features(teacher, images)]
        if self.combine == "mean":
            return normalize_target(torch.stack(feats).mean(0), self.post_norm)
        return normalize_target(torch.cat(feats, dim=-1), self.post_norm)


# ----------------------------------------------------------------------------- method
class MaskedPrediction(MethodBase):
    """Student + predictor (+ EMA teacher) trained on collated context/target indices."""

    def __init__(self, student: ViT, predictor: Predictor, hidden_targets: HiddenTargets | None,
                 method_cfg, total_steps: int, meta: dict, export_encoder: str = "teacher"):
        super().__init__()
        self.student, self.predictor, self.hidden_targets = student, predictor, hidden_targets
        self.teacher = None
        if hidden_targets is not None:
            self.teacher = copy.deepcopy(student).requires_grad_(False)
            self.register_buffer("layer_weights", layer_weights(method_cfg.layer_weights,
                                                                hidden_targets.n_outputs))
        self.use_pixels = "pixels" in method_cfg.targets
        self.cfg = method_cfg
        self.total_steps = int(total_steps)
        self.meta = meta
        self.export_encoder = export_encoder

    # -- schedules
    def momentum(self, step: int) -> float:
        """I-JEPA: linear from ema[0] to ema[1] over the run; step 0 uses ema[0]."""
        start, end = self.cfg.ema
        return momentum_schedule(step, self.total_steps, float(start), float(end), kind="linear")

    # -- protocol of common.train
    def encode(self, images: torch.Tensor, context: torch.Tensor):
        """What the predictor reads: the final normed context tokens, or the raw residual
        streams of the layers a feature-mixing decoder names."""
        layers = self.predictor.encoder_layers
        if layers is None:
            return self.student(images, keep=context).patches
        out = self.student(images, keep=context, layers=layers, norm_layers=False)
        return [out.hidden[layer][:, out.num_prefix_tokens:] for layer in layers]

    def training_step(self, batch: dict, step: int) -> dict:
        images, context, targets = batch["images"], batch["context"], batch["targets"]
        # mask.clones > 1 (data2vec 2.0's multi-mask): several masks per image, one teacher pass
        clones = context.shape[0] // images.shape[0]
        if clones * images.shape[0] != context.shape[0]:
            raise ValueError(f"{context.shape[0]} masks for {images.shape[0]} images: "
                             f"expected a whole number of masks per image (mask.clones)")
        student_images = images.repeat_interleave(clones, 0) if clones > 1 else images
        pred = self.predictor(self.encode(student_images, context), context, targets)
        logs, terms = {}, []
        if self.use_pixels:
            n_pix = self.student.patch_size ** 2 * self.student.in_chans
            pix = gather_tokens(pixel_targets(student_images, self.student.patch_size,
                                              self.cfg.norm_pix_loss), targets)
            loss_pix, _ = layerwise_loss(pred[..., :n_pix], pix, torch.ones(1), self.cfg.pixel_loss)
            terms.append(float(self.cfg.pixel_weight) * loss_pix)
            logs["loss_pixels"] = loss_pix.detach()
            pred = pred[..., n_pix:]
        if self.hidden_targets is not None:
            y = self.hidden_targets(self.teacher, images)
            y = gather_tokens(y.repeat_interleave(clones, 0) if clones > 1 else y, targets)
            loss_hidden, per_layer = layerwise_loss(pred, y, self.layer_weights, self.cfg.loss,
                                                    float(self.cfg.smooth_l1_beta))
            terms.append(loss_hidden)
            logs["loss_hidden"] = loss_hidden.detach()
            names = self.hidden_targets.layers if self.hidden_targets.combine == "concat" else ["mean"]
            logs.update({f"loss_layer_{name}": v for name, v in zip(names, per_layer)})
        # One sum of the terms, not a sum started from 0.0: inductor folds `0.0 + x` (and `1.0 * x`),
        # and a loss that is the same tensor as a detached log loses its grad_fn under
        # torch.compile (docs/repros/inductor_detached_log_drops_grad.py). Same value in eager.
        return {"loss": torch.stack(terms).sum(), **logs}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, self.student, self.momentum(step))

    def param_groups(self) -> list[dict]:
        no_decay = () if self.cfg.wd_mask_token else ("predictor.mask_token",)
        named = [(n, p) for n, p in self.named_parameters()
                 if p.requires_grad and not n.startswith("teacher.")]
        return param_groups_weight_decay(named, no_decay_names=no_decay)

    def encoder_for_eval(self) -> ViT:
        return self.teacher if self.export_encoder == "teacher" else self.student

    def monitored_encoders(self) -> dict[str, ViT]:
        return {"student": self.student, **({"teacher": self.teacher} if self.teacher is not None else {})}

    def export_meta(self) -> dict:
        return {**self.meta, "encoder": self.export_encoder}


def build_predictor(p, student: ViT, out_dim: int) -> nn.Module:
    """I-JEPA's predictor (also MAE's decoder), CrossMAE's or data2vec 2.0's decoder."""
    shape = dict(embed_dim=student.embed_dim, grid=student.grid_size, out_dim=out_dim,
                 width=p.width, depth=p.depth)
    heads = p.num_heads or student.num_heads
    if p.kind == "cross":
        layers = (resolve_mix_layers(p.mix_layers, student.depth, p.mix_input)
                  if p.feature_mix else None)
        return CrossDecoder(**shape, num_heads=heads, self_attn=p.self_attn, encoder_layers=layers)
    if p.kind == "conv":
        return ConvDecoder(**shape, kernel=p.kernel, groups=p.groups, noise_std=p.noise_std)
    return Predictor(**shape, num_heads=heads)


def hidden_targets(m, depth: int) -> HiddenTargets:
    """The teacher targets `method` asks for, with its layer weights checked against them."""
    layers = resolve_target_layers(m.target_layers, depth, m.include_final_output)
    hidden = HiddenTargets(layers, depth, m.target_norm, m.target_combine, m.last_layer_source,
                           m.target_source, m.target_post_norm)
    layer_weights(m.layer_weights, hidden.n_outputs)
    return hidden


def exported_network(m) -> str:
    """``teacher`` or ``student``: the network ``method.export_encoder`` names (null: the EMA
    teacher where the targets have one)."""
    if m.export_encoder is None:
        return "teacher" if "hidden" in m.targets else "student"
    return EXPORT_ENCODERS[m.export_encoder]


def validate_config(cfg) -> None:
    """The checks that need no weights, also run at config time (common.validate calls this,
    so --dry-run reports a bad value in one line before anything is written)."""
    m = cfg.method
    if m.targets not in TARGET_KINDS:
        raise ValueError(f"method.targets={m.targets!r}; choose one of {TARGET_KINDS}")
    if m.init not in ("ijepa", "timm"):
        raise ValueError(f"method.init={m.init!r}; choose 'ijepa' or 'timm'")
    if cfg.predictor.kind not in PREDICTOR_KINDS:
        raise ValueError(f"predictor.kind={cfg.predictor.kind!r}; choose one of {PREDICTOR_KINDS}")
    if "hidden" in m.targets:
        hidden_targets(m, int(cfg.model.depth))
    elif exported_network(m) == "teacher":
        raise ValueError(f"method.export_encoder={m.export_encoder!r} but method.targets={m.targets!r} "
                         f"has no EMA teacher; use method.export_encoder=student")
    build_mask_generator(cfg.mask, (cfg.data.img_size // cfg.model.patch_size,) * 2)


def build_method(cfg, total_steps: int) -> MaskedPrediction:
    validate_config(cfg)
    m = cfg.method
    student = ViT(**encoder_arch(cfg))  # method.init -> arch weight_init: the floor starts the same
    hidden = None
    out_dim = 0
    if "pixels" in m.targets:
        out_dim += student.patch_size ** 2 * student.in_chans
    if "hidden" in m.targets:
        hidden = hidden_targets(m, student.depth)
        out_dim += hidden.n_outputs * student.embed_dim
    predictor = build_predictor(cfg.predictor, student, out_dim)
    meta = {"feature": "avgpool", **input_meta_of(cfg)}
    return MaskedPrediction(student, predictor, hidden, m, total_steps, meta,
                            exported_network(m))


def build_train_data(cfg):
    d = cfg.data
    dataset = get_dataset(d.name, "train", root=d.root, subset=d.train_subset, seed=cfg.train.seed)
    aug = d.aug
    steps = [random_resized_crop(d.img_size, scale=tuple(aug.crop_scale), interpolation=aug.interpolation)]
    if aug.flip_p:  # no flip step at all when off: the same random stream as without the key
        steps.append(flip(float(aug.flip_p)))
    steps.append(normalize(d.stats, channels=cfg.model.in_chans))
    grid = (d.img_size // cfg.model.patch_size,) * 2
    collate = MaskCollator(build_mask_generator(cfg.mask, grid), clones=cfg.mask.clones)
    return TransformedDataset(dataset, v2.Compose(steps)), collate
