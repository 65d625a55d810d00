"""The method contract: what the training loop (`common.train`) needs of the object a paper's
`build_method(cfg, total_steps)` returns, checked when the loop receives it, and the input
metadata every exported `encoder.pt` carries (docs/CONTRACTS.md, "A method").

A paper's method subclasses `MethodBase` (a `torch.nn.Module` with the optional hooks as
no-ops) and writes `training_step`, `param_groups`, `encoder_for_eval` and `export_meta`;
`export_meta` builds its input part with `input_meta_of(cfg)`.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import nn

from common.augment import channel_stats
from common.vit import ViT

# What evaluation reads from every encoder.pt's meta: the default frozen feature (`cls`,
# `cls_plus`, `avgpool`) and the input the encoder was trained on.
REQUIRED_META = ("feature", "img_size", "in_chans", "mean", "std")


@runtime_checkable
class Method(Protocol):
    """Every member `common.train` (and the training hooks it passes the method to) uses."""

    # torch.nn.Module: moved to the device, checkpointed, resumed, put in training mode
    def to(self, *args: Any, **kwargs: Any) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def state_dict(self, *args: Any, **kwargs: Any) -> dict: ...
    def load_state_dict(self, state_dict: dict, strict: bool = True) -> Any: ...

    def training_step(self, batch: Any, step: int) -> dict:
        """``{"loss": Tensor, other scalars to log}`` of one (micro-)batch, under autocast."""

    def param_groups(self) -> list[dict]:
        """The trainable parameters as optimizer groups (``lr_scale``, ``wd_scale`` optional)."""

    def encoder_for_eval(self) -> ViT:
        """The ViT exported as ``encoder.pt`` (``method.export_encoder`` chooses it)."""

    def export_meta(self) -> dict:
        """The meta of ``encoder.pt`` beyond what the loop adds: at least `REQUIRED_META`."""

    # hooks with a no-op default in MethodBase
    def after_step(self, step: int) -> None:
        """After each optimizer step: EMA teachers, centers."""

    def cancel_gradients(self, step: int) -> None:
        """After the gradients are all-reduced, before clipping (DINO's freeze_last_layer)."""

    def monitored_encoders(self) -> dict[str, ViT]:
        """The encoders the health monitor measures, by name."""


class MethodBase(nn.Module):
    """The optional hooks of `Method` as explicit defaults: a method without an EMA teacher or
    frozen layers overrides none of them."""

    def after_step(self, step: int) -> None:
        """Nothing to update after the optimizer step."""

    def cancel_gradients(self, step: int) -> None:
        """Every gradient is applied."""

    def monitored_encoders(self) -> dict[str, ViT]:
        return {"encoder": self.encoder_for_eval()}


def _members() -> tuple[str, ...]:
    return tuple(name for name, value in vars(Method).items() if callable(value) and not name.startswith("_"))


def check_method(method, paper: str):
    """``method`` if it implements `Method` and its ``export_meta()`` holds `REQUIRED_META`;
    else a one-line TypeError naming the paper and what is missing."""
    kind = type(method).__name__
    if not isinstance(method, Method):
        missing = [name for name in _members() if not callable(getattr(method, name, None))]
        raise TypeError(f"the method {kind} of paper {paper} lacks {', '.join(missing)} of common.method.Method; "
                        "subclass common.method.MethodBase and define them (docs/CONTRACTS.md, 'A method')")
    meta = method.export_meta()
    absent = [key for key in REQUIRED_META if key not in meta]
    if absent:
        raise TypeError(f"{kind}.export_meta() of paper {paper} lacks {', '.join(absent)}; "
                        "return {'feature': ..., **common.method.input_meta_of(cfg), ...}")
    return method


def input_meta(stats: str, in_chans: int, img_size: int) -> dict:
    """``{"img_size", "in_chans", "mean", "std"}``: the input an encoder expects, normalised with
    ``common.augment.STATS[stats]`` (1-channel statistics repeated for an RGB encoder)."""
    mean, std = channel_stats(stats, in_chans)
    return {"img_size": int(img_size), "in_chans": int(in_chans), "mean": mean, "std": std}


def input_meta_of(cfg, img_size: int | None = None) -> dict:
    """`input_meta` of a run: ``model.in_chans``, the statistics ``data.stats`` and the size of
    its training images, ``img_size`` or else ``data.img_size`` (``model.img_size`` where the
    data config has none)."""
    data = cfg.data
    stats = data.stats
    if img_size is None:
        img_size = data.img_size if "img_size" in data else cfg.model.img_size
    return input_meta(str(stats), int(cfg.model.in_chans), int(img_size))
