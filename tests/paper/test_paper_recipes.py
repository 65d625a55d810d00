"""Every paper-scale run of every table executes real steps on CPU.

For each (paper, experiment, run) planned by ``common.launch.plan_runs`` at ``scale=paper``,
``common.train.train`` builds the run's exact model, optimiser, schedules, masks, crops, heads
and teachers (random weights of the official architectures), runs 2 steps in the run's own
precision (bf16 autocast on CPU where the paper trains in it; fp16 runs use bf16 instead, see
``PRECISION_STANDINS`` in paper_recipes.py for why) and exports the encoder;
the encoder then runs an evaluation forward at batch 2, and the run resumes from its step-1
checkpoint to the same step-2 state. The overrides change only where data and outputs live,
the device, the images per process (2; lr scaling and schedules keep the paper's global
batch), the number of steps (2; the schedules still span the paper's epochs), the training
monitors (health on 2 images, no k-NN) and, for fp16 runs only, the precision; the test checks that the resolved config differs from the paper's in
nothing else.

By default one rotating run that ``paper_recipes.ci_cost`` admits (at most ViT-B student and
teachers) executes, plus any experiment whose paper-scale plan fails (see conftest.py);
``pytest -m paper tests/paper`` runs all.
Runs whose training config is identical to one already executed in this session (the same
pretraining reused by several tables) reuse its outcome.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import config_diff, config_hash, identity, load_config
from paper_recipes import ALLOWED_DIFFERENCES, CUTS, Unplannable, paper_overrides, precision_standin, prepare_teachers

# config hash -> None (passed) or the failure message, for runs that share one training config
_OUTCOMES: dict[str, str | None] = {}


def _load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same_state(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), f"state differs at {where}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {where}"
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {where}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"differs at {where}"
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"differs at {where}"
    else:
        assert a == b, f"differs at {where}: {a!r} != {b!r}"


def _eval_forward(encoder_path: Path, data_name: str) -> torch.Tensor:
    """The exported encoder on 2 validation images, preprocessed as the evaluations do."""
    from common.data import get_dataset
    from eval.encoders import load
    from eval.features import Preprocess

    val = get_dataset(data_name, "val")
    encoder = load(str(encoder_path), data_name, (3, 224))
    pre = Preprocess(encoder.meta, "short256")
    images = torch.stack([pre(val[i][0]) for i in range(2)])
    with torch.no_grad():
        return encoder.model.eval()(images).tokens


def run_recipe(paper: str, spec, workdir: Path, out: Path, extra: tuple[str, ...] = ()) -> dict:
    """Train 2 steps, evaluate the export at batch 2, resume from step 1; ``extra``: more overrides."""
    from common.train import train, training_log

    extra = (*precision_standin(spec.cfg), *extra)
    prepare_teachers(spec.cfg, workdir)
    cfg = load_config(paper, [*spec.overrides, *paper_overrides(spec.cfg, workdir, out), *extra])
    changed = {line.split(":")[0].strip() for line in config_diff(identity(spec.cfg), identity(cfg))}
    allowed = ALLOWED_DIFFERENCES | {o.split("=")[0] for o in extra}
    assert changed <= allowed, f"the test changed more than it may: {sorted(changed - allowed)}"

    summary = train(cfg)
    assert summary["steps"] == 2
    run_dir = Path(summary["run_dir"])
    losses = [r["loss"] for r in training_log(run_dir)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses

    tokens = _eval_forward(Path(summary["encoder"]), str(cfg.data.name))
    assert tokens.shape[0] == 2 and torch.isfinite(tokens).all()

    # save and resume: from the step-1 checkpoint to the same step-2 state
    ckpts = run_dir / "checkpoints"
    final = ckpts / "step_000000002.pt"
    assert (ckpts / "step_000000001.pt").exists() and final.exists()
    reference = _load_checkpoint(final)
    for path in (final, run_dir / "done.json", run_dir / "encoder.pt"):
        path.unlink()
    again = train(cfg)
    assert again["steps"] == 2
    resumed = _load_checkpoint(final)
    for key in ("step", "epoch", "batch_in_epoch", "method", "optimizer", "scaler", "rng"):
        _assert_same_state(reference[key], resumed[key], key)
    return summary


def test_paper_recipe(paper_run, synthetic_root, tmp_path, monkeypatch, record_property):
    paper, experiment, spec = paper_run
    if isinstance(spec, Unplannable):
        pytest.fail(f"{paper}/{experiment} cannot be planned at scale=paper: {spec.error}")
    if (paper, spec.name) in CUTS:
        pytest.xfail(CUTS[(paper, spec.name)])
    digest = config_hash(spec.cfg)
    if digest in _OUTCOMES:
        if _OUTCOMES[digest] is not None:
            pytest.fail(f"same training config as a run that failed: {_OUTCOMES[digest]}")
        return
    monkeypatch.chdir(synthetic_root)
    _OUTCOMES[digest] = f"{paper}/{experiment}/{spec.name} (running)"
    summary = run_recipe(paper, spec, synthetic_root, tmp_path)
    _OUTCOMES[digest] = None
    # the mean of the 2 training steps (the first one included) at batch 2, for the ledger
    record_property("step_s", round(summary["loop_time_s"]["step"] / summary["steps"], 2))
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)  # ViT-L checkpoints are GBs
