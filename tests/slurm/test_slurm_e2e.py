"""`--slurm` end to end against the real scheduler (start it with `tests/slurm/cluster.sh start`).

Every job goes through a repository entry point, and so through submitit, sbatch, srun and
slurmdbd; nothing is mocked. Bootleg's `bootleg/launch.py` is used throughout, except for the
two-process test, which needs a method whose augmentations are seeded per sample (the
foundation's toy method, `tests/toy_paper/launch.py`): Bootleg draws masks per collate call,
so two processes collating half batches see other masks than one process collating the whole.

The commands run in the test's directory, as a user runs them from a checkout: runs, records
and job folders land at the configured relative paths, under `tmp_path`.
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
from common.train import run_dir_of, training_log
from eval.records import records_dir

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
BOOTLEG = [sys.executable, str(REPO / "bootleg" / "launch.py")]
TOY = [sys.executable, str(REPO / "tests" / "toy_paper" / "launch.py")]
COMMAND_TIMEOUT_S = 600
# One core and 2 GB per task, so that two tasks share the two-core test node.
SMALL_JOBS = ["train.progress=false", "cluster.cpus_per_task=1", "cluster.mem_gb=2", "cluster.timeout_min=15"]
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
SUBMITTED = re.compile(r"^submitted (?P<run>\S+): job (?P<job>\S+), logs (?P<log>\S+)$", re.M)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The test's directory as the working directory of this process and of the commands."""
    if (REPO / "data").is_dir():  # prepared datasets are shared; otherwise they are prepared here
        (tmp_path / "data").symlink_to(REPO / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def launch(cmd: list[str], args: list[str], env: dict, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, **popen)


def explain(out) -> str:
    return f"exit {out.returncode}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"


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


def test_smoke_table_goes_out_as_one_job_array_and_lands_where_a_local_run_would(workdir, job_env):
    """`python bootleg/launch.py --slurm scale=smoke`: the default table's runs as one job array."""
    out = launch(BOOTLEG, ["--slurm", "scale=smoke", *SMALL_JOBS], job_env)
    assert out.returncode == 0, explain(out)

    local = plan_runs("bootleg", ["scale=smoke", *SMALL_JOBS, "cluster=local"])
    jobs = submitted(out.stdout)
    assert sorted(jobs) == sorted(spec.name for spec in local)
    array_ids = {job.split("_")[0] for job, _ in jobs.values()}
    assert len(array_ids) == 1, f"expected one job array, got {jobs}"
    assert sorted(job.split("_")[1] for job, _ in jobs.values()) == [str(i) for i in range(len(local))]
    states = final_sacct_states(array_ids.pop(), len(local))
    assert {job: s[-1] for job, s in states.items()} == {job: "COMPLETED" for job, _ in jobs.values()}

    table = out.stdout[out.stdout.rindex("submitted"):].splitlines()
    for spec in local:
        # the paths a --local run of the same command uses
        run_dir = run_dir_of(spec.cfg)
        encoder, meta, sha = load_encoder(run_dir / "encoder.pt")
        assert meta["run"] == spec.name and meta["paper"] == "bootleg"
        assert json.loads((run_dir / "done.json").read_text())["encoder_sha256"] == sha
        values = []
        for protocol in spec.cfg.eval.protocols:
            record_file = records_dir(spec.cfg) / f"{protocol}.json"
            assert record_file.is_file(), f"no {protocol} record for {spec.name}"
            record = json.loads(record_file.read_text())
            assert record["checkpoint_sha256"] == sha, "the record does not name the encoder it evaluated"
            values.append(f"{record['value']:.1f}")
        # the printed table reads these records: the run's row shows their values
        # rows are labelled "<Method> (run <name>, <encoder> encoder)"
        [row] = [line for line in table if line.startswith("|") and f"(run {spec.name}," in line]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:1 + len(values)] == values, row


def test_two_task_job_trains_like_one_process_with_the_same_global_batch(workdir, job_env):
    """tasks_per_node=2 under SLURM (gloo, all-gathered keys, averaged gradients) == one process."""
    common = [*SMALL_JOBS, "train.epochs=1", "data.batch_size=32"]
    ddp = subprocess.Popen([*TOY, "--slurm", *common, "run_name=ddp", "cluster.tasks_per_node=2"],
                           env=job_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    single = launch(TOY, ["--local", *common, "run_name=single"], job_env)
    assert single.returncode == 0, explain(single)
    stdout, stderr = ddp.communicate(timeout=COMMAND_TIMEOUT_S)
    assert ddp.returncode == 0, explain(subprocess.CompletedProcess(ddp.args, ddp.returncode, stdout, stderr))

    [(job, log)] = submitted(stdout).values()
    assert final_sacct_states(job, 1)[job][-1] == "COMPLETED"
    assert sorted(p.name for p in log.parent.glob(f"{job}_*_log.out")) == [f"{job}_0_log.out",
                                                                           f"{job}_1_log.out"]
    runs = workdir / "runs" / "toy_paper" / "smoke"
    assert json.loads((runs / "ddp" / "done.json").read_text())["world_size"] == 2
    assert json.loads((runs / "single" / "done.json").read_text())["world_size"] == 1
    a, b = encoder_weights(runs / "single"), encoder_weights(runs / "ddp")
    assert a.keys() == b.keys()
    for key in a:  # the tolerance of the torchrun check in tests/common/test_train.py
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=f"{key} differs")


def test_preempted_job_requeues_and_resumes_to_bitwise_equal_weights(workdir, job_env):
    """USR2 (what SLURM sends before the time limit, and on preemption where configured)
    mid-run: submitit checkpoints and requeues, the job resumes from its run directory and
    ends exactly where an uninterrupted run ends; the submitting command waits through it."""
    # 32 steps with a checkpoint every 2: the signal lands mid-run, after a checkpoint.
    args = ["scale=smoke", *SMALL_JOBS, "train.epochs=8", "train.ckpt_every_steps=2", "eval.protocols=[]"]
    [spec] = [s for s in plan_runs("bootleg", args) if s.name == "bootleg"]
    steps_total = 8 * (int(spec.cfg.data.train_subset) // int(spec.cfg.data.batch_size))
    run_dir = run_dir_of(spec.cfg)
    err_file = workdir / "submit.err"
    with open(err_file, "w") as err:
        job_proc = subprocess.Popen([*BOOTLEG, "--slurm", "--only", "bootleg", *args], env=job_env,
                                    stdout=subprocess.PIPE, stderr=err, text=True)
    # The uninterrupted reference: the same run in one process, elsewhere.
    reference = subprocess.Popen([sys.executable, "-m", "common.launch", "worker", "bootleg",
                                  *spec.overrides, "train.out_root=reference"],
                                 env=job_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = job_proc.stdout.readline()
    [(job, log)] = submitted(first).values()

    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "step_000000002.pt").exists():
        assert job_proc.poll() is None, f"the submitter ended before the signal: {err_file.read_text()}"
        assert time.monotonic() < deadline, f"no checkpoint after 300 s; job log: {log}"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

    rest, _ = job_proc.communicate(timeout=COMMAND_TIMEOUT_S)
    assert job_proc.returncode == 0, f"stdout:\n{first + rest}\nstderr:\n{err_file.read_text()[-3000:]}"
    _, ref_err = reference.communicate(timeout=COMMAND_TIMEOUT_S)
    assert reference.returncode == 0, ref_err[-3000:]

    assert final_sacct_states(job, 1)[job] == ["REQUEUED", "COMPLETED"]
    job_log = log.read_text()
    assert "Caught signal SIGUSR2" in job_log and "Requeued job" in job_log, job_log
    assert job_log.count("Starting with JobEnvironment") == 2, job_log
    # The second start continued from a checkpoint, not from scratch: every step was logged,
    # step 1 only once.
    steps = [r["step"] for r in training_log(run_dir)]  # the monitor lines (step 0, ...) aside
    assert sorted(set(steps)) == list(range(1, steps_total + 1)) and steps.count(1) == 1, steps

    ref, got = encoder_weights(workdir / "reference" / "bootleg" / "smoke" / "bootleg"), encoder_weights(run_dir)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "the resumed run diverged from the uninterrupted one"


def test_job_that_fails_inside_reports_error_and_log_to_the_submitter(workdir, job_env):
    """A bad override that passes the config checks but fails in the job: non-zero exit, and
    the job's error and log path on the submitting terminal."""
    missing = workdir / "no-such-dataset"
    out = launch(BOOTLEG, ["--slurm", "--only", "bootleg", "scale=smoke", *SMALL_JOBS,
                           f"data.name=imagefolder:{missing}"], job_env)
    assert out.returncode != 0, explain(out)
    [(job, log)] = submitted(out.stdout).values()
    stderr_log = log.with_name(log.name.replace("_log.out", "_log.err"))
    assert f"run bootleg (job {job}) failed" in out.stderr, explain(out)
    assert str(stderr_log) in out.stderr, explain(out)
    assert str(missing) in out.stderr, f"the submitter does not show the job's error\n{explain(out)}"
    assert str(missing) in stderr_log.read_text(), "the job's log does not hold the error"
    assert final_sacct_states(job, 1)[job][-1] == "FAILED"


def test_dry_run_prints_the_header_submitit_writes(workdir, job_env):
    """The #SBATCH lines `--slurm --dry-run` prints (built by common.sbatch, without submitit, so
    that they print where SLURM is absent) are those of the file submitit submits for the same
    command. The jobs are submitted held (`--hold`) and cancelled: nothing runs."""
    args = ["--slurm", "scale=smoke", *SMALL_JOBS, "cluster.partition=debug", "cluster.array_parallelism=2",
            "+cluster.additional.comment=header-check", "+cluster.additional.hold=true"]
    dry = launch(BOOTLEG, ["--dry-run", *args], job_env)
    assert dry.returncode == 0, explain(dry)
    printed = [line for line in dry.stdout.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --hold" in printed and "#SBATCH --partition=debug" in printed, printed

    out = launch(BOOTLEG, ["--no-wait", *args], job_env)
    assert out.returncode == 0, explain(out)
    array_ids = {job.split("_")[0] for job, _ in submitted(out.stdout).values()}
    assert len(array_ids) == 1, out.stdout
    array_id = array_ids.pop()
    try:
        [submission] = workdir.rglob(f"{array_id}_submission.sh")
        written = [line for line in submission.read_text().splitlines() if line.startswith("#SBATCH")]
        assert printed == written, f"dry run:\n{chr(10).join(printed)}\nsubmitit wrote:\n{chr(10).join(written)}"
    finally:
        subprocess.run(["scancel", array_id], check=True, timeout=30)
        deadline = time.monotonic() + 60
        while subprocess.run(["squeue", "--noheader", f"--jobs={array_id}", "--format=%i"],
                             capture_output=True, text=True, timeout=30).stdout.strip():
            assert time.monotonic() < deadline, f"held job array {array_id} still queued 60 s after scancel"
            time.sleep(0.5)
