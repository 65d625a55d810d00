"""Official checkpoint import: key maps from released formats into the common ViT.

Every map is declared once as data (where the encoder's state dict sits in the checkpoint,
which prefix to strip, which keys are not part of the encoder, key renames as two-way
templates) so that ``to_vit`` and ``to_official`` are exact inverses on the encoder keys
(tested by round trips).

| format | checkpoint layout | encoder | ViT |
|---|---|---|---|
| ``ijepa`` | ``{"target_encoder" or "encoder": {"module.<timm key>"}}`` | target encoder (default) | no class token, sin-cos table, avg pool |
| ``dino`` | ``{"teacher": {"backbone.<key>", "head.*"}}``, ``{"student": {"module.backbone.<key>"}}`` or a bare backbone | teacher (default) | timm layout |
| ``udi`` | as ``dino``; ``cls_token`` ``[1, 2, D]``, ``pos_embed`` ``[1, 2 + N, D]`` | teacher | 2 class tokens |
| ``mocov3`` | ``{"state_dict": {"module.base_encoder.<key>", "module.momentum_encoder.*", "module.predictor.*"}}`` | base encoder | sin-cos table, projector ``head.*`` dropped |
| ``mae`` | ``{"model": {<timm key>, "decoder_*", "mask_token"}}`` | encoder | sin-cos table |
| ``deit`` | ``{"model": {<timm key>, "head.*"}}`` | encoder | timm layout |
| ``clip`` | OpenAI ``{"visual.conv1.weight", "visual.transformer.resblocks.*", ...}`` | visual tower, timm names (as timm's ``_convert_openai_clip``) | pre-norm, quick-GELU, eps 1e-5; projection dropped |

CLI: ``python eval/checkpoints.py FORMAT IN.pth OUT/encoder.pt [--num-heads H] [--which NAME]``
writes an ``encoder.pt`` (``common.checkpoint.export_encoder``) that every protocol accepts.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


@dataclass(frozen=True)
class Rename:
    """Two-way key template, e.g. ``transformer.resblocks.{i}.ln_1.{p}`` <-> ``blocks.{i}.norm1.{p}``.
    ``unsqueeze``: leading singleton dims the common ViT's tensor has in addition."""

    official: str
    ours: str
    unsqueeze: int = 0

    @staticmethod
    def _regex(template: str) -> re.Pattern:
        pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
        return re.compile(f"^{pattern}$")

    def match(self, key: str, to_ours: bool) -> str | None:
        src, dst = (self.official, self.ours) if to_ours else (self.ours, self.official)
        m = self._regex(src).match(key)
        return None if m is None else dst.format(**m.groupdict())


@dataclass(frozen=True)
class KeyMap:
    name: str
    containers: tuple[str, ...]      # top-level keys holding state dicts, default first ("" = the dict itself)
    prefixes: tuple[str, ...]        # prefixes of the encoder's keys, canonical first ("" = none)
    drop: tuple[str, ...] = ()       # stripped key prefixes that are not part of the encoder
    renames: tuple[Rename, ...] = () # empty: keys are already timm's
    arch: dict = field(default_factory=dict)
    feature: str = "cls"
    stats: str = "imagenet"
    forbid: tuple[str, ...] = ()     # keys this importer cannot represent

    def state_dict_of(self, checkpoint: dict, which: str | None = None) -> tuple[dict, str]:
        """The raw state dict and the container it came from."""
        if not isinstance(checkpoint, dict):
            raise ValueError(f"{self.name}: expected a dict checkpoint, got {type(checkpoint).__name__}")
        candidates = [which] if which else list(self.containers)
        for c in candidates:
            if c == "":
                if any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
                    return checkpoint, ""
            elif isinstance(checkpoint.get(c), dict):
                return checkpoint[c], c
        raise ValueError(
            f"{self.name}: no encoder state dict in this checkpoint (looked for {candidates}; it has "
            f"{sorted(checkpoint)[:10]}). Pass --which with the key that holds the encoder")

    def _strip(self, sd: dict, prefixes) -> dict:
        for prefix in prefixes:
            kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if kept and (prefix or "patch_embed.proj.weight" in kept or self.renames):
                return kept
        raise ValueError(f"{self.name}: no key starts with any of {list(prefixes)}; first keys: {list(sd)[:5]}")

    def to_vit(self, checkpoint: dict, which: str | None = None, prefix: str | None = None) -> dict:
        """Encoder state dict in the common ViT's (timm's) keys."""
        sd, _ = self.state_dict_of(checkpoint, which)
        sd = self._strip(sd, [prefix] if prefix is not None else self.prefixes)
        bad = [k for k in sd if k.startswith(self.forbid)] if self.forbid else []
        if bad:
            raise ValueError(f"{self.name}: keys {bad} cannot be represented by the common ViT "
                             "(e.g. a distilled DeiT's distillation token); use a non-distilled checkpoint")
        out = {}
        for k, v in sd.items():
            if self.drop and k.startswith(self.drop):
                continue
            if not self.renames:
                out[k] = v
                continue
            for r in self.renames:
                new = r.match(k, to_ours=True)
                if new is not None:
                    out[new] = v.reshape((1,) * r.unsqueeze + tuple(v.shape))
                    break
            else:
                raise ValueError(f"{self.name}: key {k!r} has no mapping to the common ViT")
        return out

    def to_official(self, state_dict: dict, extra: dict | None = None) -> dict:
        """Inverse of ``to_vit`` in the canonical layout (first container and prefix);
        ``extra`` adds non-encoder entries (heads, decoders) under the same prefix."""
        sd = {}
        for k, v in state_dict.items():
            if self.renames:
                for r in self.renames:
                    new = r.match(k, to_ours=False)
                    if new is not None:
                        k, v = new, v.reshape(tuple(v.shape[r.unsqueeze:]))
                        break
                else:
                    raise ValueError(f"{self.name}: ViT key {k!r} has no official name")
            sd[self.prefixes[0] + k] = v
        for k, v in (extra or {}).items():
            sd[self.prefixes[0] + k] = v
        container = self.containers[0]
        return sd if container == "" else {container: sd}


_CLIP_BLOCK = "transformer.resblocks.{i}."
CLIP_RENAMES = (
    Rename("conv1.weight", "patch_embed.proj.weight"),
    Rename("class_embedding", "cls_token", unsqueeze=2),
    Rename("positional_embedding", "pos_embed", unsqueeze=1),
    Rename("ln_pre.{p}", "norm_pre.{p}"),
    Rename(_CLIP_BLOCK + "ln_1.{p}", "blocks.{i}.norm1.{p}"),
    Rename(_CLIP_BLOCK + "attn.in_proj_{p}", "blocks.{i}.attn.qkv.{p}"),
    Rename(_CLIP_BLOCK + "attn.out_proj.{p}", "blocks.{i}.attn.proj.{p}"),
    Rename(_CLIP_BLOCK + "ln_2.{p}", "blocks.{i}.norm2.{p}"),
    Rename(_CLIP_BLOCK + "mlp.c_fc.{p}", "blocks.{i}.mlp.fc1.{p}"),
    Rename(_CLIP_BLOCK + "mlp.c_proj.{p}", "blocks.{i}.mlp.fc2.{p}"),
    Rename("ln_post.{p}", "norm.{p}"),
)

KEY_MAPS = {
    "ijepa": KeyMap("ijepa", ("target_encoder", "encoder"), ("module.", ""),
                    arch={"num_class_tokens": 0, "global_pool": "avg", "pos_embed": "sincos"}, feature="avgpool"),
    "dino": KeyMap("dino", ("teacher", "student", ""), ("backbone.", "module.backbone.", ""), drop=("head.",)),
    "udi": KeyMap("udi", ("teacher", "student", ""), ("backbone.", "module.backbone.", ""), drop=("head.",),
                  arch={"num_class_tokens": 2}),
    "mocov3": KeyMap("mocov3", ("state_dict",), ("module.base_encoder.", "module.momentum_encoder.", "base_encoder."),
                     drop=("head.",), arch={"pos_embed": "sincos"}),
    "mae": KeyMap("mae", ("model",), ("",), drop=("decoder", "mask_token", "head.", "fc_norm."),
                  arch={"pos_embed": "sincos"}),
    "deit": KeyMap("deit", ("model", ""), ("",), drop=("head.",), forbid=("dist_token", "head_dist")),
    "clip": KeyMap("clip", ("", "state_dict"), ("visual.",), drop=("proj",), renames=CLIP_RENAMES,
                   arch={"pre_norm": True, "norm_eps": 1e-5, "act_layer": "quick_gelu"}, stats="clip"),
}


def key_map(fmt: str) -> KeyMap:
    if fmt not in KEY_MAPS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(sorted(KEY_MAPS))}")
    return KEY_MAPS[fmt]


def infer_arch(state_dict: dict, km: KeyMap, num_heads: int | None = None) -> dict:
    """ViT kwargs from tensor shapes (heads are not stored: given, or the usual one per width)."""
    w = state_dict["patch_embed.proj.weight"]
    D, C, p = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k)))
    cls = km.arch.get("num_class_tokens", 1)
    n_patches = state_dict["pos_embed"].shape[1] - cls
    side = int(round(n_patches ** 0.5))
    if side * side != n_patches:
        raise ValueError(f"{km.name}: {n_patches} position slots is not a square grid")
    heads = num_heads or HEADS_BY_WIDTH.get(D)
    if heads is None:
        raise ValueError(f"{km.name}: cannot infer num_heads for width {D}; pass --num-heads")
    arch = {"img_size": side * p, "patch_size": p, "in_chans": C, "embed_dim": D, "depth": depth,
            "num_heads": heads, "mlp_ratio": state_dict["blocks.0.mlp.fc1.weight"].shape[0] / D,
            "qkv_bias": "blocks.0.attn.qkv.bias" in state_dict}
    arch.update(km.arch)
    return arch


def load_official(fmt: str, checkpoint: dict, num_heads: int | None = None, which: str | None = None):
    """``(ViT with the official weights, arch)``."""
    from common.vit import ViT, load_state_dict_checked

    km = key_map(fmt)
    sd = km.to_vit(checkpoint, which)
    arch = infer_arch(sd, km, num_heads)
    vit = ViT(**arch)
    load_state_dict_checked(vit, sd)
    return vit.eval(), arch


def convert(fmt: str, src: str | Path, dst: str | Path, num_heads: int | None = None, which: str | None = None) -> str:
    """Official checkpoint file -> ``encoder.pt``; returns its sha256."""
    from common.checkpoint import export_encoder, sha256_file
    from common.method import input_meta

    checkpoint = torch.load(src, map_location="cpu", weights_only=False)
    vit, arch = load_official(fmt, checkpoint, num_heads, which)
    km = key_map(fmt)
    meta = {"method": f"official-{fmt}", "paper": "official", "run": Path(src).stem,
            "config_hash": sha256_file(src)[:16],
            "step": int(checkpoint.get("epoch", 0)) if isinstance(checkpoint.get("epoch", 0), int) else 0,
            "feature": km.feature, **input_meta(km.stats, arch["in_chans"], arch["img_size"]),
            "source": str(src), "source_format": fmt}
    return export_encoder(vit, dst, meta)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="convert an official checkpoint into an encoder.pt")
    parser.add_argument("format", choices=sorted(KEY_MAPS))
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--num-heads", type=int, default=None)
    parser.add_argument("--which", default=None, help="checkpoint key holding the encoder (e.g. encoder, student)")
    args = parser.parse_args(argv)
    sha = convert(args.format, args.src, args.dst, args.num_heads, args.which)
    print(f"{args.dst}  sha256 {sha}")


if __name__ == "__main__":
    main()
