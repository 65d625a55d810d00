"""Everything a protocol needs: the encoder, the resolved config, both splits and where to write."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from eval import features as F
from eval.encoders import EvalEncoder


@dataclass
class EvalContext:
    encoder: EvalEncoder
    cfg: DictConfig
    train: F.Extraction
    val: F.Extraction
    num_classes: int
    device: torch.device
    out_dir: Path

    @property
    def depth(self) -> int:
        return F.depth_of(self.encoder)

    @property
    def token(self) -> str:
        return F.resolve_token(self.encoder, self.cfg.token)

    @property
    def layers(self) -> list[int]:
        """Blocks of per-layer protocols: ``eval.layers`` = null (every block), n (the last n)
        or a list of 1-indexed blocks."""
        spec = self.cfg.layers
        if spec is None:
            return list(range(1, self.depth + 1))
        if isinstance(spec, int):
            if not 1 <= spec <= self.depth:
                raise ValueError(f"eval.layers={spec}: the encoder has {self.depth} blocks")
            return list(range(self.depth - spec + 1, self.depth + 1))
        layers = [int(l) for l in spec]
        bad = [l for l in layers if not 1 <= l <= self.depth]
        if bad:
            raise ValueError(f"eval.layers {bad} outside 1..{self.depth} (the encoder's blocks)")
        return layers

    def artifact_path(self, name: str, section: str) -> Path:
        """Where a trained probe is saved: beside the feature cache (binaries stay out of the
        git-tracked results/), keyed by checkpoint and by the protocol's config hash."""
        from eval.settings import section_hash

        root = Path(self.cfg.cache_dir) if self.cfg.cache_dir else self.out_dir
        return root / "probes" / self.encoder.sha256[:24] / f"{name}_{section_hash(self.cfg, section)}.pt"

    def split(self, name: str) -> F.Extraction:
        return {"train": self.train, "val": self.val}[name]

    def labels(self, split: str) -> torch.Tensor:
        return self.split(split).dataset.targets.long()

    def features(self, split: str, names: list[str], token_dtype=torch.float16) -> dict[str, torch.Tensor]:
        c = self.cfg
        return F.extract(self.encoder, self.split(split), list(names), batch_size=int(c.batch_size),
                         device=self.device, cache_dir=c.cache_dir, progress=bool(c.progress),
                         token_dtype=token_dtype, desc=f"{split} features", num_workers=int(c.num_workers))
