"""Training hooks: measurements the loop takes at chosen steps without knowing what they are.

``train.hooks`` lists factories as ``"module:function"``; ``function(cfg)`` returns a list of
hooks (a paper config names ``eval.monitor:training_hooks``, so the monitor can reuse the
evaluation code while ``common`` never imports ``eval``). A hook has

* ``every``: steps between calls (the loop also calls it at step 0 and at the last step);
* ``__call__(step, method, first) -> dict[str, float]``: the values to log; ``first`` is what
  the hooks returned at step 0 of this run (restored from ``log.jsonl`` on resume), None at 0;
* ``postfix``: optional dict ``{value key: progress-bar label}``.

Hooks run on rank 0 only, under ``torch.no_grad`` and without touching the global RNGs, so a
run's trajectory and its resume are the same with or without them. Their values go to
``log.jsonl`` as ``{"step", "epoch", "kind": "monitor", ...}`` lines, the bar's postfix, and
``done.json`` (``health: {step_0, final}``).
"""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import torch

from common.config import ConfigError

MONITOR = "monitor"  # `kind` of the log.jsonl lines the hooks write


def load_hooks(cfg) -> list:
    """The hooks of ``cfg.train.hooks`` (``"module:function"`` factories called with ``cfg``)."""
    hooks = []
    for name in cfg.train.get("hooks") or []:
        module, _, function = str(name).partition(":")
        if not function:
            raise ConfigError(f"train.hooks entry {name!r} is not 'module:function', e.g. eval.monitor:training_hooks")
        try:
            factory = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"train.hooks entry {name!r} cannot be loaded ({exc}); "
                              "name an importable module and one of its functions") from None
        hooks += list(factory(cfg) or [])
    return hooks


def monitor_records(log_path: Path) -> list[dict]:
    """The hook lines of a ``log.jsonl`` (empty when there is none yet)."""
    if not log_path.exists():
        return []
    lines = (json.loads(line) for line in log_path.read_text().splitlines() if line.strip())
    return [r for r in lines if r.get("kind") == MONITOR]


def _values(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("step", "epoch", "kind")}


class HookRunner:
    """Calls the hooks when they are due and keeps the step-0 and latest values."""

    def __init__(self, hooks: list, logger, enabled: bool):
        self.hooks = hooks if enabled else []
        self.logger = logger
        self.first: dict | None = None
        self.last: dict = {}
        self.postfix: dict[str, str] = {}
        for record in monitor_records(Path(logger.path)) if self.hooks else []:
            if record["step"] == 0:
                self.first = {**(self.first or {}), **_values(record)}
            self.last.update(_values(record))

    def __call__(self, step: int, epoch: int, total_steps: int, method) -> float:
        """Run the hooks due at ``step``; returns the seconds they took (kept out of img/s)."""
        due = [h for h in self.hooks if step == 0 or step == total_steps or step % int(h.every) == 0]
        if not due:
            return 0.0
        start = time.perf_counter()
        values: dict[str, float] = {}
        with torch.no_grad():
            for hook in due:
                values.update(hook(step, method, self.first))
        if step == 0:
            self.first = dict(values)
        self.last.update(values)
        for hook in due:
            for key, label in (getattr(hook, "postfix", None) or {}).items():
                if key in values:
                    self.postfix[label] = f"{values[key]:.3g}"
        self.logger.write({"step": step, "epoch": epoch, "kind": MONITOR, **values})
        return time.perf_counter() - start

    def summary(self) -> dict | None:
        """``{"step_0": ..., "final": ...}`` for ``done.json`` and the eval records."""
        if not self.hooks or self.first is None:
            return None
        return {"step_0": self.first, "final": self.last}
