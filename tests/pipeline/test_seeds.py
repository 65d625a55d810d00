"""Pretraining seeds of the headline runs: the seed runs of dvc_runs.yaml, their configs (only
the training seed differs from seed 0) and their trimmed evaluations, the paper's own and the
cross-paper one."""
import json

import pytest
import yaml
from omegaconf import OmegaConf

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


def test_eval_seed_stage_runs_the_papers_trimmed_eval_then_the_cross_one():
    """eval_seed@<run>-seed<i> writes the seed's records of its paper's own protocols (what the
    paper tables read) and of the cross-paper ones (RESULTS.md), both declared as outputs."""
    stage = yaml.safe_load((seeds.REPO / "dvc.yaml").read_text())["stages"]["eval_seed"]["do"]
    first, second = stage["cmd"].split(" && ")
    assert first == ("python scripts/seeds.py --run ${key} --stage eval scale=${scale} "
                     "train.out_root=runs results_root=results")
    assert second == "python scripts/cross_eval.py --scale ${scale} --run ${key} --trim"
    assert {"scripts/seeds.py", "scripts/cross_eval.py", "${item.paper}", "eval", "common"} <= set(stage["deps"])
    assert [next(iter(out)) for out in stage["outs"]] == ["results/${item.paper}/${scale}/${key}",
                                                          "results/cross/${scale}/${key}"]
    # the same layout as eval@<run>'s records of seed 0
    eval_outs = yaml.safe_load((seeds.REPO / "dvc.yaml").read_text())["stages"]["eval"]["do"]["outs"]
    assert next(iter(eval_outs[0])) == "results/${item.paper}/${scale}/${key}"


@pytest.mark.parametrize("paper,base", [("sdssl", "sd_simclr"), ("udi", "udi"), ("hybrid_distill", "hybrid_clip")])
def test_a_seeds_paper_eval_is_knn_and_the_last_block_linear_head_only(paper, base):
    from eval.api import SEED_PROTOCOLS, seed_eval_cfg

    spec = seeds.seed_spec(paper, base, 1, ["scale=mini"])
    before = OmegaConf.to_container(spec.cfg, resolve=True)
    trimmed = seed_eval_cfg(spec.cfg)
    assert OmegaConf.to_container(spec.cfg, resolve=True) == before  # the run's config is not touched
    assert list(trimmed.eval.protocols) == [p for p in spec.cfg.eval.protocols if p in SEED_PROTOCOLS]
    assert trimmed.eval.layers == 1 and trimmed.eval.knn.per_layer is False
    assert trimmed.eval.get("linear") == spec.cfg.eval.get("linear")  # the paper's recipe and feature grid
    extras = OmegaConf.to_container(trimmed.extra_evals) if trimmed.get("extra_evals") else {}
    if paper == "udi":  # UDI+'s k-NN on the extra token stays (a k-NN cell of its table), its low-shot goes
        assert extras == {"cls_plus": {"token": "cls_plus", "protocols": ["knn"]}}
    else:
        assert extras == {}
    rest = {k: v for k, v in OmegaConf.to_container(trimmed, resolve=True).items() if k not in ("eval", "extra_evals")}
    assert rest == {k: v for k, v in before.items() if k not in ("eval", "extra_evals")}


@pytest.fixture
def one_thread():
    """A tiny ViT on a shared CPU: one intra-op thread is faster; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_eval_seed_command_writes_the_papers_trimmed_records_at_smoke_scale(tmp_path, monkeypatch, one_thread):
    """`scripts/seeds.py --stage eval` (the first half of eval_seed@) on a smoke seed run of
    SD-SimCLR, whose paper eval has a k-NN per block and a linear head per block: the seed's
    records are k-NN on the final token and the last block's head, under the metric names the
    SDSSL table reads, in the seed run's records directory. About 25 s on one thread."""
    from common.train import run_dir_of
    from eval.records import records_dir

    run = "sd_simclr-seed1"
    monkeypatch.setattr(seeds, "seed_table", lambda: {run: {"paper": "sdssl", "extra_dep": "sdssl/configs",
                                                             "base": "sd_simclr", "seed_index": 1}})
    overrides = ["scale=smoke", f"train.out_root={tmp_path}/runs", f"results_root={tmp_path}/results",
                 f"data.root={seeds.REPO}/data", f"+eval.cache_dir={tmp_path}/cache", "train.epochs=1"]
    assert seeds.main(["--run", run, *overrides]) == 0
    assert seeds.main(["--run", run, "--stage", "eval", *overrides]) == 0

    cfg = seeds.seed_spec("sdssl", "sd_simclr", 1, overrides).cfg
    out = records_dir(cfg)
    assert out == tmp_path / "results" / "sdssl" / "smoke" / run
    assert sorted(p.name for p in out.rglob("*.json")) == ["knn.json", "linear.json"]
    knn, linear = (json.loads((out / f"{p}.json").read_text()) for p in ("knn", "linear"))
    depth = int(cfg.model.depth)
    assert knn["metric"] == "knn/cls/k20/top1" and not any("@" in k for k in knn["metrics"])
    assert linear["features"] == [f"cls@{depth}"] and f"linear/cls@{depth}/best/top1" in linear["metrics"]
    done = json.loads((run_dir_of(cfg) / "done.json").read_text())
    assert knn["run"] == run and knn["checkpoint_sha256"] == done["encoder_sha256"]
