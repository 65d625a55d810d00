"""One naming scheme: run directories and records under <paper>/<scale>/<run>, run names without
the scale, and the old names (config keys, scale-prefixed run names) refused with their new one."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.config import ConfigError, load_config, run_location, save_run_config
from common.launch import TrainEvalJob, plan_runs
from common.train import run_dir_of
from common.validate import RENAMED_KEYS, renamed_key
from eval.api import evaluate_run
from eval.records import CROSS, records_dir

TOY = Path(__file__).resolve().parents[1] / "toy_paper"


def test_run_and_records_directories_are_paper_scale_run():
    where = run_location("sdssl", "smoke", "simclr", out_root="o", results_root="r")
    assert run_dir_of(where) == Path("o/sdssl/smoke/simclr")
    assert records_dir(where) == Path("r/sdssl/smoke/simclr")
    assert records_dir(where, CROSS) == Path("r/cross/smoke/simclr")
    # a composed config gives the same places, from its scale file's scale_name
    cfg = load_config("toy_paper", ["scale=mini", "run_name=r", "train.out_root=o", "results_root=r"])
    assert (run_dir_of(cfg), records_dir(cfg)) == (Path("o/toy_paper/mini/r"), Path("r/toy_paper/mini/r"))


def test_smoke_and_mini_runs_of_one_name_keep_their_own_directories_and_records(toy_overrides):
    """`scale=smoke` of a run that also exists at mini scale used to write into the mini run's
    directory and trip its config-hash guard; now each scale trains, resumes and records apart."""
    common = [*toy_overrides, "run_name=same", "eval.protocols=[knn]"]
    smoke, mini = (load_config("toy_paper", [*common, f"scale={s}"]) for s in ("smoke", "mini"))
    summaries = {s: TrainEvalJob("toy_paper", [*common, f"scale={s}"], after_train=evaluate_run)()
                 for s in ("smoke", "mini")}
    assert run_dir_of(smoke) != run_dir_of(mini)
    for cfg, summary in ((smoke, summaries["smoke"]), (mini, summaries["mini"])):
        assert summary["run_dir"] == str(run_dir_of(cfg)) and summary["records"] == 1
        assert (records_dir(cfg) / "knn.json").is_file()
    assert summaries["smoke"]["encoder_sha256"] != summaries["mini"]["encoder_sha256"]
    # had they shared a directory, the guard would have refused the second scale
    with pytest.raises(ConfigError, match="holds a run of another configuration"):
        save_run_config(mini, run_dir_of(smoke))
    # and the smoke run still resumes as itself: nothing to retrain, its encoder unchanged
    again = TrainEvalJob("toy_paper", [*common, "scale=smoke"])()
    assert again["encoder_sha256"] == summaries["smoke"]["encoder_sha256"]


@pytest.mark.parametrize("old,new", [("data.norm_stats", "data.stats"), ("data.crop_scale", "data.aug.crop_scale"),
                                     ("data.hflip", "data.aug.flip_p"), ("crop.n_local", "data.aug.n_local")])
def test_an_old_key_on_the_command_line_is_refused_with_its_new_name(old, new, toy_overrides):
    assert renamed_key(old) == new
    with pytest.raises(ConfigError, match=rf"^{old} was renamed {new}: set {new} instead"):
        load_config("toy_paper", [*toy_overrides, f"{old}=1"])
    with pytest.raises(ConfigError, match=rf"^{old} was renamed {new}"):
        load_config("toy_paper", [*toy_overrides, f"+{old}=1"])  # adding it on purpose too


def test_a_config_that_still_sets_an_old_key_is_refused(tmp_path, monkeypatch):
    paper = tmp_path / "old_names_paper"
    shutil.copytree(TOY, paper, ignore=shutil.ignore_patterns("__pycache__"))
    config = paper / "configs" / "config.yaml"
    text = config.read_text().replace("paper: toy_paper", "paper: old_names_paper")
    config.write_text(text + "crop:\n  n_local: 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"configs sets crop, which was renamed data.aug: rename the key"):
        load_config("old_names_paper")


@pytest.mark.parametrize("paper", ["bootleg", "sdssl", "hybrid_distill", "udi"])
def test_every_paper_names_its_stats_and_augmentation_alike(paper):
    cfg = load_config(paper, ["scale=smoke"])  # an old key anywhere in its configs would fail here
    assert cfg.data.stats == "fashion_mnist" and len(cfg.data.aug) > 0
    assert not {old.split(".")[0] for old in RENAMED_KEYS if "." not in old} & set(cfg)


def test_a_scale_prefixed_run_name_is_refused_with_the_new_name(toy_overrides):
    for old in ("smoke-toy-a", "mini_toy-a"):
        with pytest.raises(ConfigError, match=r"run names no longer carry the scale .*; use --only toy-a,toy-b$"):
            plan_runs("toy_paper", [*toy_overrides, "experiment=pair"], only=f"{old},toy-b")
    with pytest.raises(ConfigError, match=r"--only names unknown run\(s\) \['toy-c'\]"):
        plan_runs("toy_paper", [*toy_overrides, "experiment=pair"], only="toy-c")


@pytest.mark.parametrize("paper,old,new", [("sdssl", "mini-simclr", "simclr"),
                                           ("hybrid_distill", "mini_hybrid_clip", "hybrid_clip")])
def test_the_old_run_names_of_the_papers_point_to_the_new_ones(paper, old, new):
    with pytest.raises(ConfigError, match=rf"^--only {old}: run names no longer carry the scale .*; use --only {new}$"):
        plan_runs(paper, ["scale=smoke"], only=old)
