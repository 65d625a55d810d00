"""A real network remote end to end: push one smoke stage's outputs over SSH (the local server
of tests/dvc/sshd.sh), pull them into a second clone, and evaluate the pulled encoder there."""
from __future__ import annotations

import json
import sys

import pytest

from dvc_copy import DVC, GIT, run, sshd_settings

pytestmark = pytest.mark.dvcremote
ENCODER = "runs/bootleg/smoke/bootleg/encoder.pt"  # the copy's pipeline runs at scale=smoke
DONE = "runs/bootleg/smoke/bootleg/done.json"
# the smoke eval settings of scripts/cross_eval.py
KNN = ["protocol=knn", "train_subset=1000", "val_subset=200", "knn.k=[5]", "knn.report_k=5", "progress=false",
       "cache_dir=null"]


def use_ssh_remote(repo, env, storage) -> None:
    """The README's SSH remote commands: URL committed, key file only in .dvc/config.local."""
    ssh = sshd_settings()
    url = f"ssh://{ssh['SSHD_USER']}@{ssh['SSHD_HOST']}:{ssh['SSHD_PORT']}{storage}"
    run([str(DVC), "remote", "add", "-f", "-d", "ssh", url], repo, env)
    run([str(DVC), "remote", "modify", "--local", "ssh", "keyfile", ssh["SSHD_KEY"]], repo, env)


def test_push_over_ssh_pull_in_a_second_clone_and_evaluate_there(copy, tmp_path):
    repo, env = copy
    storage = tmp_path / "ssh-storage"
    use_ssh_remote(repo, env, storage)
    run([str(DVC), "repro", "pretrain@bootleg"], repo, env, timeout=1500)
    run([*GIT, "add", "-A"], repo, env)
    run([*GIT, "commit", "-qm", "smoke pretrain@bootleg"], repo, env)
    run([str(DVC), "push", "pretrain@bootleg"], repo, env)
    assert any(p.is_file() for p in storage.rglob("*")), "nothing arrived in the SSH remote's directory"
    first = run([sys.executable, "eval/launch.py", f"checkpoint={ENCODER}", *KNN, "out=first"], repo, env)
    record = json.loads((repo / "first/knn.json").read_text())

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / ENCODER).exists()
    use_ssh_remote(clone, env, storage)  # .dvc/config.local (the key) is not cloned
    run([str(DVC), "pull", "pretrain@bootleg"], clone, {**env, "PYTHONPATH": str(clone)})
    for name in (ENCODER, DONE):
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name

    clone_env = {**env, "PYTHONPATH": str(clone)}
    pulled = run([sys.executable, "eval/launch.py", f"checkpoint={ENCODER}", *KNN, "out=pulled",
                  f"root={repo}/data"], clone, clone_env)
    again = json.loads((clone / "pulled/knn.json").read_text())
    assert again["checkpoint_sha256"] == record["checkpoint_sha256"]
    assert again["value"] == record["value"], (first, pulled)
    # the training commit reaches the record through the pulled done.json
    assert again["train_git_commit"] == record["train_git_commit"] == json.loads((repo / DONE).read_text())["git_commit"]
