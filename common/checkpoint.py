"""Atomic checkpoints, resume from the newest loadable one, and encoder export.

Nothing already written is ever lost: saves go to a temporary file that is renamed over
the target only once complete, a corrupt checkpoint is skipped (never deleted), and an
existing exported encoder with other weights is kept beside the new one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from common.errors import CorruptCheckpointError, first_sentence
from common.io import atomic_write

log = logging.getLogger(__name__)

ENCODER_FORMAT = "ssl-vit-encoder/1"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _floating_tensors(state: Any, prefix: str = ""):
    """(dotted name, tensor) of every floating-point tensor in a nested state."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point():
            yield prefix or "<tensor>", state
        return
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return
    for k, v in items:
        yield from _floating_tensors(v, f"{prefix}.{k}" if prefix else str(k))


def non_finite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested state that hold NaN or inf.

    A sum is finite only if every term is (NaN and inf propagate), so one fp32 sum per tensor
    and one host sync per device clear almost every tensor: an element-wise ``isfinite`` pass
    costs ~15x a sum on CPU and a sync per tensor on GPU, for every checkpoint of every run. A
    non-finite sum may also be the overflow of finite values: only those tensors (and float64
    ones, whose sum the fp32 accumulator could overflow) get the exact element-wise check.
    """
    named = [(name, t.detach()) for name, t in _floating_tensors(state, prefix)]
    sums: dict[torch.device, list[tuple[str, torch.Tensor, torch.Tensor]]] = {}
    for name, t in named:
        total = t.sum(dtype=torch.float32) if t.dtype != torch.float64 else t.new_full((), float("inf"))
        sums.setdefault(t.device, []).append((name, t, total))
    suspects = []
    for group in sums.values():
        finite = torch.isfinite(torch.stack([total for _, _, total in group])).tolist()
        suspects += [(name, t) for (name, t, _), ok in zip(group, finite) if not ok]
    bad = {name for name, t in suspects if not bool(torch.isfinite(t).all())}
    return [name for name, _ in named if name in bad]


class CheckpointManager:
    """`run_dir/checkpoints/step_XXXXXXXXX.pt`, newest first on resume."""

    def __init__(self, run_dir: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}")
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def path_for(self, step: int) -> Path:
        return self.dir / f"step_{step:09d}.pt"

    def list(self) -> list[tuple[int, Path]]:
        """All checkpoint files, newest (highest step) first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _CKPT_RE.match(p.name))]
        return sorted(found, reverse=True)

    def save(self, state: dict, step: int) -> Path:
        target = self.path_for(step)
        if target.exists():
            # A file already at this step was skipped as unloadable on resume: keep it for
            # inspection instead of overwriting it.
            target.rename(target.with_name(target.name + ".corrupt"))
        atomic_write(target, state)
        self._prune()
        return target

    def _prune(self) -> None:
        for _, old in self.list()[self.keep:]:
            old.unlink()

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[dict, Path] | None:
        """The newest checkpoint that loads and is finite; others are reported and left in place
        (a run that diverged before finiteness was checked at save time may have saved NaNs)."""
        for step, path in self.list():
            try:
                state = torch.load(path, map_location=map_location, weights_only=False)
            except Exception as exc:  # truncated zip, pickle error, ...
                log.warning("skipping unloadable checkpoint %s (%s: %s); trying an older one",
                            path, type(exc).__name__, exc)
                continue
            if not isinstance(state, dict) or state.get("step") != step:
                log.warning("skipping checkpoint %s: its content does not match its name", path)
                continue
            if bad := non_finite_tensors(state):
                log.warning("skipping checkpoint %s: %d tensor(s) hold NaN or inf (e.g. %s)", path, len(bad), bad[0])
                continue
            return state, path
        return None


def export_encoder(vit, path: str | os.PathLike, meta: dict) -> str:
    """Save the evaluation encoder (architecture + timm-keyed state dict + meta); returns its sha256."""
    path = Path(path)
    payload = {
        "format": ENCODER_FORMAT,
        "arch": dict(vit.arch),
        "state_dict": {k: v.detach().cpu().clone() for k, v in vit.state_dict().items()},
        "meta": dict(meta),
    }
    if path.exists():
        old_sha = sha256_file(path)
        kept = path.with_name(f"{path.stem}.{old_sha[:12]}{path.suffix}")
        if not kept.exists():
            path.replace(kept)
            log.warning("an encoder already existed at %s; kept it as %s", path, kept)
    atomic_write(path, payload)
    digest = sha256_file(path)
    atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n")
    return digest


def load_encoder(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Rebuild the exported encoder. Returns (vit in eval mode, meta, sha256 of the file)."""
    from common.vit import ViT, load_state_dict_checked

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no encoder file at {path}: train a run (python <paper>/launch.py) or `dvc pull` it first")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except PermissionError:
        raise
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        # torch reports a damaged zip as RuntimeError or OSError (EINVAL), a non-zip as a pickle error
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__}: {first_sentence(exc)}); "
            "export it again from its run (python <paper>/launch.py) or restore it with `dvc pull`") from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        keys = sorted(payload)[:10] if isinstance(payload, dict) else type(payload).__name__
        raise CorruptCheckpointError(
            f"{path} is not an exported encoder (format {ENCODER_FORMAT!r}; found {keys}). "
            "Export one with common.checkpoint.export_encoder, or convert an official checkpoint "
            "with eval/checkpoints.py")
    vit = ViT(**payload["arch"])
    load_state_dict_checked(vit, payload["state_dict"])
    vit.eval()
    return vit, payload["meta"], sha256_file(path)
