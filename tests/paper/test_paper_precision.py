"""The fp16 path (autocast + GradScaler) at smoke scale on CPU.

The paper-recipe tests run UDI's fp16 recipes with bf16 autocast (paper_recipes.PRECISION_STANDINS:
fp16 autocast is emulated on CPU and takes minutes per paper-size step); the GradScaler, which only
fp16 uses, is exercised here on the toy method (tests/toy_paper) instead, in seconds.
"""
from __future__ import annotations

import math
from pathlib import Path

from common.config import load_config
from paper_recipes import TORCH_THREADS
from test_paper_recipes import _assert_same_state, _load_checkpoint


def test_fp16_grad_scaler_trains_and_resumes(toy_overrides):
    from common.train import train, training_log

    cfg = load_config("toy_paper", [*toy_overrides, "train.precision=fp16", "train.max_steps=2", "train.device=cpu",
                                    "train.ckpt_every_steps=1", "train.keep_checkpoints=3",
                                    f"train.threads={TORCH_THREADS}"])
    summary = train(cfg)
    run_dir = Path(summary["run_dir"])
    losses = [r["loss"] for r in training_log(run_dir)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses

    final = run_dir / "checkpoints" / "step_000000002.pt"
    reference = _load_checkpoint(final)
    # an enabled scaler saves its scale; a disabled one (fp32/bf16) saves an empty state
    assert reference["scaler"].get("scale", 0) > 0, reference["scaler"]
    for path in (final, run_dir / "done.json", run_dir / "encoder.pt"):
        path.unlink()
    train(cfg)
    resumed = _load_checkpoint(final)
    for key in ("step", "method", "optimizer", "scaler"):
        _assert_same_state(reference[key], resumed[key], key)
