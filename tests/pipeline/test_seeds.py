"""Pretraining seeds of the headline runs: the seed runs of dvc_runs.yaml, their configs (only
the training seed differs from seed 0) and their trimmed cross-paper evaluation."""
import pytest

from common.config import config_diff, config_hash, identity
from scripts import cross_eval, pipeline, seeds


def test_seed_runs_are_seeds_one_to_n_minus_one_of_every_headline_run():
    runs = {name: {"paper": paper, "extra_dep": f"{paper}/configs"}
            for paper, names in seeds.HEADLINE_RUNS.items() for name in names}
    table = seeds.seed_runs(runs, 3)
    assert len(table) == 2 * len(runs)
    assert table["bootleg-seed2"] == {"paper": "bootleg", "extra_dep": "bootleg/configs", "base": "bootleg", "seed_index": 2}
    assert table["hybrid_clip-seed1"]["base"] == "hybrid_clip"
    assert seeds.seed_runs(runs, 1) == {}


@pytest.mark.parametrize("bad", [0, -1, "3", 2.0, True])
def test_a_bad_seed_count_is_refused_naming_the_key(bad):
    with pytest.raises(SystemExit, match=r"params.yaml: seeds=.* is not a seed count"):
        seeds.seed_runs({}, bad)


def test_a_headline_run_missing_from_the_experiments_is_refused():
    with pytest.raises(SystemExit, match="headline run 'bootleg' of bootleg is not a run"):
        seeds.seed_runs({}, 2)


def test_committed_dvc_runs_is_up_to_date_with_params():
    assert pipeline.main(["--check"]) == 0


def test_two_papers_defining_one_run_name_are_refused(monkeypatch):
    """A DVC stage key is the run name alone (pretrain@<run>): a second paper's run of the same
    name would silently share its stages."""
    from common.launch import plan_runs

    toy = plan_runs("toy_paper", ["experiment=pair"])
    monkeypatch.setattr(pipeline, "plan_runs", lambda paper, overrides: toy)
    with pytest.raises(SystemExit, match=r"run name 'toy-a' is defined by both paper_a and paper_b: .*"
                                         r"rename it in the runs table of one paper's default experiment"):
        pipeline.collect(papers=("paper_a", "paper_b"))


@pytest.mark.parametrize("paper,base", [("bootleg", "bootleg"), ("hybrid_distill", "hybrid_clip")])
def test_a_seed_run_differs_from_seed_0_only_in_the_training_seed(paper, base):
    from common.launch import plan_runs
    from common.train import run_dir_of

    overrides = ["scale=mini", "train.out_root=runs", "results_root=results"]
    (spec0,) = plan_runs(paper, overrides, only=base)
    spec2 = seeds.seed_spec(paper, base, 2, overrides)
    assert spec2.name == spec2.cfg.run_name == f"{base}-seed2"
    assert int(spec2.cfg.train.seed) == int(spec0.cfg.train.seed) + 2
    assert [line.split(":")[0].strip() for line in config_diff(identity(spec0.cfg), identity(spec2.cfg))] \
        == ["train.seed"]
    # the hash guard of a run directory sees another run; and the directories differ
    assert config_hash(spec0.cfg) != config_hash(spec2.cfg)
    assert run_dir_of(spec2.cfg) == run_dir_of(spec0.cfg).with_name(f"{base}-seed2")
    assert spec2.cfg.experiment_name == spec0.cfg.experiment_name


def _calls(monkeypatch, trim):
    calls = []
    monkeypatch.setattr(cross_eval, "evaluate",
                        lambda enc, protocol, cfg, out_dir, run_info: calls.append((protocol, cfg, out_dir)))
    cross_eval.evaluate_all("enc.pt", cross_eval.Path("out"), "mini", trim=trim)
    return calls


def test_trimmed_cross_eval_is_knn_and_the_last_block_linear_head_only(monkeypatch):
    full = _calls(monkeypatch, trim=False)
    assert [c[0] for c in full] == ["knn", "linear", "attentive", "lowshot", "knn"]
    assert full[-1][2].name == "mnist5k" and "layers" not in full[1][1]
    trimmed = _calls(monkeypatch, trim=True)
    assert [c[0] for c in trimmed] == ["knn", "linear"]
    assert all(c[2] == cross_eval.Path("out") for c in trimmed)
    # the same per-layer grid as seed 0, restricted to the last block
    assert trimmed[1][1]["layers"] == 1 and trimmed[1][1]["linear"] == full[1][1]["linear"]


def test_cross_eval_finds_the_encoder_of_a_seed_run(monkeypatch):
    seen = []
    monkeypatch.setattr(cross_eval, "evaluate_all", lambda enc, out, scale, trim: seen.append((enc, out, trim)))
    # whatever seed count params.yaml holds, the table of a three-seed pipeline
    committed = cross_eval.runs_table()
    table = {**committed, **seeds.seed_runs(committed, 3)}
    monkeypatch.setattr(cross_eval, "runs_table", lambda seeds=False: table)
    assert cross_eval.main(["--run", "udi-seed1", "--trim", "--scale", "smoke", "--results-root", "res"]) == 0
    assert seen == [("runs/udi/smoke/udi-seed1/encoder.pt", cross_eval.Path("res/cross/smoke/udi-seed1"), True)]
