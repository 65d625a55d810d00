"""Hydra compose over a paper's `configs/`, strict keys with readable errors, config hash.

The command line is `key=value` overrides, as with Hydra. Errors name what is allowed: an
unknown key lists the closest valid keys, a value of the wrong type names the expected
type, a missing required value names the key to pass.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import itertools
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import UserError
from common.io import atomic_write

COMMON_CONFIGS = Path(__file__).resolve().parent / "configs"

# Keys that say where or how fast a run goes, not what it computes: left out of the hash,
# so moving a run to another cluster or log cadence keeps its run directory and checkpoints.
NON_IDENTITY_KEYS = ("cluster", "runs", "experiment_name", "run_name", "results_root", "train.out_root",
                     "train.log_every", "train.ckpt_every_steps", "train.keep_checkpoints",
                     "train.progress", "train.threads", "train.dist_timeout_s", "data.num_workers",
                     "data.root", "eval", "extra_evals", "cost", "optim.allow_full_warmup",
                     # the monitors only measure: a run trains the same weights with them on or off
                     "train.health", "train.knn_monitor",
                     # what to do with a run directory of another config, not what the run computes
                     "train.on_config_change",
                     # fused or explicit attention compute the same function (to rounding)
                     "train.fused_attn")
# Keys hashed under the name they had when runs were first made (new -> old), so that a rename
# keeps the hash of every run directory and the bytes of its encoder.pt. Null (the default)
# stays out of the hash, as it did under the old name.
HASHED_UNDER_OLD_NAME = {"method.export_encoder": "eval.encoder"}
# Keys added after runs existed: left out of the hash while null (their default), so the
# run directories made before them keep their hash.
NULL_DEFAULT_KEYS = ("data.per_process_batch", "train.max_steps")
# train.on_config_change: a run directory of another config is refused (an interactive relaunch
# with a typo must not bury the run), or archived (pipelines, where a changed recipe is meant)
ON_CONFIG_CHANGE = ("refuse", "archive")


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


def group_names(paper: str) -> set[str]:
    """The config groups (`method`, `model`, `scale`, ..., `cluster`) of a paper."""
    names = set()
    for d in (paper_config_dir(paper), COMMON_CONFIGS):
        names |= {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_dir()}
    return names


def split_override(override: str) -> tuple[str, str]:
    """`key=value` -> (key without a leading + or ~, value)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value (example: train.epochs=10)")
    key, value = override.split("=", 1)
    return key.lstrip("+~"), value


def _hydra_message(exc: Exception) -> str:
    """Hydra's error in one line: a list after `...:` (e.g. the options of a group) is joined."""
    text = str(exc).split("\nConfig search path")[0]
    out, listing = [], None
    for line in (line.strip() for line in text.splitlines()):
        if not line:
            continue
        if listing is not None:
            listing.append(line)
        elif line.endswith(":") and out:
            out.append(line[:-1].replace("Available options", "valid options"))
            listing = []
        else:
            out.append(line)
    head = "; ".join(out)
    return f"{head}: {', '.join(listing)}" if listing else head


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


def _article(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _compatible(default, new, key: str = "") -> bool:
    from common.validate import ACCEPTED_TYPES

    if default is None or new is None:
        return True
    expected, got = _type_name(default), _type_name(new)
    if expected == got or got in ACCEPTED_TYPES.get(key, ()):
        return True
    # An int where a float is expected is fine (lr=1); the reverse truncates, so it is not.
    return expected == "float" and got == "int"


def check_override_type(key: str, default, new, raw: str) -> None:
    """Refuse an override whose type differs from the default's (unless the key accepts both)."""
    if not _compatible(default, new, key):
        raise ConfigError(f"{key} expects {_article(_type_name(default))} (default {_short(default)}), "
                          f"got {raw!r} ({_type_name(new)})")


def _compose_raw(config_dir: Path, overrides: list[str]) -> DictConfig:
    search = f"hydra.searchpath=[file://{COMMON_CONFIGS}]"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("config", overrides=[search, *overrides])


def load_config(paper: str, overrides: list[str] | tuple[str, ...] = (), validate: bool = True) -> DictConfig:
    """Compose `<paper>/configs/config.yaml` with `overrides`; raise ConfigError on bad input.

    `validate` also range-checks the values (common.validate); the run table of an
    experiment composes its base config without, as only the runs themselves must be valid.
    """
    from common.validate import refuse_renamed_keys, refuse_renamed_overrides  # it imports ConfigError from here

    config_dir = paper_config_dir(paper)
    overrides = list(overrides)
    refuse_renamed_overrides(overrides)
    groups = group_names(paper)
    group_ovr, value_ovr = [], []
    for o in overrides:
        (group_ovr if split_override(o)[0] in groups else value_ovr).append(o)

    try:
        base = _compose_raw(config_dir, group_ovr)
    except HydraException as exc:
        raise ConfigError(_hydra_message(exc)) from None

    valid = _flat_keys(base)
    for o in value_ovr:
        key, _ = split_override(o)
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
        raise ConfigError(_hydra_message(exc)) from None

    for o in value_ovr:
        key, raw = split_override(o)
        if o.startswith(("+", "~")):
            continue
        check_override_type(key, OmegaConf.select(base, key, throw_on_missing=False),
                            OmegaConf.select(cfg, key, throw_on_missing=False), raw)

    refuse_renamed_keys(cfg, str(config_dir))
    if not OmegaConf.is_missing(cfg, "paper") and cfg.paper != paper:  # a copied paper (docs/ADDING_A_PAPER.md)
        raise ConfigError(f"paper={cfg.paper!r} in {config_dir}/config.yaml is not its directory's name; "
                          f"set paper: {paper}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError("missing required value(s): " + ", ".join(missing) +
                          "; pass them on the command line, e.g. " + " ".join(f"{k}=..." for k in missing))
    OmegaConf.set_struct(cfg, True)
    if validate:
        from common.validate import validate_config
        validate_config(cfg)
    return cfg


def _drop(container: dict, dotted: str):
    """Remove a dotted key from a plain config; returns its value (None if absent)."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        container = container.get(p)
        if not isinstance(container, dict):
            return None
    return container.pop(leaf, None)


def identity(cfg: DictConfig) -> dict:
    """The part of the config that determines what a run computes."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    renamed = {}
    for new, old in HASHED_UNDER_OLD_NAME.items():
        value = _drop(plain, new)
        if value is None:  # a run config saved before the rename holds the old name
            value = _drop(plain, old)
        if value is not None:
            renamed[old] = value
    for key in NON_IDENTITY_KEYS:
        _drop(plain, key)
    for key in NULL_DEFAULT_KEYS:
        if OmegaConf.select(cfg, key, default=None) is None:
            _drop(plain, key)
    for dotted, value in renamed.items():
        *parents, leaf = dotted.split(".")
        node = plain
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return plain


def _digest(plain: dict) -> str:
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig) -> str:
    return _digest(identity(cfg))


def recipe_hash(cfg: DictConfig) -> str:
    """``config_hash`` without ``train.seed``: equal for the pretraining seeds of one recipe
    (scripts/seeds.py), so a table averages only seeds of the recipe its run was trained with."""
    plain = identity(cfg)
    _drop(plain, "train.seed")
    return _digest(plain)


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


def _has_training_state(run_dir: Path) -> bool:
    """Whether a run directory holds anything a new config could lose: checkpoints or an encoder."""
    return any((run_dir / "checkpoints").glob("*.pt")) or (run_dir / "encoder.pt").exists() \
        or (run_dir / "done.json").exists()


def save_run_config(cfg: DictConfig, run_dir: Path) -> str:
    """Write config.yaml + config_hash; refuse a run directory made by an incompatible config,
    or with ``train.on_config_change=archive`` move it aside whole and start a fresh one.

    A directory whose start failed before its first checkpoint holds nothing to lose: it
    takes the new config (said in one line), so a corrected relaunch is not wedged.
    """
    on_change = _on_config_change(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = config_hash(cfg)
    existing = run_dir / "config.yaml"
    if existing.exists():
        old = OmegaConf.load(existing)
        old_digest = config_hash(old)
        if old_digest != digest:
            diff = [line.strip() for line in config_diff(identity(old), identity(cfg))]
            shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
            if _has_training_state(run_dir):
                if on_change == "refuse":
                    raise ConfigError(
                        f"{run_dir} holds a run of another configuration (hash {old_digest} != {digest}: "
                        f"{shown}); refusing to resume it: choose another run_name, restore the old values, "
                        "or pass train.on_config_change=archive to move it aside and start afresh")
                kept = archive_run_dir(run_dir, old_digest)
                print(f"note: {run_dir} held a run of another configuration ({shown}); moved it to {kept}",
                      file=sys.stderr, flush=True)
                run_dir.mkdir(parents=True)
                existing = run_dir / "config.yaml"
            else:
                _replace_failed_start(run_dir, old_digest, shown)
    atomic_write(existing, OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write(run_dir / "config_hash", digest + "\n")
    return digest


def _on_config_change(cfg: DictConfig) -> str:
    choice = OmegaConf.select(cfg, "train.on_config_change", default="refuse")
    if choice not in ON_CONFIG_CHANGE:
        raise ConfigError(f"train.on_config_change={choice!r} is not one of {', '.join(ON_CONFIG_CHANGE)}")
    return choice


def archive_run_dir(run_dir: Path, old_digest: str) -> Path:
    """Move a run directory aside, whole, to ``<run>.config-<its hash>`` beside it (``.2``, ``.3``
    if that name is taken), so that nothing it holds is lost or overwritten."""
    target = run_dir.with_name(f"{run_dir.name}.config-{old_digest}")
    for n in itertools.count(2):
        if not target.exists():
            break
        target = run_dir.with_name(f"{run_dir.name}.config-{old_digest}.{n}")
    run_dir.rename(target)
    return target


def _replace_failed_start(run_dir: Path, old_digest: str, shown: str) -> None:
    """A directory whose start failed before its first checkpoint takes the new config."""
    print(f"note: {run_dir} has no checkpoint yet; replacing its config ({shown})", file=sys.stderr, flush=True)
    log = run_dir / "log.jsonl"
    if log.exists():  # the failed start's lines are kept, apart from the new run's log
        log.replace(run_dir / f"log.{old_digest}.jsonl")


def run_location(paper: str, scale: str, run: str, out_root: str | Path = "runs",
                 results_root: str | Path = "results") -> DictConfig:
    """The keys of a run's config that place it on disk, for code that knows a run only by
    name (the runs of dvc_runs.yaml, a record's directory): what ``common.train.run_dir_of``
    and ``eval.records.records_dir`` read, without composing the run's whole config."""
    return OmegaConf.create({"paper": paper, "scale_name": scale, "run_name": run,
                             "results_root": str(results_root), "train": {"out_root": str(out_root)}})


def encoder_arch(cfg: DictConfig) -> dict:
    """The encoder architecture a run builds: ``cfg.model``, with the init scheme that an
    optional ``method.init`` names (``timm`` = timm's default) as its ``weight_init``. The init
    is part of the architecture, so a random-init floor built from it starts as the run did."""
    arch = OmegaConf.to_container(cfg.model, resolve=True)
    init = cfg.method.get("init") if cfg.get("method") is not None else None
    if init is not None:
        arch["weight_init"] = "" if init == "timm" else str(init)
    return arch
