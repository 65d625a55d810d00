"""Frozen feature extraction: one forward pass per batch yields every requested feature.

Feature names (docs/CONTRACTS.md): ``cls``, ``cls_plus``, ``avgpool`` (final normed tokens);
``<token>_last<n>`` (concatenation over the last n blocks, DINO); ``<token>@<l>`` (block l
after the final norm, SDSSL); ``<a>+<b>`` (concatenation); ``patch_tokens`` ``[N, n, D]``;
``pixels`` (the pixel floor). A name is parsed into *atoms* ``(token, layer)``; atoms are what
is computed and cached, so ``cls_last4`` and ``cls@12`` share the block-12 class token.

The cache lives in ``<cache_dir>/<checkpoint sha256>/<extraction key>/<split>/<atom>.pt``, the
extraction key hashing dataset, split, subset, seed and preprocessing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from common.io import atomic_write
from eval.encoders import EvalEncoder, PixelEncoder

TOKENS = ("cls", "cls_plus", "avgpool", "pixels")
_PART = re.compile(r"^(?P<token>cls_plus|cls|avgpool|pixels)(?:@(?P<layer>\d+)|_last(?P<last>\d+))?$")


@dataclass(frozen=True, order=True)
class Atom:
    token: str  # cls | cls_plus | avgpool | pixels | patch_tokens
    layer: int  # 1-indexed block

    @property
    def name(self) -> str:
        return f"{self.token}@{self.layer}"


def parse_feature(name: str, depth: int) -> list[Atom]:
    """Atoms of a feature name, in concatenation order; errors name the grammar."""
    atoms: list[Atom] = []
    for part in name.split("+"):
        if part == "patch_tokens":
            if "+" in name:
                raise ValueError(f"feature {name!r}: patch_tokens cannot be concatenated with image-level features")
            return [Atom("patch_tokens", depth)]
        m = _PART.match(part)
        if not m:
            raise ValueError(
                f"feature {name!r}: cannot parse {part!r}; use <token>, <token>@<block>, <token>_last<n> "
                f"or patch_tokens, joined with '+', with <token> one of {', '.join(TOKENS)}")
        token = m["token"]
        if m["layer"] is not None:
            layers = [int(m["layer"])]
        elif m["last"] is not None:
            n = int(m["last"])
            if not 1 <= n <= depth:
                raise ValueError(f"feature {name!r}: last {n} blocks requested but the encoder has {depth}")
            layers = list(range(depth - n + 1, depth + 1))
        else:
            layers = [depth]
        for layer in layers:
            if not 1 <= layer <= depth:
                raise ValueError(f"feature {name!r}: block {layer} does not exist (blocks 1..{depth})")
            atoms.append(Atom(token, layer))
    return atoms


def check_token(encoder: EvalEncoder, token: str) -> None:
    model = encoder.model
    if isinstance(model, PixelEncoder):
        return
    if token == "cls" and model.num_class_tokens < 1:
        raise ValueError("this encoder has no class token; evaluate it with token=avgpool")
    if token == "cls_plus" and model.num_class_tokens < 2:
        raise ValueError(f"cls_plus needs an encoder with 2 class tokens (UDI+); this one has "
                         f"{model.num_class_tokens}; use token=cls or avgpool")
    if token == "pixels":
        raise ValueError("token 'pixels' is only for the pixel floor (checkpoint=pixels)")


def resolve_token(encoder: EvalEncoder, token: str | None) -> str:
    """``eval.token``, else the encoder's meta ``feature``; ``pixels`` for the pixel floor."""
    if isinstance(encoder.model, PixelEncoder):
        return "pixels"
    token = token or encoder.meta.get("feature") or ("cls" if encoder.model.num_class_tokens else "avgpool")
    if token not in TOKENS:
        raise ValueError(f"eval.token {token!r} unknown; use one of cls, cls_plus, avgpool")
    check_token(encoder, token)
    return token


def depth_of(encoder: EvalEncoder) -> int:
    return int(encoder.model.depth)


# --------------------------------------------------------------------------- preprocessing
class Preprocess:
    """uint8 ``[(B,) C, H, W]`` -> normalised float at the encoder's size and channels.

    ``val_resize``: ``none`` resizes only when the size differs; ``short256`` resizes the
    shorter side to 256/224 x size then centre-crops (DINO); ``square256`` squashes to a square
    first (SDSSL code, reproduces its aspect-ratio defect).
    """

    def __init__(self, meta: dict, val_resize: str = "none"):
        if val_resize not in ("none", "short256", "square256"):
            raise ValueError(f"eval.val_resize {val_resize!r} unknown; use none, short256 or square256")
        size = meta["img_size"]
        self.size = size if isinstance(size, int) else int(size[0])
        self.in_chans = int(meta["in_chans"])
        self.mean = torch.tensor(meta["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(meta["std"], dtype=torch.float32).view(-1, 1, 1)
        self.val_resize = val_resize

    def key(self) -> dict:
        return {"size": self.size, "in_chans": self.in_chans, "mean": self.mean.flatten().tolist(),
                "std": self.std.flatten().tolist(), "val_resize": self.val_resize}

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        if self.val_resize == "none":
            if tuple(x.shape[-2:]) != (s, s):
                x = TF.resize(x, [s, s], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
            return x
        big = int(round(s * 256 / 224))
        target = big if self.val_resize == "short256" else [big, big]
        x = TF.resize(x, target, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        return TF.center_crop(x, [s, s])

    def channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-3]
        if c == self.in_chans:
            return x
        if c == 1:
            return x.expand(*x.shape[:-3], self.in_chans, *x.shape[-2:])
        if self.in_chans == 1 and c == 3:
            return TF.rgb_to_grayscale(x)
        raise ValueError(f"images have {c} channels but the encoder expects {self.in_chans}")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.channels(self.geometry(x)))


def iter_images(dataset, preprocess, batch_size: int, num_workers: int = 0):
    """Batches ``(images [B, C, H, W] float, labels)``: vectorised for in-memory datasets,
    through a DataLoader with ``num_workers`` for image folders."""
    images = getattr(dataset, "images", None)
    if images is not None:
        for start in range(0, len(dataset), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(dataset)))
            yield preprocess(images[idx].permute(0, 3, 1, 2)), dataset.targets[idx]
        return
    yield from DataLoader(SeededAugmentation(dataset, preprocess), batch_size=batch_size, shuffle=False,
                          num_workers=num_workers)


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Python's ``random``, numpy's global RNG and torch's CPU generator seeded from ``seed``
    inside the block, each put back to its previous state on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            # not torch.manual_seed: it also reseeds the CUDA generators, which this fork does not restore
            torch.default_generator.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class SeededAugmentation(torch.utils.data.Dataset):
    """``(transform(image), label)``; sample ``i`` of epoch ``e`` draws its augmentation from
    ``(seed, e, i)`` inside ``seeded_rngs``, so runs are reproducible whichever of Python's,
    numpy's or torch's RNG a transform draws from, and the global RNG states are untouched."""

    def __init__(self, dataset, transform, seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        with seeded_rngs((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)):
            return self.transform(image), label


def num_batches(dataset, batch_size: int) -> int:
    return (len(dataset) + batch_size - 1) // batch_size


# --------------------------------------------------------------------------- extraction
def compute_atoms(model, x: torch.Tensor, atoms: list[Atom]) -> dict[Atom, torch.Tensor]:
    """Every atom of one batch from one forward pass (``model`` frozen, in eval mode)."""
    if isinstance(model, PixelEncoder):
        return {a: model.patchify(x) if a.token == "patch_tokens" else x.flatten(1) for a in atoms}
    layers = sorted({a.layer for a in atoms if a.token != "patch_tokens"})
    out = model(x, layers=layers, norm_layers=True)
    P = model.num_prefix_tokens
    result = {}
    for a in atoms:
        if a.token == "patch_tokens":
            result[a] = out.patches
            continue
        h = out.hidden[a.layer]
        if a.token == "cls":
            result[a] = h[:, 0]
        elif a.token == "cls_plus":
            result[a] = h[:, 1]
        else:  # avgpool over patch tokens (prefix tokens excluded)
            result[a] = h[:, P:].mean(dim=1)
    return result


@dataclass
class Extraction:
    """Where the images of one split come from and how they are prepared."""

    dataset: object
    split: str
    preprocess: Preprocess
    subset: object = None
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({"dataset": getattr(self.dataset, "name", "?"),
                           "hash": getattr(self.dataset, "hash", "?"), "n": len(self.dataset),
                           "split": self.split, "subset": self.subset, "seed": self.seed,
                           "pre": self.preprocess.key()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class FeatureCache:
    def __init__(self, root: str | Path | None, sha256: str, extraction: Extraction):
        self.dir = None if root is None else Path(root) / sha256[:24] / extraction.key() / extraction.split

    def path(self, atom: Atom) -> Path | None:
        return None if self.dir is None else self.dir / f"{atom.token}@{atom.layer}.pt"

    def load(self, atom: Atom) -> torch.Tensor | None:
        p = self.path(atom)
        if p is None or not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # a truncated file from a killed run: recompute it
            return None

    def save(self, atom: Atom, tensor: torch.Tensor) -> None:
        p = self.path(atom)
        if p is None:
            return
        atomic_write(p, tensor)


@torch.no_grad()
def extract_atoms(encoder: EvalEncoder, extraction: Extraction, atoms: list[Atom], *, batch_size: int = 256,
                  device: str | torch.device = "cpu", cache_dir=None, progress: bool = True,
                  token_dtype: torch.dtype = torch.float16, desc: str = "features",
                  num_workers: int = 0) -> dict[Atom, torch.Tensor]:
    """Atoms for every image of the split, from the cache when present; targets at key None."""
    atoms = sorted(set(atoms))
    cache = FeatureCache(cache_dir, encoder.sha256, extraction)
    found = {a: t for a in atoms if (t := cache.load(a)) is not None}
    todo = [a for a in atoms if a not in found]
    if not todo:
        return found
    model = encoder.model.to(device).eval()
    n = len(extraction.dataset)
    store: dict[Atom, torch.Tensor] = {}
    batches = iter_images(extraction.dataset, extraction.preprocess, batch_size, num_workers)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, total=num_batches(extraction.dataset, batch_size), desc=desc,
                       dynamic_ncols=True, mininterval=1.0, leave=False)
    start = 0
    for images, _ in batches:
        values = compute_atoms(model, images.to(device), todo)
        for a, v in values.items():
            if a not in store:
                dtype = token_dtype if a.token == "patch_tokens" else torch.float32
                store[a] = torch.empty((n, *v.shape[1:]), dtype=dtype)
            store[a][start:start + len(v)] = v.to("cpu", store[a].dtype)
        start += len(images)
    model.to("cpu")
    for a, t in store.items():
        cache.save(a, t)
    return {**found, **store}


def assemble(atoms_of: dict[str, list[Atom]], values: dict[Atom, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Feature name -> tensor, concatenating atoms along the last dimension."""
    out = {}
    for name, atoms in atoms_of.items():
        parts = [values[a] for a in atoms]
        out[name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return out


def extract(encoder: EvalEncoder, extraction: Extraction, features: list[str], **kw) -> dict[str, torch.Tensor]:
    """Named features ``{name: [N, ...]}`` of one split."""
    depth = depth_of(encoder)
    atoms_of = {f: parse_feature(f, depth) for f in features}
    for atoms in atoms_of.values():
        for a in atoms:
            if a.token != "patch_tokens":
                check_token(encoder, a.token)
    values = extract_atoms(encoder, extraction, [a for v in atoms_of.values() for a in v], **kw)
    return assemble(atoms_of, values)
