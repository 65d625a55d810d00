"""What an evaluation runs on: an exported encoder, or one of the two floor rows.

``load(spec)`` accepts
* a path to an ``encoder.pt`` (``common.checkpoint.export_encoder``), or a run directory holding one;
* ``pixels``: the raw normalised pixels (flattened for image-level features, patchified for
  the attentive probe) -- the lower floor of every table (DESIGN.md);
* ``random:<encoder.pt or arch .json>``: the same architecture, randomly initialised with
  ``seed`` -- what pretraining is measured against. The init scheme is part of the
  architecture (``weight_init``: timm's default, ``moco``, ``ijepa``...), so the floor starts
  as the run it is the floor for did; its meta ``init`` and its run name carry that scheme.
  It is read at the encoder.pt's ``feature``, or for an arch .json at the one its
  ``global_pool`` implies (``arch_feature``: ``token`` -> ``cls``, else ``avgpool``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from common.augment import STATS
from common.checkpoint import load_encoder
from common.io import atomic_write
from common.method import input_meta
from common.vit import ViT


class PixelEncoder(nn.Module):
    """Raw pixels as 'features': ``depth`` 1, no class token, patches of ``patch_size``."""

    num_class_tokens = 0
    num_prefix_tokens = 0
    depth = 1
    num_heads = 1

    def __init__(self, img_size: int, in_chans: int, patch_size: int = 4):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"pixels: img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size, self.in_chans, self.patch_size = img_size, in_chans, patch_size
        self.embed_dim = in_chans * patch_size**2
        self.flat_dim = in_chans * img_size**2

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, N, C p^2]`` in raster order."""
        p = self.patch_size
        B, C, H, W = x.shape
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (H // p) * (W // p), C * p * p)


@dataclass
class EvalEncoder:
    model: nn.Module
    meta: dict
    sha256: str
    kind: str  # encoder | pixels | random
    arch: dict = field(default_factory=dict)

    @property
    def is_vit(self) -> bool:
        return isinstance(self.model, ViT)


def stats_of(data: str) -> str:
    """The `common.augment.STATS` entry that normalises dataset ``data`` (a floor's input)."""
    kind = data.split(":")[0]
    kind = "imagenet" if kind == "imagefolder" else kind  # ImageNet-layout folders: ImageNet statistics
    if kind not in STATS:
        raise ValueError(f"no normalisation statistics for dataset {data!r}; known: {sorted(STATS)}")
    return kind


def init_name(arch: dict) -> str:
    """The init scheme a ViT of ``arch`` starts from (``timm`` for timm's default; I-JEPA's with
    a rescaled patch embedding is ``ijepa-fan<ref>``)."""
    init = arch.get("weight_init") or "timm"
    ref = arch.get("patch_embed_ref_fan_in")
    return f"{init}-fan{ref}" if ref else init


def built_arch(arch: dict) -> dict:
    """Every constructor argument of the ViT that ``arch`` builds, defaults included: two configs
    that spell one encoder differently (a default left out or written) are one arch. Built on the
    meta device: no weights are allocated and no RNG is drawn from."""
    with torch.device("meta"):
        return ViT(**arch).arch


def arch_feature(arch: dict) -> str:
    """The feature a ViT of ``arch`` is read at, as trained encoders name it on export: its class
    token under ``global_pool`` token, its patch mean otherwise."""
    return "cls" if built_arch(arch)["global_pool"] == "token" else "avgpool"


def floor_label(method: str, init: str | None = None) -> str:
    """Table label of a floor row: ``raw pixels`` or ``random init (<init> init)``."""
    if method == "pixels":
        return "raw pixels"
    return f"random init ({init} init)" if init else "random init"


def random_spec(arch: dict, directory: str | Path) -> str:
    """``random:<directory>/arch.json``, written from ``arch`` (e.g. ``common.config.encoder_arch``
    of the run a floor is for), so the floor needs no trained encoder."""
    path = Path(directory) / "arch.json"
    text = json.dumps(ViT(**arch).arch, indent=1, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:
        atomic_write(path, text)
    return f"random:{path}"


def random_sha256(arch: dict, seed: int) -> str:
    """The ``checkpoint_sha256`` of a random encoder: its full arch (``ViT(**arch).arch``, as
    ``random_spec`` writes it) and its seed, which together fix every weight."""
    return _sha_of(json.dumps({"arch": arch, "seed": seed}, sort_keys=True))


def _sha_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _encoder_file(path: Path) -> Path:
    if path.is_dir():
        candidate = path / "encoder.pt"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"run directory {path} has no encoder.pt: the run has not finished training "
                "(resume it with python <paper>/launch.py), or pass the path of an encoder file")
        return candidate
    return path


def load(spec: str, data: str = "fashion_mnist", data_shape: tuple[int, int] | None = None,
         seed: int = 0) -> EvalEncoder:
    """Resolve ``spec`` (see module doc). ``data_shape`` = (channels, size) of the eval images,
    needed for the pixel floor and for ``random:<arch.json>``."""
    spec = str(spec)
    if spec == "pixels":
        if data_shape is None:
            raise ValueError("the pixels floor needs the eval images' (channels, size)")
        c, size = data_shape
        meta = dict(input_meta(stats_of(data), c, size), method="pixels", run="pixels", feature="pixels")
        return EvalEncoder(PixelEncoder(size, c).eval(), meta, _sha_of(f"pixels:{data}"), "pixels")
    if spec.startswith("random:"):
        source = Path(spec.split(":", 1)[1])
        if source.suffix == ".json":
            arch = json.loads(source.read_text())
            c = arch.get("in_chans", 3)
            img = arch.get("img_size", 224)
            meta = input_meta(stats_of(data), c, img if isinstance(img, int) else img[0])
            meta["feature"] = arch_feature(arch)
        else:
            trained, meta, _ = load_encoder(_encoder_file(source))
            arch = trained.arch
            meta = dict(meta)
        torch.manual_seed(seed)
        model = ViT(**arch).eval()
        init = init_name(arch)
        meta.update(method="random", init=init, run=f"random-{init}-{_sha_of(json.dumps(arch, sort_keys=True))[:8]}")
        return EvalEncoder(model, meta, random_sha256(arch, seed), "random", arch)
    path = _encoder_file(Path(spec))
    model, meta, sha = load_encoder(path)
    return EvalEncoder(model, {**meta, **_training_provenance(path, sha)}, sha, "encoder", model.arch)


def _training_provenance(encoder_path: Path, sha256: str) -> dict:
    """The training commit from the run's done.json (encoder.pt holds no commit, so that its
    bytes do not change with the commit); nothing when done.json describes another file."""
    done = encoder_path.with_name("done.json")
    try:
        summary = json.loads(done.read_text())
    except (OSError, ValueError):
        return {}
    if summary.get("encoder_sha256") != sha256 or not summary.get("git_commit"):
        return {}
    return {"train_git_commit": summary["git_commit"]}
