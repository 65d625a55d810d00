"""What a user meets while a run is running or being resumed: divergence, Ctrl-C, resume,
corrupt checkpoints and data files. Each answer is one line that names the file and the fix."""
from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common import data
from common.checkpoint import CheckpointManager, export_encoder, load_encoder, non_finite_tensors, sha256_file
from common.config import load_config
from common.errors import CorruptCheckpointError
from common.train import NonFiniteLossError, run_dir_of, train, truncate_log
from common.vit import ViT

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, str(REPO / "tests/toy_paper/launch.py")]
EVAL = [sys.executable, str(REPO / "eval/launch.py")]


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def logged_steps(run_dir: Path) -> list[int]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in records]


def default_sigint():
    """Children of a background shell start with SIGINT ignored; a terminal's Ctrl-C is not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def launch_until_step(args: list[str], env: dict, run_dir: Path, step: int) -> subprocess.Popen:
    """Start a toy run in a subprocess and return once it has logged `step` steps."""
    proc = subprocess.Popen([*LAUNCH, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)
    deadline = time.time() + 600
    log = run_dir / "log.jsonl"
    while not (log.exists() and len(log.read_text().splitlines()) >= step):
        assert proc.poll() is None, f"run ended before step {step}: {proc.communicate()}"
        assert time.time() < deadline, f"the run did not reach step {step}"
        time.sleep(0.01)
    return proc


# --------------------------------------------------------------------------- divergence
def test_diverged_state_is_never_checkpointed_and_the_message_names_a_finite_one(toy_overrides, toy_env):
    # a weight becomes inf after step 15 while that step's loss was finite: the checkpoint due
    # at step 15 must not be written, and the error must point at step 10's
    args = [*toy_overrides, "run_name=diverged", "method.inf_weight_at_step=14"]
    proc = subprocess.run([*LAUNCH, *args], env=toy_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    [line] = stderr_lines(proc)
    run_dir = run_dir_of(load_config("toy_paper", args))
    named = run_dir / "checkpoints" / "step_000000010.pt"
    assert line.startswith("error: 1 tensor(s) of the model and optimizer state became NaN or inf "
                           "(e.g. method.predictor.weight) at step 15")
    assert f"last finite checkpoint {named}." in line
    for fix in ("optim.lr (now 0.001)", "optim.warmup_epochs", "optim.clip_grad", "run_name or train.out_root",
                f"delete {run_dir}"):
        assert fix in line
    assert sorted(p.name for p in named.parent.iterdir()) == ["step_000000005.pt", "step_000000010.pt"]
    assert non_finite_tensors(torch.load(named, weights_only=False)) == []


def test_nan_loss_before_any_checkpoint_says_there_is_none(toy_overrides):
    cfg = load_config("toy_paper", [*toy_overrides, "run_name=early", "method.nan_at_step=2"])
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 2 \(epoch 0\) of .*; no finite checkpoint\."):
        train(cfg)


def test_a_poisoned_checkpoint_of_older_code_is_skipped_on_resume(toy_overrides, caplog):
    cfg = load_config("toy_paper", [*toy_overrides, "run_name=poisoned", "train.keep_checkpoints=3"])
    train(cfg)
    manager = CheckpointManager(run_dir_of(cfg), keep=3)
    (_, newest), (older_step, older) = manager.list()[:2]
    state = torch.load(newest, weights_only=False)
    state["optimizer"]["state"][0]["exp_avg"][0] = float("nan")
    torch.save(state, newest)
    assert non_finite_tensors(state) == ["optimizer.state.0.exp_avg"]
    state, path = manager.load_latest()
    assert (path, state["step"]) == (older, older_step)
    assert f"skipping checkpoint {newest}: 1 tensor(s) hold NaN or inf" in caplog.text
    assert newest.exists()  # kept for inspection


# --------------------------------------------------------------------------- Ctrl-C, resume, log
def test_sigint_stops_between_steps_saves_and_the_relaunch_resumes_exactly(toy_overrides, toy_env):
    common = [*toy_overrides, "train.epochs=3", "method.sleep_s=0.05"]
    reference = load_config("toy_paper", [*common, "run_name=ref"])
    train(reference)

    args = [*common, "run_name=sigint"]
    run_dir = run_dir_of(load_config("toy_paper", args))
    proc = launch_until_step(args, toy_env, run_dir, 12)  # past the step-10 checkpoint
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    [line] = [x for x in err.splitlines() if x.strip()]
    match = re.fullmatch(r"interrupted toy_paper/smoke/sigint at step (\d+); last checkpoint (\S+); "
                         r"relaunch the same command to resume", line)
    assert match, line
    step, checkpoint = int(match.group(1)), Path(match.group(2))
    assert 12 <= step < 30 and checkpoint == run_dir / "checkpoints" / f"step_{step:09d}.pt"
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["step"] == step and saved["train_time_s"] > 0
    assert logged_steps(run_dir) == list(range(1, step + 1))
    assert not (run_dir / "done.json").exists()

    done = subprocess.run([*LAUNCH, *args], env=toy_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed toy_paper/smoke/sigint at step {step} from {checkpoint}" in done.stderr.splitlines()
    assert logged_steps(run_dir) == logged_steps(run_dir_of(reference)) == list(range(1, 31))
    resumed = torch.load(run_dir / "encoder.pt", weights_only=False)["state_dict"]
    expected = torch.load(run_dir_of(reference) / "encoder.pt", weights_only=False)["state_dict"]
    assert resumed.keys() == expected.keys() and all(torch.equal(resumed[k], expected[k]) for k in resumed)
    # the training time adds up over both sessions
    assert json.loads((run_dir / "done.json").read_text())["train_time_s"] > saved["train_time_s"]


def test_a_second_sigint_stops_at_once_without_a_mid_step_checkpoint(toy_overrides, toy_env):
    args = [*toy_overrides, "method.sleep_s=2.0", "run_name=twice"]
    run_dir = run_dir_of(load_config("toy_paper", args))
    proc = launch_until_step(args, toy_env, run_dir, 6)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)  # well inside the next two-second step
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    checkpoint = run_dir / "checkpoints" / "step_000000005.pt"
    assert [x for x in err.splitlines() if x.strip()] == [
        f"interrupted toy_paper/smoke/twice; last checkpoint {checkpoint}; relaunch the same command to resume"]
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [checkpoint.name]


def test_truncate_log_drops_later_steps_and_a_torn_last_line_only(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 8)]
    lines.insert(3, json.dumps({"note": "no step"}))
    path.write_text("\n".join(lines) + "\n" + '{"step": 8, "lo')
    truncate_log(path, 5)
    assert path.read_text() == "\n".join(lines[:6]) + "\n"
    truncate_log(path, 5)  # idempotent
    assert path.read_text() == "\n".join(lines[:6]) + "\n"
    truncate_log(tmp_path / "absent.jsonl", 3)
    assert not (tmp_path / "absent.jsonl").exists()


def test_reexport_from_the_final_checkpoint_keeps_the_training_cost(toy_overrides):
    # `dvc repro` deletes a stage's outputs (encoder.pt, done.json) before re-running it; the
    # checkpoints survive and the run is re-exported from the final one without training
    cfg = load_config("toy_paper", [*toy_overrides, "run_name=reexport", "train.epochs=2"])
    first = train(cfg)
    run_dir = run_dir_of(cfg)
    final = torch.load(CheckpointManager(run_dir).list()[0][1], weights_only=False)
    assert final["step"] == first["steps"] == 20
    assert 0 < final["train_time_s"] <= first["train_time_s"]
    for name in ("encoder.pt", "encoder.pt.sha256", "done.json"):
        (run_dir / name).unlink()
    again = train(cfg)
    assert again["encoder_sha256"] == first["encoder_sha256"]
    done = json.loads((run_dir / "done.json").read_text())
    assert done["train_time_s"] >= final["train_time_s"]
    assert done["peak_memory_mb"] >= final["peak_memory_mb"] > 0


# --------------------------------------------------------------------------- corrupt files
@pytest.fixture
def encoder_file(tmp_path) -> Path:
    vit = ViT(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=1, num_heads=2)
    path = tmp_path / "enc" / "encoder.pt"
    export_encoder(vit, path, {"img_size": 8, "in_chans": 1, "mean": [0.0], "std": [1.0], "feature": "cls"})
    return path


@pytest.mark.parametrize("damage", ["truncated", "not_torch"])
def test_a_corrupt_encoder_is_named_in_one_line(encoder_file, damage):
    raw = encoder_file.read_bytes()
    encoder_file.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"a text file\n")
    with pytest.raises(CorruptCheckpointError, match=f"^checkpoint {re.escape(str(encoder_file))} is corrupt "
                                                     "or not a torch file .*dvc pull") as err:
        load_encoder(encoder_file)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("with_out", [False, True])
def test_eval_launch_prints_a_corrupt_checkpoint_in_one_line(encoder_file, tmp_path, toy_env, with_out):
    raw = encoder_file.read_bytes()
    encoder_file.write_bytes(raw[: len(raw) // 3])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = [f"out={tmp_path / 'results'}"] if with_out else []
    proc = subprocess.run([*EVAL, f"checkpoint={encoder_file}", "protocol=knn", "data=digits", *out],
                          env=toy_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    [line] = stderr_lines(proc)
    assert line.startswith(f"error: checkpoint {encoder_file} is corrupt or not a torch file")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- data root and files
def test_a_missing_data_root_is_refused_not_created(tmp_path, toy_overrides, toy_env):
    root = tmp_path / "nonexistent"
    for name in ("fashion_mnist", "mnist5k"):
        with pytest.raises(data.DatasetNotFoundError,
                           match=f"^data root {root} does not exist; prepare it with "
                                 f"`python -m common.data prepare --root {root}`"):
            data.get_dataset(name, "train", root=root)
    args = [*toy_overrides, "run_name=noroot", "data.name=fashion_mnist", f"data.root={root}"]
    proc = subprocess.run([*LAUNCH, *args], env=toy_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert stderr_lines(proc) == [f"error: data root {root} does not exist; prepare it with "
                                  f"`python -m common.data prepare --root {root}` or point data.root "
                                  "(eval/launch.py: root=) at a prepared one"]
    assert not root.exists()


@pytest.mark.parametrize("damage", ["truncated", "not_gzip"])
def test_prepare_repairs_a_damaged_fashion_mnist_file(tmp_path, damage):
    root = tmp_path / "data"
    root.mkdir()
    data.prepare_fashion_mnist(root)
    bad = root / "fashion_mnist" / "train-labels-idx1-ubyte.gz"
    good_sha = sha256_file(bad)
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"not gzip")
    with pytest.raises(data.ChecksumError) as err:
        data.get_dataset("fashion_mnist", "train", root=root)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{bad.resolve()} is truncated or not gzip")
    assert message.endswith(f"`python -m common.data prepare --root {root.resolve()}` replaces it")
    assert data.main(["prepare", "--root", str(root)]) == 0
    assert sha256_file(bad) == good_sha
    assert len(data.get_dataset("fashion_mnist", "train", root=root)) == 60000


def test_prepare_repairs_a_truncated_mnist5k_copy(tmp_path):
    data.prepare_mnist5k(tmp_path)
    path = tmp_path / "mnist5k" / "mnist5k.npz"
    good_sha = sha256_file(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(data.ChecksumError, match=f"^{re.escape(str(path))} is truncated or not an MNIST-5k .npz"):
        data.get_dataset("mnist5k", "train", root=tmp_path)
    data.prepare_mnist5k(tmp_path)
    assert sha256_file(path) == good_sha


def test_a_damaged_system_copy_is_not_blamed_on_the_prepared_root(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in data.FASHION_MNIST_FILES:
        (source / f"{name}.gz").write_bytes((data.FASHION_MNIST_SYSTEM_DIR / f"{name}.gz").read_bytes())
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"labels")[:10])
    with pytest.raises(data.ChecksumError, match="is truncated or not gzip .*reinstall the system copy"):
        data.prepare_fashion_mnist(tmp_path / "data", source=source)
    assert os.listdir(source)  # the source is never touched


def test_non_finite_tensors_names_exactly_the_tensors_holding_nan_or_inf():
    # finite tensors whose sum overflows fp32 (the fast path's accumulator) are not reported
    overflowing = torch.full((10,), 3e38)
    state = {"ok": torch.zeros(3), "ints": torch.tensor([1, 2]), "scalar": 3.0, "big": overflowing,
             "big64": torch.tensor([1e308, 1e308], dtype=torch.float64),
             "nested": [torch.tensor([1.0, float("nan")]), {"bf16": torch.tensor([float("-inf")]).bfloat16()}],
             "inf64": torch.tensor([float("inf"), 1.0], dtype=torch.float64)}
    assert non_finite_tensors(state) == ["nested.0", "nested.1.bf16", "inf64"]
    assert non_finite_tensors(torch.tensor([float("nan")])) == ["<tensor>"]
    assert non_finite_tensors({"empty": {}}) == []
