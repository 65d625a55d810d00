"""encoder.pt depends only on what was computed: two identical trainings in different run roots
at different commits give the same bytes; the commit is kept in done.json and the records."""
from __future__ import annotations

import json

import pytest
import torch

import common.train
from common.checkpoint import load_encoder, sha256_file
from common.config import load_config
from eval.api import evaluate


def smoke_training(root, commit, monkeypatch) -> dict:
    torch.set_num_threads(1)  # tiny matrices; also keeps the float reductions identical
    monkeypatch.setattr(common.train, "git_commit", lambda: commit)
    cfg = load_config("bootleg", ["scale=smoke", "run_name=provenance", f"train.out_root={root}/runs",
                                  f"results_root={root}/results", "data.train_subset=100",
                                  "data.batch_size=50", "train.epochs=1", "train.progress=false"])
    return common.train.train(cfg)


@pytest.fixture(scope="module")
def two_trainings(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return [smoke_training(tmp_path_factory.mktemp(name), commit, monkeypatch)
                for name, commit in (("first", "1" * 40), ("second", "2" * 40 + "-dirty"))]


def test_same_training_at_another_commit_and_root_gives_the_same_encoder_file(two_trainings):
    first, second = two_trainings
    assert first["run_dir"] != second["run_dir"]
    assert first["encoder_sha256"] == second["encoder_sha256"] == sha256_file(second["encoder"])
    _, meta, _ = load_encoder(first["encoder"])
    assert "git_commit" not in meta
    # nothing tied to the machine or the moment: no path, commit or host in the payload
    text = json.dumps(meta)
    for varying in (first["run_dir"], "1" * 40, first["hardware"]):
        assert varying not in text


def test_done_json_and_eval_records_carry_the_training_commit(two_trainings, tmp_path):
    first, second = two_trainings
    for summary, commit in ((first, "1" * 40), (second, "2" * 40 + "-dirty")):
        done = json.loads((common.train.Path(summary["run_dir"]) / "done.json").read_text())
        assert done["git_commit"] == commit and done["encoder_sha256"] == summary["encoder_sha256"]
    [record] = evaluate(second["encoder"], "knn", {"train_subset": 100, "val_subset": 50,
                                                   "knn": {"k": [5], "report_k": 5}, "cache_dir": None,
                                                   "progress": False}, out_dir=tmp_path)
    assert record["train_git_commit"] == "2" * 40 + "-dirty"
    assert record["git_commit"]  # the evaluating commit, as before


def test_a_done_json_of_another_encoder_gives_no_training_commit(two_trainings, tmp_path):
    first, _ = two_trainings
    run_dir = common.train.Path(first["run_dir"])
    copy = tmp_path / "encoder.pt"
    copy.write_bytes((run_dir / "encoder.pt").read_bytes())
    (tmp_path / "done.json").write_text(json.dumps({"encoder_sha256": "0" * 64, "git_commit": "f" * 40}))
    [record] = evaluate(copy, "knn", {"train_subset": 100, "val_subset": 50, "knn": {"k": [5], "report_k": 5},
                                      "cache_dir": None, "progress": False}, out_dir=tmp_path / "r")
    assert record["train_git_commit"] is None
