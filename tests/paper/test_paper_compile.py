"""``train.compile=true`` (torch.compile, default inductor backend, of method.training_step) on CPU.

The equality test uses each paper's smoke model (inductor compiles a paper-size ViT in minutes
on CPU); one paper-scale run per paper compiles. Both run only under ``pytest -m paper
tests/paper``, not in CI: even the smoke case spends minutes in inductor (SDSSL: 193 s for the
compiled 2 steps against 1.4 s eager, 1 torch thread, on the 2-core machine under load,
2026-12-02), which a CI share cannot afford. Hybrid Distill's smoke students distil from
random-weight smoke teachers written into the test's tmp dir (tests/hd_smoke_teachers.py).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from common.config import load_config
from hd_smoke_teachers import smoke_teachers, teacher_overrides
from paper_recipes import PAPERS, TORCH_THREADS, plan

# the main-table run of each paper, compiled at paper scale under `-m paper`
PAPER_COMPILE_RUNS = {"bootleg": ("main_table", "s16-bootleg"), "sdssl": ("table1", "table1-s16-sd_moco_v3"),
                      "hybrid_distill": ("table1", "b300_hybrid_clip"), "udi": ("paper_in1k", "udi_vits16_300ep")}


def _losses(paper: str, compile_: bool, out: Path, extra: list[str]) -> list[float]:
    from common.train import train, training_log

    cfg = load_config(paper, ["scale=smoke", "train.max_steps=2", "train.device=cpu", f"train.compile={compile_}",
                              f"train.out_root={out}", f"results_root={out}/results", "train.progress=false",
                              f"train.threads={TORCH_THREADS}", "run_name=compile" if compile_ else "run_name=eager", *extra])
    summary = train(cfg)
    return [r["loss"] for r in training_log(Path(summary["run_dir"]))]


# Found by this test, not fixed yet: strict, so that the fix turns the case into a pass.
KNOWN_COMPILE_FAILURES = {
    "bootleg": "inductor returns bootleg's training_step loss without grad_fn ('element 0 of tensors does not "
               "require grad'); eager and aot_eager backends keep it",
}


def _compile_cases():
    return [pytest.param(p, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_COMPILE_FAILURES[p])]
                         if p in KNOWN_COMPILE_FAILURES else []) for p in PAPERS]


@pytest.mark.paper
@pytest.mark.parametrize("paper", _compile_cases())
def test_compiled_step_gives_the_eager_loss(paper, tmp_path):
    extra = teacher_overrides(smoke_teachers(tmp_path / "teachers")) if paper == "hybrid_distill" else []
    eager = _losses(paper, False, tmp_path / "eager", extra)
    compiled = _losses(paper, True, tmp_path / "compiled", extra)
    assert len(eager) == 2 and all(math.isfinite(x) for x in eager)
    # step 2 also checks the update: same gradients and optimiser step under inductor
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)


@pytest.mark.paper
@pytest.mark.parametrize("paper", _compile_cases())
def test_paper_recipe_compiles(paper, synthetic_root, tmp_path, monkeypatch):
    from test_paper_recipes import run_recipe

    experiment, run = PAPER_COMPILE_RUNS[paper]
    spec = next(s for s in plan(paper, experiment) if s.name == run)
    monkeypatch.chdir(synthetic_root)
    run_recipe(paper, spec, synthetic_root, tmp_path, extra=["train.compile=true"])
