"""Shared test set-up: the toy method package (tests/toy_paper) is importable everywhere."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Two cores: keep torch from oversubscribing when tests start subprocesses.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def toy_env(tmp_path):
    """Environment for subprocesses that run the toy method."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    # Same thread count as this process: float reductions then match bit for bit, which the
    # resume tests compare across processes.
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


@pytest.fixture
def toy_overrides(tmp_path):
    """Overrides that keep a toy run's outputs inside the test's tmp dir."""
    return [f"train.out_root={tmp_path}/runs", f"results_root={tmp_path}/results", "train.progress=false"]
