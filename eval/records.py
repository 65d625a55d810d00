"""Result records with provenance (docs/CONTRACTS.md, "Evaluation records").

One JSON file per (run, protocol): ``<out_dir>/<protocol>.json``, where a run's ``out_dir`` is
``records_dir(cfg)``. A record holds a headline ``metric``/``value`` and every number of the
protocol in ``metrics``.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common.io import atomic_write
from common.provenance import git_commit, hardware, peak_memory_mb

REQUIRED = ("method", "paper", "run", "table", "row", "protocol", "metric", "value", "metrics",
            "checkpoint_sha256", "config_hash", "git_commit", "dataset", "dataset_hash", "hardware",
            "wall_time_s", "peak_memory_mb", "created")


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


# the top directory of the records of the cross-paper protocol set (scripts/cross_eval.py)
CROSS = "cross"


def records_dir(cfg, paper: str | None = None) -> Path:
    """Where the records of a run go: ``<results_root>/<paper>/<scale>/<run>/`` (one
    ``<protocol>.json`` each, an extra evaluation in a subdirectory of its name).

    ``paper`` files them under another top directory: ``CROSS`` for the cross-paper protocols.
    The one place this layout is written, beside ``common.train.run_dir_of`` for the run
    directory; the scale keeps smoke and mini records of one run name apart.
    """
    return Path(str(cfg.results_root), paper or str(cfg.paper), str(cfg.scale_name), str(cfg.run_name))


def make_record(*, protocol: str, metric: str, metrics: dict, identity: dict, dataset: str,
                dataset_hash: str, wall_time_s: float, extra: dict | None = None) -> dict:
    """``identity``: method, paper, run, table, row, checkpoint_sha256, config_hash (+ any)."""
    if metric not in metrics:
        raise KeyError(f"headline metric {metric!r} is not among the metrics {sorted(metrics)[:8]}...")
    record = {k: identity.get(k) for k in ("method", "paper", "run", "table", "row")}
    record.update(
        protocol=protocol, metric=metric, value=float(metrics[metric]),
        metrics={k: float(v) for k, v in metrics.items()},
        checkpoint_sha256=identity.get("checkpoint_sha256"), config_hash=identity.get("config_hash"),
        git_commit=git_commit(), dataset=dataset, dataset_hash=dataset_hash, hardware=hardware(),
        wall_time_s=round(float(wall_time_s), 3), peak_memory_mb=round(peak_memory_mb(), 1),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    paper_values = identity.get("paper_values") or {}
    record["paper_value"] = paper_values.get(protocol)
    for k, v in identity.items():
        if k != "paper_values":
            record.setdefault(k, v)
    record.update(extra or {})
    return record


def extra_records_dir(cfg, name: str) -> Path:
    """Where the extra evaluation ``name`` of ``cfg.extra_evals`` files its records (UDI+'s
    ``cls_plus``): beside the run's own."""
    return records_dir(cfg) / name


def write_record(record: dict, out_dir: str | os.PathLike) -> Path:
    """Atomically write ``<out_dir>/<protocol>.json`` (a crash never leaves half a file)."""
    path = Path(out_dir) / f"{record['protocol']}.json"
    return atomic_write(path, json.dumps(record, indent=1, sort_keys=False) + "\n")


def load_records(paths) -> list[dict]:
    """Records from JSON files and/or directories (searched recursively)."""
    records = []
    for p in map(Path, paths):
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            data = json.loads(f.read_text())
            for rec in data if isinstance(data, list) else [data]:
                if isinstance(rec, dict) and "protocol" in rec and "metrics" in rec:
                    rec.setdefault("_path", str(f))
                    records.append(rec)
    return records


def same_recipe(seed0: dict, other: dict) -> bool:
    """Whether ``other`` (a record of a ``<run>-seed<i>`` run) measures the recipe ``seed0``'s run
    was trained with: equal ``recipe_hash`` (the config hash without ``train.seed``). A seed left
    from an earlier recipe of the run (its config changed after the seed was trained)
    is not averaged in; one line on stderr names it and the command that redoes it."""
    if seed0.get("recipe_hash") == other.get("recipe_hash"):
        return True
    _warn_once(f"warning: {other.get('_path', other.get('run'))} is left out of the mean over seeds: its "
               f"pretraining recipe {other.get('recipe_hash')} is not the one of {seed0.get('run')} "
               f"({seed0.get('recipe_hash')}); redo it with python scripts/seeds.py --run {other.get('run')} "
               "(or dvc repro), or delete it")
    return False


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr)
