"""Resolution of the `eval:` config block (docs/CONTRACTS.md, "eval config keys").

Later wins: ``configs/eval.yaml`` -> ``configs/linear/<linear.protocol>.yaml`` ->
``configs/finetune/<finetune.recipe>.yaml`` -> ``configs/scale/<scale>.yaml`` -> the caller.
The caller's block is validated against the defaults so that a typo fails with the valid keys.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from common.config import check_override_type
from common.validate import RENAMED_KEYS, register_protocols, renamed_message

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROTOCOLS = ("knn", "linear", "attentive", "lowshot", "finetune", "analysis", "segment")
register_protocols(PROTOCOLS)  # the run configs of every paper are checked against these
# what `protocol=all` runs: the protocols on `eval.data`; `segment` reads its own dataset (seg.data)
IMAGE_PROTOCOLS = PROTOCOLS[:-1]


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _flat_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.append(prefix + str(k))
        if isinstance(v, (dict, DictConfig)):
            keys += _flat_keys(v, f"{prefix}{k}.")
    return keys


def _check_keys(user: DictConfig, defaults: DictConfig) -> None:
    valid = set(_flat_keys(defaults))
    unknown = [k for k in _flat_keys(user) if k not in valid]
    renamed = [k for k in unknown if f"eval.{k}" in RENAMED_KEYS]
    if renamed:
        raise KeyError(renamed_message(f"eval.{renamed[0]}"))
    if unknown:
        key = max(unknown, key=len)  # the full dotted key the user typed
        close = difflib.get_close_matches(key, sorted(valid), n=5, cutoff=0.5)
        hint = f"closest valid keys: {', '.join(close)}" if close else \
            f"valid top-level keys: {', '.join(sorted(k for k in valid if '.' not in k))}"
        raise KeyError(f"unknown eval config key {key!r} ({hint}); defaults are in {CONFIG_DIR / 'eval.yaml'}")


def _group_file(group: str, name: str) -> Path:
    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown {group} {name!r}; valid: {', '.join(_choices(group))}")
    return path


def resolve(user: DictConfig | dict | None = None) -> DictConfig:
    """The full eval config: defaults, recipes and scale, then ``user`` on top."""
    defaults = OmegaConf.load(CONFIG_DIR / "eval.yaml")
    if user is None:
        user = {}
    elif isinstance(user, DictConfig):  # a node of a paper config: resolve against its root (${data.root})
        user = OmegaConf.to_container(user, resolve=True)
    user = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(user), resolve=True))
    _check_keys(user, defaults)
    probe = OmegaConf.merge(defaults, user)
    layers = [
        defaults,
        OmegaConf.create({"linear": OmegaConf.load(_group_file("linear", probe.linear.protocol))}),
        OmegaConf.create({"finetune": OmegaConf.load(_group_file("finetune", probe.finetune.recipe))}),
        OmegaConf.load(_group_file("scale", probe.scale)),
        user,
    ]
    _check_types(user, OmegaConf.merge(*layers[:-1]))
    cfg = OmegaConf.merge(*layers)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _check_types(user: DictConfig, defaults: DictConfig) -> None:
    for key in _flat_keys(user):
        value = OmegaConf.select(user, key)
        if not isinstance(value, DictConfig):
            check_override_type(key, OmegaConf.select(defaults, key), value, str(value))


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    return protocol


def section_hash(cfg: DictConfig, *sections: str) -> str:
    """Hash of the keys that determine one protocol's result (not cache dir, progress...)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    shared = {k: plain[k] for k in ("data", "train_subset", "val_subset", "token", "layers", "val_resize", "seed")}
    if plain.get("max_steps") is not None:  # null (a full run) stays out: older records keep their hash
        shared["max_steps"] = plain["max_steps"]
    blob = json.dumps([shared, *[plain[s] for s in sections]], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
