"""The training loop: exact resume after SIGKILL, corrupt checkpoints, DDP equivalence, NaN guard."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.checkpoint import CheckpointManager, load_encoder
from common.config import load_config
from common.train import NonFiniteLossError, final_loss, run_dir_of, train

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, str(REPO / "tests/toy_paper/launch.py")]


def encoder_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "encoder.pt", weights_only=False)["state_dict"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_toy_run_trains_exports_and_lowers_loss(toy_overrides):
    cfg = load_config("toy_paper", [*toy_overrides, "run_name=plain", "train.epochs=4"])
    summary = train(cfg)
    run_dir = run_dir_of(cfg)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and log[-1]["step"] == summary["steps"] == 40
    assert final_loss(run_dir) < log[0]["loss"]
    vit, meta, sha = load_encoder(run_dir / "encoder.pt")
    assert sha == summary["encoder_sha256"] == (run_dir / "encoder.pt.sha256").read_text().split()[0]
    assert meta["run"] == "plain" and meta["config_hash"] == summary["config_hash"]
    assert vit(torch.zeros(2, 1, 8, 8)).tokens.shape == (2, 1 + 16, 32)
    # The loop's wall time per phase: each log line since the previous one, done.json the session's.
    phases = ("data", "step", "monitor", "ckpt", "log")
    for r in log:
        assert all(r[f"time_{p}_s"] >= 0 for p in phases)
        assert sum(r[f"time_{p}_s"] for p in phases) <= r["time_wall_s"]
    loop = json.loads((run_dir / "done.json").read_text())["loop_time_s"]
    assert loop == summary["loop_time_s"] and loop.keys() == {"wall", *phases}
    assert loop["step"] > 0 and loop["ckpt"] > 0 and sum(loop[p] for p in phases) <= loop["wall"]
    assert sum(r["time_step_s"] for r in log) == pytest.approx(loop["step"])  # every step was logged
    # A finished run is not retrained (and nothing is overwritten) when launched again.
    mtime = (run_dir / "encoder.pt").stat().st_mtime_ns
    assert train(cfg)["encoder_sha256"] == sha
    assert (run_dir / "encoder.pt").stat().st_mtime_ns == mtime


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(toy_overrides, toy_env):
    common = [*toy_overrides, "train.epochs=3", "method.sleep_s=0.05"]
    ref = load_config("toy_paper", [*common, "run_name=ref"])
    train(ref)

    killed = [*common, "run_name=killed"]
    ckpt_dir = run_dir_of(load_config("toy_paper", killed)) / "checkpoints"
    proc = subprocess.Popen([*LAUNCH, *killed], env=toy_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    target = ckpt_dir / "step_000000015.pt"  # mid second epoch (10 steps per epoch)
    while not target.exists():
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
        assert time.time() < deadline, "no mid-epoch checkpoint appeared"
        time.sleep(0.01)
    time.sleep(0.12)  # let it take a couple more steps that the resume must redo
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (ckpt_dir.parent / "done.json").exists()

    done = subprocess.run([*LAUNCH, *killed], env=toy_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stderr or (ckpt_dir.parent / "done.json").exists()
    assert_bitwise_equal(encoder_state(run_dir_of(ref)), encoder_state(ckpt_dir.parent))
    # the steps logged after step 15 before the kill were dropped when the run resumed there
    steps = [json.loads(line)["step"] for line in (ckpt_dir.parent / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))


def test_truncated_latest_checkpoint_falls_back_with_warning(toy_overrides, caplog):
    cfg = load_config("toy_paper", [*toy_overrides, "run_name=c", "train.keep_checkpoints=3"])
    train(cfg)
    manager = CheckpointManager(run_dir_of(cfg), keep=3)
    (newest_step, newest), (older_step, older) = manager.list()[:2]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])
    before = sorted(p.name for p in manager.dir.iterdir())
    with caplog.at_level(logging.WARNING):
        state, path = manager.load_latest()
    assert path == older and state["step"] == older_step
    assert "skipping unloadable checkpoint" in caplog.text and newest.name in caplog.text
    assert sorted(p.name for p in manager.dir.iterdir()) == before  # nothing deleted


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(toy_overrides, toy_env):
    args = [*toy_overrides, "run_name=nanrun", "method.nan_at_step=12"]
    proc = subprocess.run([*LAUNCH, *args], env=toy_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "loss became nan at step 12" in proc.stderr
    run_dir = run_dir_of(load_config("toy_paper", args))
    state, path = CheckpointManager(run_dir).load_latest()
    assert state["step"] == 10 and path.name == "step_000000010.pt"
    assert not (run_dir / "encoder.pt").exists()
    with pytest.raises(NonFiniteLossError, match="at step 12"):
        train(load_config("toy_paper", args))


def test_two_gloo_processes_equal_one_process_with_double_batch(toy_overrides, toy_env, tmp_path):
    common = [*toy_overrides, "train.epochs=1", "data.batch_size=32"]
    single = load_config("toy_paper", [*common, "run_name=single"])
    train(single)
    ddp = [*common, "run_name=ddp"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "common.launch", "worker", "toy_paper", *ddp]
    proc = subprocess.run(cmd, env=toy_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_dir = run_dir_of(load_config("toy_paper", ddp))
    assert json.loads((ddp_dir / "done.json").read_text())["world_size"] == 2
    a, b = encoder_state(run_dir_of(single)), encoder_state(ddp_dir)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs")
    # and the runs really trained: the exported teacher moved away from its initialisation
    from common.train import seed_everything
    from toy_paper.model import build_method, build_train_data
    seed_everything(single.train.seed)
    build_train_data(single)
    init = build_method(single, 10).encoder_for_eval().state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)


def test_max_steps_and_per_process_batch_keep_the_full_runs_schedule(toy_overrides):
    from common.config import config_hash

    full = load_config("toy_paper", [*toy_overrides, "run_name=full", "train.epochs=3"])
    capped = load_config("toy_paper", [*toy_overrides, "run_name=capped", "train.epochs=3",
                                       "train.max_steps=5", "data.per_process_batch=4"])
    # null (the default) leaves the hash of existing runs alone; a cap is part of the identity
    assert config_hash(full) == config_hash(load_config("toy_paper", [*toy_overrides, "run_name=full",
                                                                       "train.epochs=3", "train.max_steps=null"]))
    assert config_hash(capped) != config_hash(full)
    train(full)
    summary = train(capped)
    assert summary["steps"] == 5
    full_log = [json.loads(line) for line in (run_dir_of(full) / "log.jsonl").read_text().splitlines()]
    capped_log = [json.loads(line) for line in (run_dir_of(capped) / "log.jsonl").read_text().splitlines()]
    # steps per epoch (and so warm-up, lr and wd) follow the global batch, not the 4 images per step
    assert [r["lr"] for r in capped_log] == [r["lr"] for r in full_log[:5]]
    assert [r["wd"] for r in capped_log] == [r["wd"] for r in full_log[:5]]
    assert CheckpointManager(run_dir_of(capped)).list()[0][0] == 5  # the stop point is saved


def test_fused_attn_switch_reaches_every_attention_layer_of_the_method(toy_overrides, caplog):
    caplog.set_level(logging.INFO, logger="common.train")
    cfg = load_config("toy_paper", [*toy_overrides, "run_name=explicit", "train.fused_attn=false",
                                    "train.max_steps=1"])
    train(cfg)
    # the toy method: a student and an EMA teacher ViT, 2 blocks each (tests/toy_paper/configs)
    depth = int(cfg.model.depth)
    assert f"attention: explicit in {2 * depth} layers (train.fused_attn=false)" in caplog.text
