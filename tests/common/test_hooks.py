"""Training hooks: when they run, what the loop keeps of them, how a bad name fails."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from common.config import ConfigError
from common.hooks import HookRunner, load_hooks
from common.train import JsonlLogger


class Counting:
    every = 3
    postfix = {"n": "calls"}

    def __init__(self):
        self.calls = []

    def __call__(self, step, method, first):
        self.calls.append((step, first))
        return {"n": float(len(self.calls))}


def test_runner_calls_at_zero_every_n_and_the_last_step_and_keeps_first_and_final(tmp_path):
    logger = JsonlLogger(tmp_path / "log.jsonl", True)
    hook = Counting()
    runner = HookRunner([hook], logger, enabled=True)
    for step in range(0, 8):
        runner(step, 0, 7, method=None)
    assert [s for s, _ in hook.calls] == [0, 3, 6, 7]
    assert hook.calls[0][1] is None and hook.calls[1][1] == {"n": 1.0}  # step-0 values as reference
    assert runner.summary() == {"step_0": {"n": 1.0}, "final": {"n": 4.0}}
    assert runner.postfix == {"calls": "4"}
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["kind"]) for r in lines] == [(0, "monitor"), (3, "monitor"), (6, "monitor"), (7, "monitor")]
    # a resumed run gets its step-0 reference back from log.jsonl
    resumed = HookRunner([Counting()], logger, enabled=True)
    assert resumed.first == {"n": 1.0}


def test_runner_off_on_other_ranks(tmp_path):
    hook = Counting()
    runner = HookRunner([hook], JsonlLogger(tmp_path / "log.jsonl", False), enabled=False)
    runner(0, 0, 5, method=None)
    assert hook.calls == [] and runner.summary() is None


@pytest.mark.parametrize("name, message", [("eval.monitor", "is not 'module:function'"),
                                           ("no_such_module:f", "cannot be loaded"),
                                           ("common.hooks:no_such_function", "cannot be loaded")])
def test_bad_hook_names_fail_naming_the_entry(name, message):
    cfg = OmegaConf.create({"train": {"hooks": [name]}})
    with pytest.raises(ConfigError, match=message):
        load_hooks(cfg)
