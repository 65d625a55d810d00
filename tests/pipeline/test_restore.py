"""scripts/restore.py: the rebuild door where the DVC remote is missing, and run directories
that a failed `dvc pull` leaves behind."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from common.config import load_config
from common.train import run_dir_of, train
from dvc_copy import DVC, GIT, REPO, run

spec = importlib.util.spec_from_file_location("restore", REPO / "scripts/restore.py")
restore = importlib.util.module_from_spec(spec)
spec.loader.exec_module(restore)

ENCODER = "runs/bootleg/smoke/bootleg/encoder.pt"  # the copy's pipeline runs at scale=smoke
TINY = ["train.epochs=1", "data.train_subset=70"]  # two steps of the toy method


def record(path, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": path.stem, "metrics": {}, **fields}))


def test_expected_times_come_from_the_records_of_the_current_config(tmp_path):
    runs = {"r": {"paper": "p"}}
    record(tmp_path / "p/mini/r/knn.json", paper="p", run="r", config_hash="now", wall_time_s=5.0, train_time_s=70.0)
    record(tmp_path / "p/mini/r/linear.json", paper="p", run="r", config_hash="now", wall_time_s=7.0, train_time_s=70.0)
    record(tmp_path / "cross/mini/r/knn.json", paper="p", run="r", config_hash="now", wall_time_s=2.0)
    record(tmp_path / "cross/mini/r/mnist5k/knn.json", paper="p", run="r", config_hash="now", wall_time_s=1.0)
    record(tmp_path / "cross/mini/r/old.json", paper="p", run="r", config_hash="before", wall_time_s=100.0)
    record(tmp_path / "cross/smoke/r/knn.json", paper="p", run="r", config_hash="now", wall_time_s=1000.0)
    hashes = {"r": "now"}
    assert restore.expected_seconds("pretrain@r", runs, "mini", tmp_path, hashes) == 70.0  # once per run
    assert restore.expected_seconds("eval@r", runs, "mini", tmp_path, hashes) == 15.0
    assert restore.expected_seconds("pretrain@r", runs, "mini", tmp_path, {"r": "changed"}) is None
    assert restore.expected_seconds("tables", runs, "mini", tmp_path, hashes) is None
    # a seed run's stages read the seed run's own records, of its own config
    runs["r-seed1"] = {"paper": "p", "base": "r", "seed_index": 1}
    record(tmp_path / "p/mini/r-seed1/knn.json", paper="p", run="r-seed1", config_hash="s1", wall_time_s=3.0, train_time_s=60.0)
    record(tmp_path / "cross/mini/r-seed1/knn.json", paper="p", run="r-seed1", config_hash="s1", wall_time_s=2.0)
    assert restore.expected_seconds("pretrain_seed@r-seed1", runs, "mini", tmp_path, {**hashes, "r-seed1": "s1"}) == 60.0
    assert restore.expected_seconds("eval_seed@r-seed1", runs, "mini", tmp_path, {**hashes, "r-seed1": "s1"}) == 5.0
    assert restore.expected_seconds("eval_seed@r-seed1", runs, "mini", tmp_path, hashes) is None
    # a paper's floors: those of its table's experiment at that scale only
    record(tmp_path / "p/floors-exp-mini/pixels/knn.json", wall_time_s=4.0)
    record(tmp_path / "p/floors-exp-mini/random-init-timm/knn.json", wall_time_s=6.0)
    record(tmp_path / "p/floors-other-mini/pixels/knn.json", wall_time_s=100.0)
    record(tmp_path / "cross/floors-cross-mini/pixels/knn.json", wall_time_s=9.0)
    papers = {"p": {"experiment": "exp"}}
    assert restore.expected_seconds("floors@p", runs, "mini", tmp_path, hashes, papers) == 10.0
    assert restore.expected_seconds("floors@p", runs, "smoke", tmp_path, hashes, papers) is None
    assert restore.expected_seconds("floors_cross", runs, "mini", tmp_path, hashes, papers) == 9.0
    assert [restore.duration(s) for s in (None, 12.4, 63.5, 700.6)] == [
        "no measured time", "expected ~12 s", "expected ~1 min", "expected ~12 min"]


def test_a_failed_pull_is_told_apart_as_missing_files_or_an_unreachable_remote():
    # the two messages of dvc 3.67: a remote without the files, an SSH remote whose port is closed
    missing = ("WARNING: Some of the cache files do not exist neither locally nor on remote. Missing cache files:\n"
               "md5: 9141d5e8c61666b43e26a70e6fe12b7d\nERROR: failed to pull data from the cloud - Checkout failed")
    closed = ("ERROR: failed to connect to ssh (/tmp/x/files/md5) - [Errno 111] Connect call failed "
              "('127.0.0.1', 1)\n")
    assert restore.pull_failure(missing) == "lacks some of the pinned files"
    assert restore.pull_failure(closed) == ("is unreachable (ERROR: failed to connect to ssh (/tmp/x/files/md5) - "
                                            "[Errno 111] Connect call failed ('127.0.0.1', 1))")


def test_stages_come_with_what_they_need_in_runnable_order():
    pipeline = restore.Pipeline()
    # floors are built from run configs, not encoders
    assert pipeline.closure(["floors@bootleg"]) == ["data", "floors@bootleg"]
    assert pipeline.closure(["floors_cross"]) == ["data", "floors_cross"]
    assert {"floors@bootleg", "floors_cross"} <= pipeline.needs["table@bootleg"]
    assert pipeline.closure(["pretrain@hybrid_clip"]) == ["data", "teachers", "pretrain@hybrid_clip"]
    everything = pipeline.closure(pipeline.order)
    assert len(everything) == len(pipeline.order) and everything[-1] == "tables"
    assert all(pipeline.needs[s] <= set(everything[:i]) for i, s in enumerate(everything))


def test_a_run_directory_left_empty_by_a_failed_pull_trains_normally(tmp_path):
    cfg = load_config("toy_paper", [f"train.out_root={tmp_path}/runs", f"results_root={tmp_path}/results",
                                    "train.progress=false", *TINY, "run_name=pulled"])
    run_dir_of(cfg).mkdir(parents=True)
    summary = train(cfg)
    assert summary["steps"] > 0 and (run_dir_of(cfg) / "encoder.pt").is_file()


def test_a_pulled_done_json_without_encoder_is_set_aside_not_reused(tmp_path):
    cfg = load_config("toy_paper", [f"train.out_root={tmp_path}/runs", f"results_root={tmp_path}/results",
                                    "train.progress=false", *TINY, "run_name=half-pulled"])
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True)
    stale = {"train_time_s": 12345.0, "hardware": "elsewhere", "git_commit": "0" * 40, "peak_memory_mb": 1.0}
    (run_dir / "done.json").write_text(json.dumps(stale))
    summary = train(cfg)
    done = json.loads((run_dir / "done.json").read_text())
    assert summary["steps"] > 0 and done["train_time_s"] != 12345.0 and done["git_commit"] != "0" * 40
    [orphan] = run_dir.glob("done.orphaned.*.json")
    assert json.loads(orphan.read_text()) == stale


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in the test environment")
def test_missing_remote_one_line_then_repro_then_pinned_hashes_match(copy):
    repo, env = copy
    remote = repo.parent / "remote"
    assert not remote.exists()
    # what a plain `dvc pull` does without the remote: it fails and leaves an empty run directory
    failed = subprocess.run([str(DVC), "pull", "pretrain@bootleg"], cwd=repo, env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and (repo / "runs/bootleg/smoke/bootleg").is_dir()
    assert not any((repo / "runs/bootleg/smoke/bootleg").iterdir())

    def restore_in_copy(expected_code):
        proc = subprocess.run([sys.executable, "scripts/restore.py", "pretrain@bootleg"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=1500)
        assert proc.returncode == expected_code, proc.stdout + proc.stderr[-3000:]
        return [line for line in proc.stdout.splitlines() if line.startswith(("restore:", "["))]

    # the committed dvc.lock pins the mini scale, whose run directories are other paths: the smoke
    # rebuild's data match their pins and its encoder is said to be unpinned, not silently skipped
    lines = restore_in_copy(0)
    assert lines[0] == (f"restore: remote 'local' ({remote}) does not exist; "
                        "rebuilding 2 stage(s) with dvc repro")
    assert sum("remote" in line for line in lines) == 1
    assert lines[1] == ("restore: removed empty directories left by a failed pull: runs/bootleg/smoke/bootleg, "
                        "runs/bootleg/smoke, runs/bootleg, runs")
    assert lines[2] == "restore: no expected times: the committed records are of scale mini, params.yaml asks for smoke"
    assert lines[3:5] == ["[1/2] data (no measured time)", "[2/2] pretrain@bootleg (no measured time)"]
    assert lines[5] == f"restore: dvc.lock pinned no hash for {ENCODER} (a lock of another scale pins other " \
                       "run directories); not compared"
    assert lines[6].startswith("restore: all 2 rebuilt outputs match the hashes pinned in dvc.lock")

    # pinned at smoke now: a clone without the encoder and without any cache rebuilds it bit for bit
    run([*GIT, "add", "dvc.lock"], repo, env)
    run([*GIT, "commit", "-qm", "smoke pins"], repo, env)
    pinned_sha = json.loads((repo / "runs/bootleg/smoke/bootleg/done.json").read_text())["encoder_sha256"]
    shutil.rmtree(repo / "runs")
    shutil.rmtree(repo / ".dvc/cache")
    lines = restore_in_copy(0)
    assert lines[-1].startswith("restore: all 3 rebuilt outputs match the hashes pinned in dvc.lock")
    assert json.loads((repo / "runs/bootleg/smoke/bootleg/done.json").read_text())["encoder_sha256"] == pinned_sha
    status = run([str(DVC), "status", "pretrain@bootleg"], repo, env)
    assert "up to date" in status
