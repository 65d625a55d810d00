"""`git_commit` marks a checkout dirty for code and config changes, not for what the pipeline writes."""
import subprocess

import pytest

from common.provenance import git_commit

FILES = ("common/x.py", "paper/configs/config.yaml", "paper/launch.py", "paper/README.md", "docs/NOTES.md",
         "results/paper/mini/run/knn.json", "tables/paper.md", "docs/results/plot.png", "RESULTS.md",
         "dvc.lock")


def _git(root, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "init")
    return tmp_path


def test_a_clean_checkout_is_its_sha(repo):
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("written", ["results/paper/mini/run/knn.json", "tables/paper.md", "docs/results/plot.png",
                                     "RESULTS.md", "dvc.lock", "paper/README.md"])
def test_files_the_pipeline_writes_do_not_make_it_dirty(repo, written):
    (repo / written).write_text("v2\n")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("changed", ["common/x.py", "paper/configs/config.yaml", "docs/NOTES.md"])
def test_code_config_and_docs_changes_make_it_dirty(repo, changed):
    (repo / changed).write_text("v2\n")
    (repo / "results/paper/mini/run/knn.json").write_text("v2\n")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD") + "-dirty"


def test_a_staged_change_is_dirty_too(repo):
    (repo / "common/x.py").write_text("v2\n")
    _git(repo, "add", "common/x.py")
    assert git_commit(repo).endswith("-dirty")
