"""Frozen teachers: timm ViTs built by name from local weight files, or encoders exported
by this repository (``encoder.pt``), run block by block so that the masking teacher can
drop redundant tokens during its own forward (paper Sec. 3.2).

Nothing is ever downloaded: timm models are created with ``pretrained=False`` and the
weights come from ``path`` (default ``<weights_dir>/<timm name>.safetensors`` or ``.pth``).
Each teacher keeps its own input normalisation (CLIP's differs from ImageNet's); the
method hands every teacher images in [0, 1] and the teacher normalises them itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from common.checkpoint import load_encoder, sha256_file
from common.vit import RelationAttention, load_state_dict_checked, take_tokens
from hybrid_distill.masking import MaskPlan, compose, gather_tokens, least_redundant

DEFAULT_WEIGHTS_DIR = "data/teachers"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# The teachers of the paper (timm 1.0.x names). Any other timm ViT name also works.
PAPER_TEACHERS = {
    "mae_b": "vit_base_patch16_224.mae",
    "mae_l": "vit_large_patch16_224.mae",
    "deit_b": "deit_base_patch16_224.fb_in1k",
    "clip_b": "vit_base_patch16_clip_quickgelu_224.openai",
    "clip_b_gelu": "vit_base_patch16_clip_224.openai",
    "clip_l": "vit_large_patch14_clip_quickgelu_224.openai",
    "clip_l_gelu": "vit_large_patch14_clip_224.openai",
}


@dataclass(frozen=True)
class Capture:
    """What a teacher pass records. Blocks are 1-indexed like ``common.vit``."""

    hidden: tuple[int, ...] = ()     # residual stream after block i (before the final norm)
    relations: tuple[int, ...] = ()  # Q K^T / sqrt(d_head) of block i, [B, H, N, N]
    msa: tuple[int, ...] = ()        # attention-branch output of block i (after proj)
    final: bool = False              # tokens after the final norm


@dataclass
class TeacherOutput:
    """Everything row-selected to ``[class token, kept patches in keep order]``."""

    keep: torch.Tensor | None  # [B, m] raster patch indices, None = all patches
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    relations: dict[int, torch.Tensor] = field(default_factory=dict)
    msa: dict[int, torch.Tensor] = field(default_factory=dict)
    final: torch.Tensor | None = None


class FrozenTeacher(nn.Module):
    """A frozen timm ``VisionTransformer`` (or ``common.vit.ViT``) with its input normalisation."""

    def __init__(self, net: VisionTransformer, mean, std, input_size: int, name: str, source: str,
                 sha256: str | None):
        super().__init__()
        if not isinstance(net.blocks[0].attn, RelationAttention):
            raise TypeError("teacher attention must be common.vit.RelationAttention (build with attn_layer=...)")
        if getattr(net, "cls_token", None) is None:
            # Targets are rows [class token, kept patches]; a class-less encoder (I-JEPA style)
            # would silently shift them by one row.
            raise ValueError(f"teacher {name} has no class token; Hybrid Distill needs one (train it with "
                             "model.num_class_tokens=1)")
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.input_size = int(input_size)
        self.name, self.source, self.sha256 = name, source, sha256
        # the shape of the frozen net, read once (it never changes)
        attn = net.blocks[0].attn
        self.depth, self.num_heads, self.head_dim = len(net.blocks), attn.num_heads, attn.head_dim
        self.embed_dim, self.num_prefix_tokens = net.embed_dim, net.num_prefix_tokens
        self.patch_size = net.patch_embed.patch_size[0]
        self.grid_size = tuple(net.patch_embed.grid_size)
        self.in_chans = net.patch_embed.proj.in_channels

    # A teacher never trains: .train() on the parent method must not switch on dropout/drop-path.
    def train(self, mode: bool = True):
        return super().train(False)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "sha256": self.sha256,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "input_size": self.input_size}

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> this teacher's size, channels and normalisation."""
        if images.shape[1] != self.in_chans:
            if images.shape[1] != 1:
                raise ValueError(f"teacher {self.name} takes {self.in_chans} channels, images have {images.shape[1]}")
            images = images.expand(-1, self.in_chans, -1, -1)  # grey -> RGB
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            # Grid alignment (method.grid_align=resize_input): e.g. CLIP-L/14 sees 196 px so that
            # its 14x14 token grid matches a /16 student at 224 px.
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bicubic",
                                   align_corners=False)
        return (images - self.mean) / self.std

    def _block(self, i: int, h: torch.Tensor, cap: Capture, out: TeacherOutput, stage_keep):
        block = self.net.blocks[i - 1]
        if i in cap.relations or i in cap.msa:
            msa, rel = block.attn.forward_with_relations(block.norm1(h))
            h = h + block.ls1(msa)
            h = h + block.ls2(block.mlp(block.norm2(h)))
            if i in cap.relations:
                out.relations[i] = (rel, stage_keep)
            if i in cap.msa:
                out.msa[i] = (msa, stage_keep)
        else:
            h = block(h)
        if i in cap.hidden:
            out.hidden[i] = (h, stage_keep)
        return h

    def forward(self, images: torch.Tensor, capture: Capture, plan: MaskPlan | None = None,
                keep: torch.Tensor | None = None) -> TeacherOutput:
        # no_grad, not inference_mode: torch.compile cannot trace inference tensors ("Cannot set
        # version_counter for inference tensor"), and no_grad outputs serve as loss targets as they are
        with torch.no_grad():
            return self._run(images, capture, plan, keep)

    def _run(self, images: torch.Tensor, capture: Capture, plan: MaskPlan | None,
             keep: torch.Tensor | None) -> TeacherOutput:
        """Run the teacher, optionally shrinking the keep set at ``plan.layers``.

        ``keep`` is an initial keep set (e.g. the random baseline's, or the masking teacher's
        result for the other teacher). With ``plan.reduce_tokens`` the dropped tokens leave
        the forward; otherwise the teacher sees every token and the outputs are indexed.
        """
        net = self.net
        P = net.num_prefix_tokens
        h = net._pos_embed(net.patch_embed(self.prepare_input(images)))
        B, N = h.shape[0], h.shape[1] - P
        reduce = plan is not None and plan.reduce_tokens
        all_patches = torch.arange(N, device=h.device).expand(B, N)
        if plan is not None and plan.layers and keep is None:
            keep = all_patches
        stage_keep = all_patches  # the patches present in h, in row order
        if reduce and keep is not None:
            h, stage_keep = gather_tokens(h, keep, P), keep
        h = net.norm_pre(h)
        stages = dict(zip(plan.layers, plan.counts)) if plan is not None else {}
        out = TeacherOutput(keep=None)
        for i in range(self.depth + 1):
            if i > 0:
                h = self._block(i, h, capture, out, stage_keep)
            if i in stages:
                present = h[:, P:] if reduce else take_tokens(h[:, P:], keep)
                pos = least_redundant(present, stages[i])
                keep = compose(keep, pos)
                if reduce:
                    h, stage_keep = gather_tokens(h, pos, P), keep
        if capture.final:
            out.final = (net.norm(h), stage_keep)
        out.keep = keep
        return self._select_rows(out, keep if keep is not None else all_patches, P)

    @staticmethod
    def _select_rows(out: TeacherOutput, keep: torch.Tensor, P: int) -> TeacherOutput:
        """Rows [first class token, kept patches] of every captured tensor (and columns of
        relations). A tensor captured on a larger keep set is indexed by where the final
        keep set sits in it (keep sets are sorted, so searchsorted finds the positions)."""

        def rows(stage_keep):
            pos = torch.searchsorted(stage_keep.contiguous(), keep.contiguous()) + P
            return torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)

        def tokens(t, stage_keep):
            r = rows(stage_keep)
            return take_tokens(t, r)

        def relation(t, stage_keep):
            r = rows(stage_keep)
            H, n = t.shape[1], r.shape[1]
            t = take_tokens(t, r[:, None, :].expand(-1, H, -1))  # rows, then columns
            return t.gather(3, r[:, None, None, :].expand(-1, H, n, -1))

        return TeacherOutput(
            keep=out.keep,
            hidden={i: tokens(*v) for i, v in out.hidden.items()},
            relations={i: relation(*v) for i, v in out.relations.items()},
            msa={i: tokens(*v) for i, v in out.msa.items()},
            final=tokens(*out.final) if out.final is not None else None,
        )


# ---------------------------------------------------------------------------- loading
def default_weight_path(name: str, weights_dir: str = DEFAULT_WEIGHTS_DIR) -> Path:
    """The first existing ``<weights_dir>/<name><suffix>``, else the ``.safetensors`` one."""
    for suffix in WEIGHT_SUFFIXES:
        candidate = Path(weights_dir) / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return Path(weights_dir) / f"{name}{WEIGHT_SUFFIXES[0]}"


def _missing_weights_error(name: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"teacher weights for '{name}' not found at {path}. Nothing is downloaded at run time: on a "
        f"machine with internet run `python -c \"import timm, safetensors.torch as s; "
        f"m = timm.create_model('{name}', pretrained=True); s.save_file(m.state_dict(), '{name}.safetensors')\"` "
        f"(or take the official checkpoint) and copy the file to {path}, or point the teacher's "
        f"`path` to it (see hybrid_distill/README.md, 'Teacher weights')"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):  # MAE / DeiT / generic wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _resample_pos_embed(state: dict, net: VisionTransformer) -> dict:
    """Interpolate a checkpoint's absolute position table to the teacher's grid (resize_input)."""
    want = net.pos_embed.shape
    if "pos_embed" in state and state["pos_embed"].shape != want:
        state = dict(state)
        prefix = 0 if net.no_embed_class else net.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=list(net.patch_embed.grid_size), num_prefix_tokens=prefix)
    return state


def load_timm_teacher(name: str, path: str | Path | None = None, weights_dir: str = DEFAULT_WEIGHTS_DIR,
                      input_size: int | None = None, expected_sha256: str | None = None,
                      random_weights: bool = False, **timm_kwargs) -> FrozenTeacher:
    """A frozen timm ViT by model name with weights from a local file (never a download).

    ``input_size`` builds the model for another resolution (position table resampled);
    ``timm_kwargs`` override the architecture (tests use tiny random teachers).
    ``random_weights`` keeps timm's initialisation and reads no file: only for counting the
    cost of a step (common/cost.py), where the architecture is all that matters.
    """
    if input_size is not None:
        timm_kwargs["img_size"] = input_size
    if random_weights:
        net = timm.create_model(name, pretrained=False, num_classes=0, attn_layer=RelationAttention, **timm_kwargs)
        return FrozenTeacher(net, net.pretrained_cfg["mean"], net.pretrained_cfg["std"], net.patch_embed.img_size[0],
                             name, "random weights", None)
    path = Path(path) if path else default_weight_path(name, weights_dir)
    if not path.is_file():
        raise _missing_weights_error(name, path)
    digest = _check_sha256(path, expected_sha256)
    net = timm.create_model(name, pretrained=False, num_classes=0, attn_layer=RelationAttention, **timm_kwargs)
    state = read_state_dict(path)
    own = net.state_dict()
    if not set(own) <= set(state):
        state = checkpoint_filter_fn(state, net)  # official OpenAI-CLIP / MAE / DeiT layouts -> timm keys
    state = _resample_pos_embed(state, net)
    # CLIP's 768->512 projection and classifier heads are not part of the distilled token map.
    load_state_dict_checked(net, state, ignore_prefixes=("head.", "fc_norm.", "decoder", "mask_token"))
    cfg = net.pretrained_cfg
    return FrozenTeacher(net, cfg["mean"], cfg["std"], net.patch_embed.img_size[0], name, str(path), digest)


def load_encoder_teacher(path: str | Path, expected_sha256: str | None = None) -> FrozenTeacher:
    """A frozen encoder exported by this repository (``encoder.pt``, ``common.checkpoint``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher encoder {path} does not exist; build the mini teachers with "
            f"`python scripts/build_teachers.py` (or `dvc repro teachers`) or set the teacher's path"
        )
    _check_sha256(path, expected_sha256)
    vit, meta, digest = load_encoder(path)
    return FrozenTeacher(vit, meta["mean"], meta["std"], vit.patch_embed.img_size[0],
                         f"{meta.get('paper', '?')}/{meta.get('run', path.parent.name)}", str(path), digest)


def _check_sha256(path: Path, expected: str | None) -> str:
    digest = sha256_file(path)
    if expected and digest != expected:
        raise ValueError(f"teacher file {path} has sha256 {digest}, the config pins {expected}; "
                         "the file changed since the config was written")
    return digest


def load_teacher(spec, student_grid: tuple[int, int] | None = None) -> FrozenTeacher:
    """Build a teacher from its config entry: ``{kind: timm|encoder, name, path, sha256, ...}``.

    With ``student_grid`` (``method.grid_align=resize_input``), a timm teacher whose patch size
    differs from the student's is built for the input size that gives it the student's grid
    (the other alignments resample token maps, ``hybrid_distill.grid``).
    """
    kind = spec.get("kind", "timm")
    if kind == "encoder":
        return load_encoder_teacher(spec["path"], spec.get("sha256"))
    if kind != "timm":
        raise ValueError(f"teacher kind {kind!r}: use 'timm' (a timm model name) or 'encoder' (an encoder.pt)")
    input_size = None
    if student_grid is not None:
        probe = {**dict(spec.get("timm_kwargs") or {}), "depth": 0}
        patch = timm.create_model(spec["name"], pretrained=False, num_classes=0, **probe).patch_embed.patch_size[0]
        input_size = student_grid[0] * patch
    return load_timm_teacher(spec["name"], spec.get("path"), spec.get("weights_dir", DEFAULT_WEIGHTS_DIR),
                             input_size, spec.get("sha256"), bool(spec.get("random_weights", False)),
                             **dict(spec.get("timm_kwargs") or {}))
