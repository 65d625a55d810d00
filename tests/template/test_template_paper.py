"""The template paper (docs/template_paper), copied as a new paper would be: it is discovered,
its launcher plans, trains and evaluates at smoke scale, its table renders, and the shared lists
(DVC runs, packages) pick it up without an edit to a shared file."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from common.papers import discover_papers

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "docs" / "template_paper"
NAME = "my_paper"


def copy_template(root: Path, name: str = NAME) -> Path:
    """What docs/ADDING_A_PAPER.md tells a user to do: copy, then set `paper:` to the new name."""
    paper = root / name
    shutil.copytree(TEMPLATE, paper, ignore=shutil.ignore_patterns("__pycache__"))
    config = paper / "configs" / "config.yaml"
    config.write_text(config.read_text().replace("paper: template_paper ", f"paper: {name} ", 1))
    return paper


@pytest.fixture
def repo(tmp_path):
    """A repository-shaped directory: the copied paper beside the shared top-level directories."""
    copy_template(tmp_path)
    for shared in ("common", "eval", "tests", "docs", "scripts", "results", ".git"):
        (tmp_path / shared).mkdir(exist_ok=True)
    (tmp_path / "eval" / "launch.py").write_text("")  # a launch.py alone does not make a paper
    (tmp_path / "data").symlink_to(REPO / "data")
    return tmp_path


def env(repo: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(REPO)]), "OMP_NUM_THREADS": "1"}


def launch(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"{NAME}/launch.py", *args], cwd=repo, env=env(repo),
                          capture_output=True, text=True, timeout=600)


def test_the_real_papers_are_discovered_and_the_template_in_docs_is_not():
    papers = discover_papers(REPO)
    assert {"bootleg", "sdssl", "hybrid_distill", "udi"} <= set(papers)
    assert not {"common", "eval", "tests", "docs", "scripts", "template_paper"} & set(papers)
    assert list(papers) == sorted(papers)


def test_a_copied_template_is_discovered_and_packaged(repo):
    assert discover_papers(repo) == (NAME,)
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(repo), exclude=find["exclude"])
    assert NAME in packages and not {"tests", "docs", "scripts", "results"} & set(packages)


def test_a_copy_whose_config_names_another_paper_is_refused(tmp_path):
    paper = tmp_path / "other_paper"
    shutil.copytree(TEMPLATE, paper)  # `paper:` left as template_paper
    out = subprocess.run([sys.executable, "other_paper/launch.py", "--dry-run", "scale=smoke"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "paper='template_paper'" in out.stderr and "set paper: other_paper" in out.stderr


def test_the_copied_paper_joins_the_dvc_run_list(repo, monkeypatch):
    from scripts.pipeline import collect

    monkeypatch.syspath_prepend(str(repo))
    # the repository's papers with the new one beside them, as scripts/pipeline.py would see them
    table = collect(papers=discover_papers(REPO) + discover_papers(repo))
    assert NAME in table["papers"]  # its table@<paper> stage
    runs = table["runs"]
    ours = {name: entry for name, entry in runs.items() if entry["paper"] == NAME}
    assert ours == {"cosine": {"paper": NAME, "extra_dep": f"{NAME}/configs"},
                    "cosine_no_crop": {"paper": NAME, "extra_dep": f"{NAME}/configs"}}


def test_smoke_dry_run_then_two_steps_and_knn_then_table(repo):
    dry = launch(repo, "--dry-run", "scale=smoke")
    assert dry.returncode == 0, dry.stderr
    assert "# ---- run cosine " in dry.stdout and "# ---- run cosine_no_crop " in dry.stdout
    assert not (repo / "runs").exists() and not (repo / "results" / NAME).exists()  # a dry run writes nothing

    out = launch(repo, "scale=smoke", "--only", "cosine", "train.max_steps=2")
    assert out.returncode == 0, out.stderr
    run_dir = repo / "runs" / NAME / "smoke" / "cosine"
    done = json.loads((run_dir / "done.json").read_text())
    assert done["steps"] == 2 and (run_dir / "encoder.pt").is_file()
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    # -cos of two vectors: the loss lies in [-1, 1]
    assert all(-1.0 <= r["loss"] <= 1.0 for r in log if "loss" in r)

    knn = json.loads((repo / "results" / NAME / "smoke" / "cosine" / "knn.json").read_text())
    assert knn["paper"] == NAME and knn["run"] == "cosine" and knn["method"] == "two_view_cosine"
    assert knn["checkpoint_sha256"] == done["encoder_sha256"]
    assert 0.0 <= knn["value"] <= 100.0

    # the floors stage of dvc.yaml and the table stage, as for every paper (eval/tables.py)
    floors = subprocess.run([sys.executable, "-m", "eval.tables", "floors", "--paper", NAME, "scale=smoke"],
                            cwd=repo, capture_output=True, text=True, env=env(repo), timeout=300)
    assert floors.returncode == 0, floors.stderr
    floor_dir = repo / "results" / NAME / "floors-mini-smoke"
    assert sorted(p.name for p in floor_dir.iterdir()) == ["pixels", "random-init-timm"]
    pixel_knn = json.loads((floor_dir / "pixels" / "knn.json").read_text())
    table = subprocess.run([sys.executable, f"{NAME}/tables.py", "scale=smoke"], cwd=repo, capture_output=True,
                           text=True, env=env(repo), timeout=300)
    assert table.returncode == 0, table.stderr
    assert f"| two_view_cosine (cosine) | {knn['value']:.1f} |" in table.stdout
    assert f"| floor: raw pixels | {pixel_knn['value']:.1f} |" in table.stdout
