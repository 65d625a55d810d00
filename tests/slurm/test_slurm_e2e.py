"""`--slurm` end to end against the real scheduler (start it with `tests/slurm/cluster.sh start`).

Every job goes through a repository entry point (`bootleg/launch.py`, or the foundation's toy
method `tests/toy_paper/launch.py` where a test needs a single run or an injected delay), and so
through submitit, sbatch, srun and slurmdbd. Nothing here is mocked.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.checkpoint import load_encoder
from common.launch import plan_runs
from common.train import run_dir_of

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
BOOTLEG = [sys.executable, str(REPO / "bootleg" / "launch.py")]
TOY = [sys.executable, str(REPO / "tests" / "toy_paper" / "launch.py")]
COMMAND_TIMEOUT_S = 600
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
SUBMITTED = re.compile(r"^submitted (?P<run>\S+): job (?P<job>\S+), logs (?P<log>\S+)$", re.M)


def outputs(tmp_path: Path) -> list[str]:
    """Overrides that keep runs, records and job folders in the test's directory.

    One CPU and 2 GB per task, so that two tasks share the two-core test node.
    """
    return [f"train.out_root={tmp_path}/runs", f"results_root={tmp_path}/results", "train.progress=false",
            "cluster.cpus_per_task=1", "cluster.mem_gb=2", "cluster.timeout_min=15"]


def launch(cmd: list[str], args: list[str], env: dict) -> subprocess.CompletedProcess:
    # From the repository, as a user would: datasets resolve under its data/ (and are shared).
    return subprocess.run([*cmd, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S)


def submitted(stdout: str) -> dict[str, tuple[str, Path]]:
    """Run name -> (SLURM job id, stdout log), from the lines common.launch prints on submission."""
    return {m["run"]: (m["job"], Path(m["log"])) for m in SUBMITTED.finditer(stdout)}


def sacct_states(job_id: str) -> dict[str, list[str]]:
    """Each allocation of the job (each task of an array) -> its states, oldest start first.

    `--duplicates` keeps the records of earlier starts, so a requeued job lists REQUEUED first.
    """
    out = subprocess.run(["sacct", "--jobs", job_id, "--allocations", "--duplicates", "--noheader",
                          "--parsable2", "--format=JobID,State"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    states: dict[str, list[str]] = {}
    for line in out.splitlines():
        jid, state = line.split("|")
        states.setdefault(jid, []).append(state.split()[0])  # "CANCELLED by 0" -> "CANCELLED"
    return states


def final_sacct_states(job_id: str, n_allocations: int, timeout_s: float = 60.0) -> dict[str, list[str]]:
    """sacct once every allocation has a final state (accounting reaches slurmdbd after the job ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = sacct_states(job_id)
        if len(states) >= n_allocations and all(s[-1] in FINAL_STATES for s in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"sacct did not report {n_allocations} finished allocation(s) of job {job_id} "
                        f"within {timeout_s:.0f}s: {states}")
        time.sleep(1.0)


def encoder_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "encoder.pt", weights_only=False)["state_dict"]


def test_smoke_table_goes_out_as_one_job_array_and_lands_where_a_local_run_would(tmp_path, job_env):
    """`bootleg/launch.py --slurm scale=smoke`: the default experiment's runs as one array."""
    args = ["scale=smoke", *outputs(tmp_path)]
    out = launch(BOOTLEG, ["--slurm", *args], job_env)
    assert out.returncode == 0, f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"

    # The runs and paths a local run of the same command uses.
    local = plan_runs("bootleg", [*args, "cluster=local"])
    jobs = submitted(out.stdout)
    assert sorted(jobs) == sorted(spec.name for spec in local)
    array_ids = {job.split("_")[0] for job, _ in jobs.values()}
    assert len(array_ids) == 1, f"expected one job array, got {jobs}"
    assert sorted(job.split("_")[1] for job, _ in jobs.values()) == [str(i) for i in range(len(local))]

    states = final_sacct_states(array_ids.pop(), len(local))
    assert {job: s[-1] for job, s in states.items()} == {job: "COMPLETED" for job, _ in jobs.values()}

    for spec in local:
        encoder, meta, sha = load_encoder(run_dir_of(spec.cfg) / "encoder.pt")
        assert meta["run"] == spec.name and meta["paper"] == "bootleg"
        done = json.loads((run_dir_of(spec.cfg) / "done.json").read_text())
        assert done["encoder_sha256"] == sha
        for protocol in spec.cfg.eval.protocols:
            record_file = tmp_path / "results" / "bootleg" / spec.name / f"{protocol}.json"
            assert record_file.is_file(), f"no {protocol} record for {spec.name}"
            assert sha in record_file.read_text(), "the record does not name the encoder it evaluated"
        # every name of the table appears in the rendered markdown the command printed last
    table = out.stdout[out.stdout.rindex("submitted"):]
    table_lines = [line for line in table.splitlines() if line.startswith("|")]
    assert table_lines, f"no markdown table after the submissions:\n{out.stdout[-2000:]}"
    for spec in local:
        assert any(spec.name in line for line in table_lines), f"{spec.name} missing from the table"


def test_two_task_job_trains_like_one_process_with_the_same_global_batch(tmp_path, job_env):
    """tasks_per_node=2 under SLURM (gloo, all-gathered keys, averaged gradients) == one process."""
    common = [*outputs(tmp_path), "train.epochs=1", "data.batch_size=32"]
    ddp = subprocess.Popen([*TOY, "--slurm", *common, "run_name=ddp", "cluster.tasks_per_node=2"],
                           env=job_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    single = launch(TOY, ["--local", *common, "run_name=single"], job_env)
    assert single.returncode == 0, single.stderr[-3000:]
    stdout, stderr = ddp.communicate(timeout=COMMAND_TIMEOUT_S)
    assert ddp.returncode == 0, f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"

    [(job, log)] = submitted(stdout).values()
    assert final_sacct_states(job, 1)[job][-1] == "COMPLETED"
    # both tasks ran, as ranks 0 and 1 of one process group
    assert sorted(p.name for p in log.parent.glob(f"{job}_*_log.out")) == [f"{job}_0_log.out",
                                                                           f"{job}_1_log.out"]
    runs = tmp_path / "runs" / "toy_paper"
    assert json.loads((runs / "ddp" / "done.json").read_text())["world_size"] == 2
    assert json.loads((runs / "single" / "done.json").read_text())["world_size"] == 1
    a, b = encoder_weights(runs / "single"), encoder_weights(runs / "ddp")
    assert a.keys() == b.keys()
    for key in a:  # same tolerance as the torchrun check of tests/common/test_train.py
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=f"{key} differs")


def test_preempted_job_requeues_and_resumes_to_bitwise_equal_weights(tmp_path, job_env):
    """USR2 (what SLURM sends before the time limit or on preemption) mid-run: checkpoint,
    requeue, resume from the run directory, and end exactly where an uninterrupted run ends."""
    # 30 steps of >= 0.2 s, a checkpoint every 5: the signal lands mid-run, after a checkpoint.
    common = [*outputs(tmp_path), "train.epochs=3", "method.sleep_s=0.2", "train.ckpt_every_steps=5"]
    err_file = tmp_path / "submit.err"
    with open(err_file, "w") as err:
        job_proc = subprocess.Popen([*TOY, "--slurm", *common, "run_name=preempted"], env=job_env,
                                    cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
    reference = subprocess.Popen([*TOY, "--local", *common, "run_name=reference"], env=job_env,
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = job_proc.stdout.readline()
    [(job, log)] = submitted(first).values()
    run_dir = tmp_path / "runs" / "toy_paper" / "preempted"

    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "step_000000005.pt").exists():
        assert job_proc.poll() is None, f"the job ended before it was signalled: {err_file.read_text()}"
        assert time.monotonic() < deadline, f"no checkpoint after 300 s; job log: {log}"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

    rest, _ = job_proc.communicate(timeout=COMMAND_TIMEOUT_S)
    assert job_proc.returncode == 0, f"stdout:\n{first + rest}\nstderr:\n{err_file.read_text()[-3000:]}"
    _, ref_err = reference.communicate(timeout=COMMAND_TIMEOUT_S)
    assert reference.returncode == 0, ref_err[-3000:]

    assert final_sacct_states(job, 1)[job] == ["REQUEUED", "COMPLETED"]
    job_log = log.read_text()
    assert job_log.count("Starting with JobEnvironment") == 2, job_log
    # The second start continued from a checkpoint, not from scratch: every step was logged,
    # step 1 only once.
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, 31)) and steps.count(1) == 1, steps

    ref, got = encoder_weights(tmp_path / "runs" / "toy_paper" / "reference"), encoder_weights(run_dir)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "resumed run diverged from the uninterrupted one"


def test_job_that_fails_inside_reports_error_and_log_to_the_submitter(tmp_path, job_env):
    """A bad override that passes config checks but fails in the job: non-zero exit, the error,
    and the log path on the submitting terminal."""
    missing = tmp_path / "no-such-dataset"
    out = launch(BOOTLEG, ["--slurm", "scale=smoke", *outputs(tmp_path), f"data.name=imagefolder:{missing}"],
                 job_env)
    assert out.returncode != 0
    jobs = submitted(out.stdout)
    assert jobs
    for run, (job, log) in jobs.items():
        assert f"run {run} (job {job}) failed" in out.stderr
        stderr_log = log.with_name(log.name.replace("_log.out", "_log.err"))
        assert str(stderr_log) in out.stderr
        assert str(missing) in stderr_log.read_text(), "the job's log does not hold the error"
    assert str(missing) in out.stderr, "the submitter does not show the job's error"
    array = next(iter(jobs.values()))[0].split("_")[0]
    states = final_sacct_states(array, len(jobs))
    assert {s[-1] for s in states.values()} == {"FAILED"}
