"""Hydra compose over a paper's `configs/`, strict keys with readable errors, config hash.

The command line is `key=value` overrides, as with Hydra. Errors name what is allowed: an
unknown key lists the closest valid keys, a value of the wrong type names the expected
type, a missing required value names the key to pass.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import UserError

COMMON_CONFIGS = Path(__file__).resolve().parent / "configs"

# Keys that say where or how fast a run goes, not what it computes: left out of the hash,
# so moving a run to another cluster or log cadence keeps its run directory and checkpoints.
NON_IDENTITY_KEYS = ("cluster", "runs", "experiment_name", "run_name", "results_root", "train.out_root",
                     "train.log_every", "train.ckpt_every_steps", "train.keep_checkpoints",
                     "train.progress", "train.threads", "train.dist_timeout_s", "data.num_workers",
                     "data.root", "eval", "extra_evals", "cost")
# ... except the evaluation keys that decide which encoder a run exports.
IDENTITY_EVAL_KEYS = ("encoder",)


class ConfigError(UserError, ValueError):
    """A configuration problem the user can fix from the command line."""


def paper_config_dir(paper: str) -> Path:
    module = importlib.import_module(paper)
    path = Path(module.__file__).resolve().parent / "configs"
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{paper} has no configs/config.yaml (looked in {path})")
    return path


def _flat_keys(cfg, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            full = f"{prefix}{k}"
            keys.append(full)
            node = cfg._get_node(k)
            if isinstance(node, DictConfig):
                keys += _flat_keys(node, full + ".")
    return keys


def _group_names(config_dirs: list[Path]) -> set[str]:
    names = set()
    for d in config_dirs:
        names |= {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_dir()}
    return names


def _split(override: str) -> tuple[str, str]:
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value (example: train.epochs=10)")
    key, value = override.split("=", 1)
    return key.lstrip("+~"), value


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, ListConfig)):
        return "list"
    if isinstance(value, (dict, DictConfig)):
        return "mapping"
    return type(value).__name__


def _compatible(default, new) -> bool:
    if default is None or new is None:
        return True
    expected, got = _type_name(default), _type_name(new)
    if expected == got:
        return True
    # An int where a float is expected is fine (lr=1); the reverse truncates, so it is not.
    return expected == "float" and got == "int"


def _compose_raw(config_dir: Path, overrides: list[str]) -> DictConfig:
    search = f"hydra.searchpath=[file://{COMMON_CONFIGS}]"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("config", overrides=[search, *overrides])


def load_config(paper: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose `<paper>/configs/config.yaml` with `overrides`; raise ConfigError on bad input."""
    config_dir = paper_config_dir(paper)
    overrides = list(overrides)
    groups = _group_names([config_dir, COMMON_CONFIGS])
    group_ovr, value_ovr = [], []
    for o in overrides:
        (group_ovr if _split(o)[0] in groups else value_ovr).append(o)

    try:
        base = _compose_raw(config_dir, group_ovr)
    except HydraException as exc:
        raise ConfigError(str(exc).split("\nConfig search path")[0]) from None

    valid = _flat_keys(base)
    for o in value_ovr:
        key, _ = _split(o)
        if o.startswith("+"):
            continue
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=5, cutoff=0.5)
            hint = f"closest valid keys: {', '.join(close)}" if close else \
                f"valid top-level keys: {', '.join(k for k in valid if '.' not in k)}"
            raise ConfigError(f"unknown config key {key!r} ({hint}). "
                              f"Use +{key}=... only to add a key on purpose.")

    try:
        cfg = _compose_raw(config_dir, overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).split("\nConfig search path")[0]) from None

    for o in value_ovr:
        key, raw = _split(o)
        if o.startswith(("+", "~")):
            continue
        default = OmegaConf.select(base, key, throw_on_missing=False)
        new = OmegaConf.select(cfg, key, throw_on_missing=False)
        if not _compatible(default, new):
            raise ConfigError(f"{key} expects a {_type_name(default)} (default {default!r}), "
                              f"got {raw!r} ({_type_name(new)})")

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError("missing required value(s): " + ", ".join(missing) +
                          "; pass them on the command line, e.g. " + " ".join(f"{k}=..." for k in missing))
    OmegaConf.set_struct(cfg, True)
    return cfg


def _drop(container: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        container = container.get(p)
        if not isinstance(container, dict):
            return
    container.pop(leaf, None)


def identity(cfg: DictConfig) -> dict:
    """The part of the config that determines what a run computes."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    kept_eval = {k: plain["eval"][k] for k in IDENTITY_EVAL_KEYS if plain.get("eval", {}).get(k) is not None}
    for key in NON_IDENTITY_KEYS:
        _drop(plain, key)
    if kept_eval:
        plain["eval"] = kept_eval
    return plain


def config_hash(cfg: DictConfig) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """Readable lines `key: old -> new` between two plain configs."""
    fo, fn = _flatten(old), _flatten(new)
    lines = []
    for k in sorted(set(fo) | set(fn)):
        a, b = fo.get(k, "<absent>"), fn.get(k, "<absent>")
        if a != b:
            lines.append(f"  {k}: {a!r} -> {b!r}")
    return lines


def save_run_config(cfg: DictConfig, run_dir: Path) -> str:
    """Write config.yaml + config_hash; refuse a run directory made by an incompatible config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = config_hash(cfg)
    existing = run_dir / "config.yaml"
    if existing.exists():
        old = OmegaConf.load(existing)
        old_digest = config_hash(old)
        if old_digest != digest:
            diff = config_diff(identity(old), identity(cfg))
            raise ConfigError(
                f"{run_dir} holds a run of another configuration (hash {old_digest} != {digest}); "
                "refusing to resume it. Differences:\n" + "\n".join(diff) +
                "\nChoose another run_name, or restore the old values.")
    tmp = existing.with_suffix(".yaml.tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tmp.replace(existing)
    (run_dir / "config_hash").write_text(digest + "\n")
    return digest


def encoder_arch(cfg: DictConfig) -> dict:
    """The encoder architecture a run builds: ``cfg.model``, with the init scheme that an
    optional ``method.init`` names (``timm`` = timm's default) as its ``weight_init``. The init
    is part of the architecture, so a random-init floor built from it starts as the run did."""
    arch = OmegaConf.to_container(cfg.model, resolve=True)
    init = cfg.method.get("init") if cfg.get("method") is not None else None
    if init is not None:
        arch["weight_init"] = "" if init == "timm" else str(init)
    return arch
