"""Range checks of a composed config, at config time so that `--dry-run` catches them too.

Renamed keys are refused first (`RENAMED_KEYS`), then one table of rules for the keys every
paper shares (a key a paper does not have is skipped), a few checks across keys, the
`method.export_encoder` the paper's model module allows (`EXPORT_ENCODERS`), then the paper's
own `validate_config(cfg)` if its model module defines one. Every failure is one
`ConfigError` line: the key, the bad value, what is allowed and a valid example.
"""
from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.config import ConfigError


# Keys whose documented values have more than one type; the type check of an override
# (common.config) accepts any of these instead of only the type of the default.
ACCEPTED_TYPES = {
    "data.train_subset": {"int", "float"},       # a count of images or a fraction of the set
    "method.layer_weights": {"str", "list"},     # `equal` or one weight per target layer
    "method.target_layers": {"str", "int", "list"},
}


_ABSENT = object()

# One name per concept across the papers: old key -> new key. An old key under which a group
# of keys moved (`crop`) renames every key under it (`crop.n_local` -> `data.aug.n_local`).
# A config or an override that still uses an old name is refused with the new one.
RENAMED_KEYS = {
    "eval.encoder": "method.export_encoder",           # one key for every paper, checked at build time
    "data.norm_stats": "data.stats",                   # Bootleg, Hybrid Distill (SDSSL, UDI: data.stats)
    "data.crop_scale": "data.aug.crop_scale",          # augmentation keys live under data.aug (SDSSL's place)
    "data.interpolation": "data.aug.interpolation",
    "data.hflip": "data.aug.flip_p",                   # a probability like UDI's: true -> 0.5, false -> 0.0
    "crop": "data.aug",                                # UDI's multi-crop keys
}


def renamed_key(key: str) -> str | None:
    """The new name of `key` if it is (or lies under) an old name of RENAMED_KEYS, else None."""
    for old, new in RENAMED_KEYS.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return None


def refuse_renamed_overrides(overrides) -> None:
    """An override `old=value` fails with the key's new name (before "unknown key" would)."""
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        new = renamed_key(key)
        if new is not None:
            raise ConfigError(renamed_message(key))


def refuse_renamed_keys(cfg: DictConfig, where: str) -> None:
    """A composed config (a paper's or an experiment's YAML) that still sets an old key fails
    with the new name; `where` names the config directory to edit."""
    for old, new in RENAMED_KEYS.items():
        if OmegaConf.select(cfg, old, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
            raise ConfigError(f"{where} sets {old}, which was renamed {new}: rename the key in its YAML "
                              "(docs/ERRORS.md)")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= low


def number_in(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False):
    def check(v) -> bool:
        return (_is_number(v) and (v > low if low_open else v >= low)
                and (v < high if high_open else v <= high))
    return check


def one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def pair_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) == 2 and all(check(x) for x in v)


def _subset_ok(v) -> bool:
    return _is_int(v) and v >= 1 or isinstance(v, float) and 0 < v <= 1


def _dataset(v) -> bool:
    from common.data import dataset_known  # torch and torchvision: imported only when checked

    return dataset_known(v)


_DATASETS = "fashion_mnist, mnist5k, digits, imagefolder:<path>, cifar10:<path> or cifar100:<path>"
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]*")


@dataclass(frozen=True)
class Rule:
    key: str
    ok: Callable[[Any], bool]
    allowed: str     # what the key accepts, in words
    example: str     # a valid value to suggest


RULES = (
    Rule("run_name", optional(lambda v: isinstance(v, str) and bool(_RUN_NAME.fullmatch(v))),
         "a plain name (letters, digits, . _ + = @ -; no '/' or '..': it names a directory under train.out_root)",
         "my-run"),
    Rule("train.epochs", int_at_least(1), "an int >= 1 (0 would export an untrained encoder)", "10"),
    Rule("train.threads", optional(int_at_least(1)), "null (torch's default) or an int >= 1", "1"),
    Rule("train.log_every", int_at_least(1), "an int >= 1", "10"),
    Rule("train.ckpt_every_steps", int_at_least(0), "an int >= 0 (0: only at epoch ends)", "200"),
    Rule("train.keep_checkpoints", int_at_least(1), "an int >= 1", "2"),
    Rule("train.device", lambda v: isinstance(v, str) and bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)),
         "auto, cpu, cuda or cuda:N", "auto"),
    Rule("train.precision", one_of("fp32", "bf16", "fp16"), "fp32, bf16 or fp16", "fp32"),
    Rule("data.name", _dataset, _DATASETS, "fashion_mnist"),
    Rule("eval.data", _dataset, _DATASETS, "fashion_mnist"),
    Rule("data.batch_size", int_at_least(1), "an int >= 1 (the global batch)", "64"),
    Rule("data.num_workers", int_at_least(0), "an int >= 0", "2"),
    Rule("data.train_subset", optional(_subset_ok),
         "null (all), a count >= 1 (int) or a fraction in (0, 1] (float)", "0.1"),
    Rule("optim.lr", number_in(0, low_open=True), "a finite number > 0", "1.5e-4"),
    Rule("optim.min_lr", number_in(0), "a finite number >= 0", "1e-6"),
    Rule("optim.warmup_epochs", number_in(0), "a finite number of epochs >= 0", "1"),
    Rule("optim.weight_decay", number_in(0), "a finite number >= 0", "0.05"),
    Rule("optim.weight_decay_end", number_in(0), "a finite number >= 0", "0.05"),
    Rule("optim.ref_batch", int_at_least(1), "an int >= 1", "256"),
    Rule("optim.accum_steps", int_at_least(1), "an int >= 1", "1"),
    Rule("optim.clip_grad", number_in(0), "a finite number >= 0 (0 disables)", "3.0"),
    Rule("optim.clip_mode", one_of("global", "per_param"), "global or per_param", "global"),
    Rule("optim.schedule", one_of("cosine", "ijepa"), "cosine or ijepa", "cosine"),
    Rule("optim.lr_scaling", one_of("linear", "sqrt", "none"), "linear, sqrt or none", "linear"),
    Rule("optim.betas", pair_of(number_in(0, 1, high_open=True)), "two numbers in [0, 1)", "[0.9,0.95]"),
    Rule("optim.momentum", number_in(0, 1), "a number in [0, 1]", "0.9"),
    Rule("method.ema", pair_of(number_in(0, 1)), "[start, end] momenta in [0, 1]", "[0.996,1.0]"),
    Rule("method.momentum_base", number_in(0, 1), "a momentum in [0, 1]", "0.996"),
    Rule("method.momentum_teacher", number_in(0, 1), "a momentum in [0, 1]", "0.996"),
    Rule("method.center_momentum", number_in(0, 1), "a momentum in [0, 1]", "0.9"),
)


def renamed_message(key: str) -> str:
    """The one-line refusal of an old key (or a key under an old name) of RENAMED_KEYS."""
    new = renamed_key(key)
    return f"{key} was renamed {new}: set {new} instead (docs/ERRORS.md)"


def _value(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _show(value) -> str:
    return str(value).replace(" ", "") if isinstance(value, list) else repr(value)


def _check_rules(cfg: DictConfig) -> None:
    for rule in RULES:
        value = _value(cfg, rule.key)
        if value is not _ABSENT and not rule.ok(value):
            raise ConfigError(f"{rule.key}={_show(value)} is invalid: expected {rule.allowed}; "
                              f"e.g. {rule.key}={rule.example}")


def _check_across_keys(cfg: DictConfig) -> None:
    epochs, warmup = _value(cfg, "train.epochs"), _value(cfg, "optim.warmup_epochs")
    if warmup is not _ABSENT and epochs is not _ABSENT and warmup >= epochs \
            and not _value(cfg, "optim.allow_full_warmup") is True:
        raise ConfigError(f"optim.warmup_epochs={warmup} is not below train.epochs={epochs}: the lr "
                          "would never leave its warmup; lower optim.warmup_epochs, or pass "
                          "optim.allow_full_warmup=true if that is intended")
    batch, accum = _value(cfg, "data.batch_size"), _value(cfg, "optim.accum_steps")
    if accum is not _ABSENT and batch % accum:
        raise ConfigError(f"data.batch_size={batch} is not divisible by optim.accum_steps={accum}; "
                          f"e.g. optim.accum_steps=1")
    subset = _value(cfg, "data.train_subset")
    if _is_int(subset) and subset < batch:
        raise ConfigError(f"data.train_subset={subset} images is fewer than one batch "
                          f"(data.batch_size={batch}): an epoch would have no step; "
                          f"lower data.batch_size or raise data.train_subset")
    _check_protocols(cfg)


# The evaluation protocols a run may name. `eval` registers its own when imported (common never
# imports eval); before that the names go unchecked, the shape of `extra_evals` still is.
_protocols: tuple[str, ...] = ()


def register_protocols(names: tuple[str, ...]) -> None:
    """Make `eval.protocols` and `extra_evals.<name>.protocols` accept exactly `names`."""
    global _protocols
    _protocols = tuple(names)


def _check_protocols(cfg: DictConfig) -> None:
    def check(key: str, protocols) -> None:
        unknown = [p for p in protocols if _protocols and p not in _protocols]
        if unknown:
            raise ConfigError(f"{key} names unknown protocol(s) {unknown}; valid: {', '.join(_protocols)}")

    protocols = _value(cfg, "eval.protocols")
    if isinstance(protocols, list):
        check("eval.protocols", protocols)
    extras = _value(cfg, "extra_evals")
    if extras in (_ABSENT, None):
        return
    if not isinstance(extras, dict):
        raise ConfigError(f"extra_evals={_show(extras)} must map a name to eval keys with protocols; "
                          "e.g. extra_evals={extra:{protocols:[knn]}}")
    for name, extra in extras.items():
        protocols = extra.get("protocols") if isinstance(extra, dict) else None
        if not protocols or not isinstance(protocols, list):
            raise ConfigError(f"extra_evals.{name} has no protocols list (got {_show(protocols)}); "
                              f"e.g. extra_evals.{name}.protocols=[knn]")
        check(f"extra_evals.{name}.protocols", protocols)


def _check_paper(cfg: DictConfig) -> None:
    paper = _value(cfg, "paper")
    if not isinstance(paper, str):
        return
    try:
        model = importlib.import_module(f"{paper}.model")
    except ModuleNotFoundError as exc:
        if exc.name == f"{paper}.model":
            return
        raise
    _check_export_encoder(cfg, paper, model)
    hook = getattr(model, "validate_config", None)
    if hook is None:
        return
    try:
        hook(cfg)
    except ValueError as exc:  # the paper's own checks raise ValueError naming the key
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None


def _check_export_encoder(cfg: DictConfig, paper: str, model) -> None:
    """`method.export_encoder` names one of the encoders the paper's model module lists in
    `EXPORT_ENCODERS` (null: the method's default)."""
    choices = getattr(model, "EXPORT_ENCODERS", None)
    if choices is None:
        raise ConfigError(f"{paper}.model has no EXPORT_ENCODERS: list the encoders method.export_encoder "
                          "may name, e.g. EXPORT_ENCODERS = ('teacher', 'student') (docs/CONTRACTS.md)")
    value = _value(cfg, "method.export_encoder")
    if value not in (_ABSENT, None) and value not in choices:
        raise ConfigError(f"method.export_encoder={_show(value)} is not an encoder {paper} exports; "
                          f"choose one of {', '.join(choices)} (null: the method's default)")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) on the first out-of-range value of `cfg`."""
    _check_rules(cfg)
    _check_across_keys(cfg)
    _check_paper(cfg)
