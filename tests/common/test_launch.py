"""The shared CLI and submitit executors (never the SLURM scheduler here: see tests/slurm)."""
from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import torch

from common.config import ConfigError, load_config
from common.launch import JobFailure, TrainEvalJob, main, make_executor, plan_runs, submit
from common.train import run_dir_of
from eval.api import evaluate_run
from eval.records import records_dir

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, str(REPO / "tests/toy_paper/launch.py")]


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "encoder.pt", weights_only=False)["state_dict"]


@pytest.mark.parametrize("cluster", ["debug", "submitit_local"])
def test_submitit_executor_returns_the_run_summary(cluster, toy_overrides, monkeypatch, toy_env):
    monkeypatch.setenv("PYTHONPATH", toy_env["PYTHONPATH"])
    specs = plan_runs("toy_paper", [*toy_overrides, f"cluster={cluster}", "train.epochs=1"])
    [summary] = submit("toy_paper", specs, specs[0].cfg.cluster)
    assert summary["steps"] == 10
    assert Path(summary["encoder"]).is_file()


def test_experiment_expands_to_named_runs(toy_overrides):
    specs = plan_runs("toy_paper", [*toy_overrides, "experiment=pair"])
    assert [s.name for s in specs] == ["toy-a", "toy-b"]
    assert [s.cfg.train.seed for s in specs] == [0, 1]
    assert {s.cfg.experiment_name for s in specs} == {"pair"}


def test_default_run_name_is_deterministic(toy_overrides):
    a = plan_runs("toy_paper", toy_overrides)[0].name
    assert a == plan_runs("toy_paper", toy_overrides)[0].name
    assert re.fullmatch(r"toy-[0-9a-f]{8}", a)  # no scale: the run directory has it
    assert a != plan_runs("toy_paper", [*toy_overrides, "optim.lr=0.1"])[0].name


def test_preempted_job_checkpoint_resubmission_finishes_identically(toy_overrides, toy_env, monkeypatch):
    """A job interrupted mid-run, then requeued through its checkpoint(), ends bitwise equal."""
    monkeypatch.setenv("PYTHONPATH", toy_env["PYTHONPATH"])
    common = [*toy_overrides, "train.epochs=2", "method.sleep_s=0.05"]
    ref_cfg = load_config("toy_paper", [*common, "run_name=ref"])
    TrainEvalJob("toy_paper", [*common, "run_name=ref"])()

    job_args = [*common, "run_name=preempted"]
    run_dir = run_dir_of(load_config("toy_paper", job_args))
    proc = subprocess.Popen([*LAUNCH, *job_args], env=toy_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (run_dir / "checkpoints" / "step_000000005.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the node goes away mid-epoch
    proc.wait()

    resubmission = TrainEvalJob("toy_paper", job_args).checkpoint()
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    cluster = load_config("toy_paper", ["cluster=debug", *toy_overrides]).cluster
    job = make_executor(cluster, Path(toy_overrides[0].split("=", 1)[1]) / "jobs").submit(
        resubmission.function, *resubmission.args)
    assert job.result()["steps"] == 20
    ref, got = weights(run_dir_of(ref_cfg)), weights(run_dir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_dry_run_prints_config_and_sbatch_array(toy_env, tmp_path):
    out = subprocess.run([*LAUNCH, "--slurm", "--dry-run", "experiment=pair", "cluster.partition=gpu",
                          "cluster.gpus_per_node=8", "cluster.tasks_per_node=8",
                          "cost.measure=false"],  # the cost table: tests/common/test_cost.py
                         env=toy_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "# ---- run toy-a" in out.stdout and "# ---- run toy-b" in out.stdout
    assert "#SBATCH --array=0-1" in out.stdout
    assert "#SBATCH --partition=gpu" in out.stdout
    assert "#SBATCH --gpus-per-node=8" in out.stdout and "#SBATCH --ntasks-per-node=8" in out.stdout
    assert "#SBATCH --signal=USR2@90" in out.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_bad_override_exits_with_readable_error(toy_env):
    out = subprocess.run([*LAUNCH, "--dry-run", "optim.lrr=1"], env=toy_env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert "unknown config key 'optim.lrr'" in out.stderr and "optim.lr" in out.stderr


def test_experiment_none_selects_a_single_run(toy_overrides):
    [spec] = plan_runs("toy_paper", [*toy_overrides, "experiment=none"])
    assert spec.cfg.experiment_name == "default" and spec.name.startswith("toy-")


def test_failed_job_reports_its_error_and_logs(toy_overrides, monkeypatch, toy_env, tmp_path):
    """A run that passes the config checks but fails inside its submitit job: the failure names
    the run, holds the job's error (submitit's report, not a parse of it) and its log paths."""
    monkeypatch.setenv("PYTHONPATH", toy_env["PYTHONPATH"])
    missing = tmp_path / "no-such-dataset"
    specs = plan_runs("toy_paper", [*toy_overrides, "cluster=submitit_local", f"data.name=imagefolder:{missing}"])
    with pytest.raises(JobFailure) as failure:
        submit("toy_paper", specs, specs[0].cfg.cluster, after_train=evaluate_run)
    message = str(failure.value)
    assert f"run {specs[0].name} (job " in message and str(missing) in message
    assert "stderr log: " in message and "_log.err" in message


def test_runs_naming_an_unknown_protocol_are_refused(toy_overrides):
    with pytest.raises(ConfigError, match=r"eval.protocols names unknown protocol\(s\) \['svm'\]; valid: knn"):
        plan_runs("toy_paper", [*toy_overrides, "eval.protocols=[svm]"])


def test_evaluating_without_an_evaluation_step_is_refused():
    with pytest.raises(ValueError, match="stage='eval' needs after_train"):
        TrainEvalJob("toy_paper", [], stage="eval")


def test_torchrun_workers_get_the_evaluation_step_by_name(monkeypatch, tmp_path):
    """Each torchrun process rebuilds the job from its command line: the evaluation passed to
    submit() reaches it as `--after-train=module:function`."""
    import common.launch as launch
    seen = []
    monkeypatch.setattr(launch, "TrainEvalJob", lambda *args: seen.append(args) or (lambda: None))
    commands = []
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, check: commands.append(cmd))
    monkeypatch.setattr(launch, "load_config", lambda *a: None)
    monkeypatch.setattr("common.train.run_dir_of", lambda cfg: tmp_path)
    (tmp_path / "done.json").write_text('{"steps": 3}')
    assert launch._run_torchrun("toy_paper", ["a=1"], 2, "all", evaluate_run) == {"steps": 3}
    worker_argv = commands[0][commands[0].index("worker") + 1:]
    assert worker_argv == ["--stage=all", "--after-train=eval.api:evaluate_run", "toy_paper", "a=1"]
    launch._worker(worker_argv)
    assert seen == [("toy_paper", ["a=1"], "all", evaluate_run)]


def test_common_never_imports_eval():
    """Arrows point down: papers -> eval -> common. common takes the evaluation as an argument."""
    offenders = [f"{path.name}:{n}" for path in sorted((REPO / "common").glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if line.strip().startswith(("import eval", "from eval"))]
    assert offenders == []


def test_relaunch_reuses_records_of_the_same_encoder_and_protocol(toy_overrides, capsys):
    args = [*toy_overrides, "train.epochs=1", "eval.protocols=[knn]"]
    [spec] = plan_runs("toy_paper", args)
    TrainEvalJob("toy_paper", spec.overrides, after_train=evaluate_run)()
    record = records_dir(spec.cfg) / "knn.json"
    first = record.read_text()
    TrainEvalJob("toy_paper", spec.overrides, after_train=evaluate_run)()
    assert "reusing" in capsys.readouterr().out and record.read_text() == first
    # another protocol setting is evaluated again
    [changed] = plan_runs("toy_paper", [*args, "eval.knn.T=0.1"])
    TrainEvalJob("toy_paper", changed.overrides, after_train=evaluate_run)()
    assert record.read_text() != first


def test_only_runs_the_named_runs_and_leaves_the_table_to_tables_py(toy_overrides, capsys):
    args = [*toy_overrides, "experiment=pair", "train.epochs=1", "eval.protocols=[]"]
    main("toy_paper", ["--only", "toy-b", *args])
    # the same overrides name the same experiment, scale and results_root to the table
    assert f"ran toy-b of pair; render its table with python toy_paper/tables.py {shlex.join(args)}\n" \
        in capsys.readouterr().out
    a, b = plan_runs("toy_paper", args)
    assert (run_dir_of(b.cfg) / "encoder.pt").is_file() and not run_dir_of(a.cfg).exists()


def test_extra_evals_write_beside_the_run_and_are_reused(toy_overrides, capsys):
    args = [*toy_overrides, "train.epochs=1", "eval.protocols=[knn]", "extra_evals={hot:{knn:{T:0.5},protocols:[knn]}}"]
    [spec] = plan_runs("toy_paper", args)
    TrainEvalJob("toy_paper", spec.overrides, after_train=evaluate_run)()
    out = records_dir(spec.cfg)
    main_rec, extra_rec = (json.loads((d / "knn.json").read_text()) for d in (out, out / "hot"))
    assert extra_rec["method"] == main_rec["method"] + "+hot" and extra_rec["T"] == 0.5 != main_rec["T"]
    assert extra_rec["checkpoint_sha256"] == main_rec["checkpoint_sha256"]
    assert extra_rec["eval_config_hash"] != main_rec["eval_config_hash"]
    TrainEvalJob("toy_paper", spec.overrides, after_train=evaluate_run)()
    assert capsys.readouterr().out.count("reusing") == 2
    with pytest.raises(ConfigError, match="extra_evals.hot has no protocols"):
        plan_runs("toy_paper", [*toy_overrides, "extra_evals={hot:{knn:{T:0.5}}}"])
