"""dvc.yaml: a training stage depends on the eval code its run executes.

The training loop calls the monitor the paper configs name in ``train.hooks``
(``eval.monitor:training_hooks``), which writes the health and online k-NN into ``log.jsonl`` and
``done.json``, an output of the stage. A change in those modules must make DVC train again; a
change in the rest of eval/ (probes, tables) must not.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
TRAINING_STAGES = ("pretrain", "pretrain_seed")


def eval_modules_the_monitor_imports() -> set[str]:
    """Repository paths of the eval modules loaded by importing the monitor in a fresh interpreter."""
    code = ("import json, sys, eval.monitor; "
            "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'eval')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {str(Path(f).resolve().relative_to(REPO)) for f in json.loads(out)}


def test_every_paper_trains_with_the_eval_monitor_as_its_hook():
    for config in sorted(REPO.glob("*/configs/config.yaml")):
        hooks = OmegaConf.load(config).get("train", {}).get("hooks")
        assert list(hooks or []) == ["eval.monitor:training_hooks"], config


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_a_training_stage_depends_on_every_eval_module_the_monitor_imports_and_no_other(stage):
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["do"]["deps"]
    listed = {d for d in deps if d.startswith("eval")}
    assert "eval" not in listed, "the whole of eval/ would retrain every run for a change in a probe or a table"
    assert listed - {"eval/configs"} == eval_modules_the_monitor_imports()
    assert "eval/configs" in listed  # eval.settings reads the k-NN defaults from it
