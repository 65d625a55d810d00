"""Claims over seeds: paired t-intervals and verdicts (scripts/claims.py), and RESULTS.md's
mean ± std cells (eval/stats.py) and Claims section rendered from fake records (scripts/results.py)."""
import json
import math

import pytest
import yaml

from eval.stats import mean_pm_std, mean_std
from scripts import claims, results, seeds

T_975_2 = 4.302653  # Student t, 97.5% quantile, 2 degrees of freedom (printed tables)


def test_interval_of_three_known_differences_matches_the_t_table():
    diffs = [1.0, 2.0, 4.0]
    mean = 7 / 3
    sd = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2) / 2)
    half = T_975_2 * sd / math.sqrt(3)
    got_mean, low, high = claims.paired_interval(diffs)
    assert got_mean == pytest.approx(mean)
    assert low == pytest.approx(mean - half, abs=1e-5) and high == pytest.approx(mean + half, abs=1e-5)


def test_verdicts_follow_the_side_of_zero_the_interval_is_on():
    assert claims.verdict(*claims.paired_interval([3.0, 4.0, 5.0])[1:]) == "holds"
    assert claims.verdict(*claims.paired_interval([-3.0, -4.0, -5.0])[1:]) == "reversed"
    # mean +0.5 but spread across zero
    assert claims.verdict(*claims.paired_interval([-1.0, 2.0, 0.5])[1:]) == "within noise"


def test_one_seed_gives_no_interval():
    mean, low, high = claims.paired_interval([2.5])
    assert (mean, low, high) == (2.5, None, None)
    assert claims.verdict(low, high) == "one seed: no interval"
    with pytest.raises(ValueError, match="at least one"):
        claims.paired_interval([])


def test_assess_pairs_the_same_seed_index_only():
    got = claims.assess({0: 10.0, 1: 12.0, 2: 11.0}, {0: 9.0, 2: 10.5, 3: 50.0})
    assert got["seeds"] == [0, 2] and got["differences"] == [1.0, 0.5]
    assert claims.assess({1: 1.0}, {0: 1.0}) is None


def test_sample_std_divides_by_n_minus_one():
    """One mean ± std for RESULTS.md, the claims and the paper tables (eval/stats.py)."""
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, None)
    assert mean_pm_std([50.0, 52.0, 54.0]) == "52.0 ± 2.0"
    assert mean_pm_std([67.54, 67.51, 67.49]) == "67.51 ± 0.03"  # not "± 0.0": seeds that agree say how well
    with pytest.raises(ValueError, match="at least two"):
        mean_pm_std([4.0])


def test_every_claim_compares_two_headline_runs_of_its_paper():
    from scripts.seeds import HEADLINE_RUNS
    for claim in claims.CLAIMS:
        assert {claim.better, claim.worse} <= set(HEADLINE_RUNS[claim.paper]), claim


def _write(root, run, protocol, value, metrics):
    d = root / run
    d.mkdir(parents=True, exist_ok=True)
    rec = {"protocol": protocol, "metrics": metrics, "value": value, "method": run.split("-seed")[0],
           "run": run, "git_commit": "abc123", "hardware": "cpu x2"}
    (d / f"{protocol}.json").write_text(json.dumps(rec))


def _fake_run(root, run, knn, last_linear, per_layer_blocks=(1, 2, 3)):
    _write(root, run, "knn", knn, {"knn/avgpool/k20/top1": knn})
    # seed 0 has the whole per-layer grid, trimmed seeds only the last block: same metric name
    layers = {f"linear/avgpool@{b}/best/top1": last_linear - 10 + b for b in per_layer_blocks[:-1]}
    layers[f"linear/avgpool@{per_layer_blocks[-1]}/best/top1"] = last_linear
    _write(root, run, "linear", max(layers.values()), layers)


@pytest.fixture
def fake_results(tmp_path, monkeypatch):
    # the seed runs of a three-seed pipeline, whatever seed count params.yaml holds
    committed = yaml.safe_load((results.REPO / "dvc_runs.yaml").read_text())["runs"]
    monkeypatch.setattr(results, "seed_table", lambda: seeds.seed_runs(committed, 3))
    root = tmp_path / "results" / "cross" / "mini"  # eval.records.records_dir(..., CROSS) of mini runs
    bootleg_knn, ijepa_knn = [50.0, 52.0, 51.0], [46.0, 47.0, 48.0]
    for i, (b, j) in enumerate(zip(bootleg_knn, ijepa_knn)):
        blocks = (1, 2, 3) if i == 0 else (3,)
        _fake_run(root, "bootleg" if i == 0 else f"bootleg-seed{i}", b, 40.0 + i, blocks)
        _fake_run(root, "ijepa" if i == 0 else f"ijepa-seed{i}", j, 35.0 - i, blocks)
    _fake_run(root, "mae", 60.0, 70.0)  # no seed records yet
    _fake_run(root.parent / "smoke", "mae", 11.0, 12.0)  # a smoke run of the same name: not in a mini table
    return tmp_path, root, bootleg_knn, ijepa_knn


def test_results_show_mean_std_over_seeds_and_the_claims(fake_results):
    tmp, root, bootleg_knn, ijepa_knn = fake_results
    out = tmp / "RESULTS.md"
    assert results.main(["--results-root", str(tmp / "results"), "--scale", "mini", "--out", str(out),
                         "--plots", str(tmp / "plots"), "--claims", str(tmp / "claims.json")]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| bootleg | bootleg | bootleg |"))
    links = ", ".join(f"[{v:.1f}](results/cross/mini/{run}/knn.json)"
                      for v, run in zip(bootleg_knn, ("bootleg", "bootleg-seed1", "bootleg-seed2")))
    assert f"| 51.0 ± 1.0 (n=3: {links}) |" in row
    assert "| 41.0 ± 1.0 (n=3: [40.0](results/cross/mini/bootleg/linear.json)" in row
    # seed rows are folded into their run's row, not listed on their own
    assert "| bootleg-seed1 |" not in text
    mae_row = next(line for line in text.splitlines() if line.startswith("| bootleg | mae | mae |"))
    # k-NN, k-NN − floor, RankMe, RankMe (centred), linear
    assert "| [60.0](results/cross/mini/mae/knn.json) | – | – | – | [70.0](results/cross/mini/mae/linear.json) |" \
        in mae_row
    assert "smoke" not in text

    table = json.loads((tmp / "claims.json").read_text())
    knn_claim = next(c for c in table if (c["better"], c["worse"], c["metric"]) == ("bootleg", "ijepa", "k-NN"))
    diffs = [b - j for b, j in zip(bootleg_knn, ijepa_knn)]  # 4, 5, 3
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert knn_claim["differences"] == pytest.approx(diffs) and knn_claim["seeds"] == [0, 1, 2]
    assert knn_claim["low"] == pytest.approx(mean - T_975_2 * sd / math.sqrt(3), abs=1e-4)
    assert knn_claim["verdict"] == "holds"
    linear_claim = next(c for c in table if (c["better"], c["worse"], c["metric"]) == ("bootleg", "ijepa", "linear (last block)"))
    assert linear_claim["differences"] == pytest.approx([5.0, 7.0, 9.0]) and linear_claim["verdict"] == "holds"
    mae_claim = next(c for c in table if (c["worse"], c["metric"]) == ("mae", "k-NN"))
    assert mae_claim["seeds"] == [0] and mae_claim["verdict"] == "one seed: no interval"
    assert next(c for c in table if c["better"] == "udi")["verdict"] == "no records"
    assert f"| bootleg | bootleg > ijepa | k-NN | 0: +4.0, 1: +5.0, 2: +3.0 | +4.0 | [{knn_claim['low']:+.1f}, " \
           f"{knn_claim['high']:+.1f}] | holds |" in text


def test_a_seed_of_an_earlier_recipe_is_neither_averaged_nor_paired(fake_results, capsys):
    tmp, root, _, _ = fake_results
    for run in ("bootleg", "bootleg-seed1"):
        for protocol in ("knn", "linear"):
            path = root / run / f"{protocol}.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "recipe_hash": "new"}))
    # bootleg-seed2 keeps no recipe_hash: trained before the recipe seed 0 was trained with
    assert results.main(["--results-root", str(tmp / "results"), "--scale", "mini", "--out", str(tmp / "RESULTS.md"),
                         "--plots", str(tmp / "plots"), "--claims", str(tmp / "claims.json")]) == 0
    row = next(line for line in (tmp / "RESULTS.md").read_text().splitlines() if line.startswith("| bootleg | bootleg |"))
    assert "(n=2: " in row and "bootleg-seed2" not in row
    knn_claim = next(c for c in json.loads((tmp / "claims.json").read_text())
                     if (c["better"], c["worse"], c["metric"]) == ("bootleg", "ijepa", "k-NN"))
    assert knn_claim["seeds"] == [0, 1]
    assert "bootleg-seed2/knn.json is left out of the mean over seeds" in capsys.readouterr().err


def test_each_row_is_measured_against_the_floor_of_its_own_init_and_shows_its_rankme(fake_results):
    tmp, root, bootleg_knn, _ = fake_results
    floors = tmp / "results" / "cross" / "floors-cross-mini"
    for init, knn in (("ijepa", 45.0), ("timm", 57.0)):
        _write(floors, f"random-init-{init}", "knn", knn, {"knn/avgpool/k20/top1": knn,
                                                            "health/avgpool/rankme": 1.7,
                                                            "health/avgpool/rankme_centered": 21.06})
        path = floors / f"random-init-{init}" / "knn.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "init": init, "feature": "avgpool"}))
    for run, init in (("bootleg", "ijepa"), ("bootleg-seed1", "ijepa"), ("bootleg-seed2", "ijepa"), ("mae", "timm")):
        path = root / run / "knn.json"
        rec = json.loads(path.read_text())
        rec["metrics"]["health/avgpool/rankme"] = 12.34
        if run == "bootleg":  # mae's record is older than centred RankMe
            rec["metrics"]["health/avgpool/rankme_centered"] = 30.06
        path.write_text(json.dumps({**rec, "init": init, "feature": "avgpool"}))
    out = tmp / "RESULTS.md"
    assert results.main(["--results-root", str(tmp / "results"), "--scale", "mini", "--out", str(out),
                         "--plots", str(tmp / "plots"), "--claims", str(tmp / "claims.json")]) == 0
    lines = out.read_text().splitlines()
    bootleg = next(line for line in lines if line.startswith("| bootleg | bootleg | bootleg |"))
    # the mean over the three seeds (51.0) against the I-JEPA-init floor (45.0), not the timm one
    assert "| +6.0 (ijepa, depth 6, patch 4, patch mean) | 12.3 | 30.1 |" in bootleg
    mae = next(line for line in lines if line.startswith("| bootleg | mae | mae |"))
    assert "| +3.0 (timm, depth 6, patch 4, patch mean) | 12.3 | – |" in mae
    floor = next(line for line in lines if line.startswith("| floor |") and "| random-init-ijepa |" in line)
    assert floor.startswith("| floor | random init (ijepa init), depth 6, patch 4, patch mean | random-init-ijepa |")
    assert "| – | 1.7 | 21.1 |" in floor
    header = next(line for line in lines if line.startswith("| paper |"))
    assert "| k-NN | k-NN − floor (init) | RankMe | RankMe (centred) | linear (last block) |" in header
    assert lines[lines.index(header) + 1].count("---|") == header.count("|") - 1


def _with(path, **fields):
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_each_row_is_measured_against_the_floor_of_its_own_arch_among_floors_of_one_init(fake_results, monkeypatch):
    tmp, root, _, _ = fake_results
    vit = {"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 128, "num_heads": 4}
    archs = {"timm": {**vit, "depth": 6, "num_class_tokens": 0, "global_pool": "avg"},
             "timm-dino": {**vit, "depth": 4, "num_class_tokens": 1},
             "timm-udi": {**vit, "depth": 4, "num_class_tokens": 2},
             "timm-hybrid_clip": {**vit, "depth": 6, "num_class_tokens": 1, "global_pool": "avg"}}
    # a patch-mean student built with a class token has the floor of its arch pooled by the mean
    # (scripts/pipeline.py); distill_clip's is one read at the class token, as a stale table could name
    monkeypatch.setattr(results, "floor_table", lambda: (archs, {"mae": "timm", "dino": "timm-dino", "udi": "timm-udi",
                                                                 "hybrid_clip": "timm-hybrid_clip",
                                                                 "distill_clip": "timm-dino"}))
    floors = tmp / "results" / "cross" / "floors-cross-mini"
    for key, knn, feature in (("timm", 57.0, "avgpool"), ("timm-dino", 52.6, "cls"), ("timm-udi", 51.0, "cls"),
                              ("timm-hybrid_clip", 56.0, "avgpool")):
        _write(floors, f"random-init-{key}", "knn", knn, {})
        _with(floors / f"random-init-{key}" / "knn.json", init="timm", feature=feature)
    for run, knn, feature in (("dino", 54.5, "cls"), ("udi", 53.3, "cls"), ("hybrid_clip", 65.8, "avgpool"),
                              ("distill_clip", 64.0, "avgpool")):
        _write(root, run, "knn", knn, {})
        _with(root / run / "knn.json", init="timm", feature=feature)
    _with(root / "mae" / "knn.json", init="timm", feature="avgpool")
    out = tmp / "RESULTS.md"
    assert results.main(["--results-root", str(tmp / "results"), "--scale", "mini", "--out", str(out),
                         "--plots", str(tmp / "plots"), "--claims", str(tmp / "claims.json")]) == 0
    lines = out.read_text().splitlines()

    def floor_cell(run):
        return next(line for line in lines if f"| {run} | [" in line).split(" | ")[4]

    assert floor_cell("mae") == "+3.0 (timm, depth 6, patch 4, patch mean)"
    assert floor_cell("dino") == "+1.9 (timm, depth 4, patch 4, cls)"
    assert floor_cell("udi") == "+2.3 (timm, depth 4, patch 4, cls of 2)"
    assert floor_cell("hybrid_clip") == "+9.8 (timm, depth 6, patch 4, patch mean)"
    # a floor read at another feature than the run is none of its
    assert floor_cell("distill_clip") == "–"
    assert any(line.startswith("| floor | random init (timm init), depth 4, patch 4, cls of 2 | random-init-timm-udi |")
               for line in lines)


def _log(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_learning_curves_are_read_from_each_runs_log_and_drawn_per_paper(tmp_path):
    runs_root = tmp_path / "runs"
    _log(runs_root / "bootleg" / "mini" / "bootleg" / "log.jsonl", [
        {"step": 0, "knn_online/top1": 40.0, "health/student/rankme": 2.0, "health/teacher/rankme": 9.0},
        {"step": 10, "loss": 1.0},
        {"step": 50, "knn_online/top1": 55.5, "health/student/rankme": 3.5, "health/teacher/rankme": 9.0}])
    _log(runs_root / "hybrid_distill" / "mini" / "distill_mae" / "log.jsonl", [
        {"step": 0, "knn_online/top1": 47.0, "health/encoder/rankme": 5.0}])
    runs = {"bootleg": {"paper": "bootleg"}, "ijepa": {"paper": "bootleg"},
            "distill_mae": {"paper": "hybrid_distill"}}
    made, missing = results.draw_curves(runs, "mini", tmp_path / "plots", runs_root)
    assert [p.name for p in made] == ["learning_curves_bootleg.png", "learning_curves_hybrid_distill.png"]
    assert all(p.stat().st_size > 0 for p in made)
    assert missing == ["ijepa"]
    # the student's RankMe, not the teacher's; a one-encoder method logs it as "encoder"
    assert results.learning_curve(runs_root / "bootleg" / "mini" / "bootleg" / "log.jsonl") == {
        "knn": [(0, 40.0), (50, 55.5)], "rankme": [(0, 2.0), (50, 3.5)]}
    assert results.learning_curve(runs_root / "hybrid_distill" / "mini" / "distill_mae" / "log.jsonl") == {
        "knn": [(0, 47.0)], "rankme": [(0, 5.0)]}
