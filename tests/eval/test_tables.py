"""eval/tables.py: floors evaluated only when stale, one floor layout for every paper, tables
that only read records, and the cells and provenance lines every paper's table shares."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import pytest

import eval.api as api
import eval.tables as tables
from common.config import encoder_arch
from common.launch import plan_runs
from common.papers import discover_papers
from eval.encoders import arch_feature, built_arch, init_name
from eval.records import records_dir
from eval.tables import (Column, Row, Table, ensure_floors, load_run, make_floors, markdown, paper_tables,
                         per_layer_table, read_feature, render_cli, run_floor_arch, table_after_runs, table_floors)
from tests.eval.conftest import TINY

REPO = Path(__file__).resolve().parents[2]
PAPERS = discover_papers(REPO)
FLOOR_DIR = re.compile(r"^floors-(?P<experiment>[\w.]+)-(?P<scale>smoke|mini|paper)$")
FLOOR = re.compile(r"^(pixels|random-init-[\w.-]+)$")


@pytest.fixture
def evaluations(monkeypatch):
    """(encoder kind, protocol) of every evaluation that actually runs."""
    calls, real = [], api.evaluate

    def counted(spec, protocol, *args, **kwargs):
        calls.append((str(spec).split(":")[0], protocol))
        return real(spec, protocol, *args, **kwargs)
    monkeypatch.setattr(api, "evaluate", counted)
    return calls


def test_floors_are_evaluated_again_only_when_their_settings_or_arch_change(eval_cfg, tmp_path, evaluations):
    cfg = {**eval_cfg, "protocols": ["knn"]}
    root = tmp_path / "floors"
    # two runs of one (timm) init and arch: one random floor
    floors = make_floors(root, [("a", TINY, cfg), ("b", TINY, cfg)])
    assert [(f.name, f.out_dir) for f in floors] == [("pixels", root / "pixels"), ("random-init-timm", root / "random-init-timm")]
    first = ensure_floors(floors)
    assert evaluations == [("pixels", "knn"), ("random", "knn")]
    assert [r["row"] for r in first] == ["pixels", "random-init-timm"]

    assert ensure_floors(floors) == first and len(evaluations) == 2  # current: nothing runs

    k5 = {**cfg, "knn": {**cfg["knn"], "report_k": 5}}
    redone = ensure_floors(make_floors(root, [("a", TINY, k5)]))  # another probe setting: every floor again
    assert evaluations[2:] == [("pixels", "knn"), ("random", "knn")]
    assert all(r["metric"].endswith("/k5/top1") for r in redone)

    wider = ensure_floors(make_floors(root, [("b", {**TINY, "embed_dim": 48}, k5)]))  # same init, another arch
    assert evaluations[4:] == [("random", "knn")]  # the pixels are current, the random encoder is not
    assert wider[1]["checkpoint_sha256"] != redone[1]["checkpoint_sha256"]
    assert json.loads((root / "random-init-timm" / "arch.json").read_text())["embed_dim"] == 48


def test_the_pixel_floor_skips_what_needs_weights_and_reads_the_pixels_in_a_named_grid(tmp_path):
    cfg = {"protocols": ["knn", "linear", "finetune", "analysis"], "linear": {"features": ["cls_last4", "cls_plus_last4"]}}
    pixels, random = make_floors(tmp_path, [("a", TINY, cfg)])
    assert pixels.eval_cfg["protocols"] == ["knn", "linear"] and pixels.eval_cfg["linear"]["features"] == ["pixels"]
    assert random.eval_cfg == cfg and cfg["linear"]["features"] == ["cls_last4", "cls_plus_last4"]  # not changed


def test_two_archs_of_one_init_get_a_floor_each_keyed_as_the_pipeline_keys_them(tmp_path):
    wide = {**TINY, "embed_dim": 48}
    first, second = {"protocols": ["knn"], "seed": 0}, {"protocols": ["knn"], "seed": 1}
    floors = make_floors(tmp_path, [("dino", TINY, first), ("udi", wide, second), ("dino2", TINY, second)])
    # the first arch of an init keeps the init as its key; a later one adds the run it comes from
    assert [(f.name, f.arch, f.runs) for f in floors[1:]] == [("random-init-timm", TINY, ("dino", "dino2")),
                                                              ("random-init-timm-udi", wide, ("udi",))]
    assert floors[1].eval_cfg == first and floors[2].eval_cfg == second  # each from the first run it is the floor of
    text = markdown(Table("t", [Column("k-NN", "knn")], []), floors)
    assert "| floor: random init (timm init) for dino, dino2 |" in text
    assert "| floor: random init (timm init) for udi |" in text


def test_the_udi_table_measures_dino_and_udi_against_floors_of_their_own_class_tokens(tmp_path):
    runs = {run.name: run for run in plan_runs("udi", ["scale=mini", f"results_root={tmp_path}"])}
    floors = {run: floor for floor in table_floors(list(runs.values()))[1:] for run in floor.runs}
    assert set(floors) == set(runs)
    assert {run: built_arch(floors[run].arch)["num_class_tokens"] for run in ("dino", "udi")} == {"dino": 1, "udi": 2}


@pytest.mark.parametrize("paper", PAPERS)
def test_every_paper_files_its_floors_in_the_one_layout(paper, tmp_path):
    runs = plan_runs(paper, ["scale=mini", f"results_root={tmp_path}"])
    floors = table_floors(runs)
    assert floors[0].name == "pixels"
    for run in runs:  # one floor per run: its own arch and init, read at the run's feature
        [floor] = [f for f in floors[1:] if run.name in f.runs]
        assert built_arch(floor.arch) == built_arch(run_floor_arch(run.cfg))
        assert arch_feature(floor.arch) == read_feature(run.cfg, encoder_arch(run.cfg))
        assert floor.name in (f"random-init-{init_name(floor.arch)}", f"random-init-{init_name(floor.arch)}-{floor.runs[0]}")
    for floor in floors:
        assert floor.out_dir.parent.parent == tmp_path / paper
        match = FLOOR_DIR.match(floor.out_dir.parent.name)
        assert match and match["scale"] == "mini" and FLOOR.match(floor.out_dir.name), floor.out_dir
        assert str(runs[0].cfg.experiment_name).startswith(match["experiment"])


def test_the_committed_floor_records_follow_the_one_layout():
    floor_dirs = [d for d in (REPO / "results").glob("*/*") if d.is_dir() and d.name.startswith("floor")]
    assert floor_dirs, "no committed floors found"
    for directory in floor_dirs:
        assert directory.parent.name in (*PAPERS, "cross") and FLOOR_DIR.match(directory.name), directory
        assert all(FLOOR.match(d.name) for d in directory.iterdir() if d.is_dir()), directory


def _record(directory: Path, protocol: str, value: float, **extra) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    record = {"protocol": protocol, "metric": f"{protocol}/top1", "value": value, "metrics": {f"{protocol}/top1": value},
              "checkpoint_sha256": "ab" * 32, "config_hash": "cd" * 8, "git_commit": "ef" * 20,
              "dataset_hash": "12" * 32, "hardware": "cpu", "wall_time_s": 3.0, "created": "2026-12-03", **extra}
    (directory / f"{protocol}.json").write_text(json.dumps(record))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("paper", PAPERS)
def test_rendering_reads_records_and_writes_only_its_output(paper, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a table evaluated something")
    monkeypatch.setattr(api, "evaluate", refuse)
    monkeypatch.setattr(api, "evaluate_unless_current", refuse)
    monkeypatch.chdir(tmp_path)  # a relative path written by mistake lands here, and is seen
    overrides = ["scale=smoke", f"results_root={tmp_path}/results", f"train.out_root={tmp_path}/runs"]
    runs = plan_runs(paper, overrides)
    protocol = list(runs[0].cfg.eval.protocols)[0]
    _record(records_dir(runs[0].cfg), protocol, 12.34, train_time_s=90.0)
    _record(table_floors(runs)[0].out_dir, protocol, 45.67)
    before = _files(tmp_path)

    render_cli(paper_tables(paper).render, ["--out", str(tmp_path / "table.md"), *overrides])

    assert _files(tmp_path) == before | {tmp_path / "table.md"}
    text = (tmp_path / "table.md").read_text()
    floor_row = next(line for line in text.splitlines() if line.startswith("| floor: raw pixels |"))
    assert "45.7" in floor_row and "| 12.3 " in text and "| 90 s |" in text
    assert f"`{records_dir(runs[0].cfg)}/{protocol}.json`: {protocol}/top1=12.34 ckpt abababababab" in text


def test_a_table_is_named_by_the_launch_overrides_not_by_a_positional_name(capsys):
    with pytest.raises(SystemExit):
        render_cli(paper_tables("bootleg").render, ["compare-mini"])
    assert "argument 'compare-mini' is not key=value" in capsys.readouterr().err


def test_after_the_runs_floors_are_evaluated_here_but_left_to_a_job_on_slurm(tmp_path, monkeypatch, capsys):
    ensured = []
    monkeypatch.setattr(tables, "ensure_experiment_floors", lambda paper, overrides: ensured.append(overrides))
    overrides = ["scale=smoke", f"results_root={tmp_path}"]
    text = table_after_runs("bootleg")(overrides)
    assert ensured == [overrides] and "| floor: raw pixels |" in text
    table_after_runs("bootleg")([*overrides, "cluster=slurm"])
    assert len(ensured) == 1
    assert "python -m eval.tables floors --paper bootleg scale=smoke" in capsys.readouterr().out


def test_cells_read_the_rows_feature_and_show_the_difference_to_a_baseline(tmp_path):
    _record(tmp_path / "base", "knn", 50.0)
    _record(tmp_path / "ours", "knn", 52.5)
    (tmp_path / "ours" / "arch.json").write_text("{}")  # not a record
    _record(tmp_path / "ours" / "extra", "knn", 99.0)  # another records directory
    grid = {"features": ["cls@1", "cls@2"], "metric": "linear/best/top1", "metrics": {"linear/cls@1/best/top1": 60.0, "linear/cls@2/best/top1": 61.0,
                                                        "linear/best/top1": 61.0}}
    _record(tmp_path / "ours", "linear", 61.0, **grid)
    base, ours = load_run(tmp_path / "base"), load_run(tmp_path / "ours")
    assert set(ours) == {"knn", "linear"} and ours["knn"]["value"] == 52.5
    columns = [Column("k-NN", "knn"), Column("linear", "linear", "linear/{feature}/best/top1")]
    first = Row("first block", ours, feature="cls@1")
    text = markdown(Table("t", columns, [Row("base", base), Row("ours", ours, ["70.0"], baseline=Row("base", base)),
                                         first], ["paper"], ["a note"]))
    assert "| ours | 52.5 (+2.5) | 61.0 | — | 70.0 |" in text  # no feature: the last of the grid (block 2)
    assert "| first block | 52.5 | 60.0 | — | — |" in text
    assert "| base | 50.0 | — | — | — |" in text and "\na note\n" in text
    blocks = per_layer_table("per block", [Row("ours", ours, baseline=Row("base", {"linear": {**ours["linear"],
                             "metrics": {"linear/cls@1/best/top1": 59.0}}}))], "linear", 2)
    assert blocks[-2:] == ["| ours | 60.0 | 61.0 |", "| Δ ours | +1.0 | — |"]


def test_a_floor_row_reads_the_head_its_runs_row_reads_where_the_floor_has_it(tmp_path):
    # a floor of a two-token encoder has a head per token and one on both; its best head (both,
    # 69.2) is not what the row of a single-token head is measured against
    heads = {"linear/cls_last4/best/top1": 65.5, "linear/cls_plus_last4/best/top1": 66.8,
             "linear/cls_last4+cls_plus_last4/best/top1": 69.2}
    _record(tmp_path / "random-init-timm-udi", "linear", 69.2, features=list(k.split("/")[1] for k in heads),
            metrics={**heads, "linear/best/top1": 69.2}, metric="linear/best/top1")
    _record(tmp_path / "pixels", "linear", 83.8, features=["pixels"],
            metrics={"linear/pixels/best/top1": 83.8, "linear/best/top1": 83.8}, metric="linear/best/top1")
    floors = [tables.Floor("pixels", None, {}, tmp_path / "pixels"),
              tables.Floor("random-init-timm-udi", {"init": "timm"}, {}, tmp_path / "random-init-timm-udi", ("udi",))]
    _record(tmp_path / "udi", "linear", 71.2, features=list(k.split("/")[1] for k in heads), run="udi",
            metrics={"linear/cls_last4/best/top1": 69.4, "linear/cls_last4+cls_plus_last4/best/top1": 71.2},
            metric="linear/best/top1")
    columns = [Column("linear", "linear", "linear/{feature}/best/top1")]
    udi = load_run(tmp_path / "udi")
    text = markdown(Table("t", columns, [Row("UDI", udi, feature="cls_last4"),
                                         Row("both", udi, feature="cls_last4+cls_plus_last4")]), floors)
    assert "| UDI | 69.4 | — |" in text and "| both | 71.2 | — |" in text
    assert "| floor: random init (timm init) for udi | 65.5 | — |" in text  # the first row of its run
    assert "| floor: raw pixels | 83.8 | — |" in text  # the floor of no run: its own head
    other = markdown(Table("t", columns, [Row("DINO", {"linear": {**udi["linear"], "run": "dino"}}, feature="cls_last4")]),
                     floors)
    assert "| floor: random init (timm init) for udi | 69.2 | — |" in other  # no row of its run: its record's headline



def _seeded(root: Path, run: str, knn: Sequence[float | None], linear: Sequence[float | None]) -> None:
    """Records of `run` (seed 0) and of `run-seed<i>` beside it; None: that seed has no record."""
    for i, (k, l) in enumerate(zip(knn, linear)):
        name = run if i == 0 else f"{run}-seed{i}"
        for protocol, value in (("knn", k), ("linear", l)):
            if value is not None:
                _record(root / name, protocol, value, run=name)


def test_a_row_with_seed_records_shows_mean_std_and_n_and_its_deltas_use_the_means(tmp_path):
    root = tmp_path / "results" / "paper" / "mini"
    _seeded(root, "base", [50.0, 52.0, 54.0], [60.0, 61.0, 62.0])
    _seeded(root, "ours", [55.0, 56.0, 60.0], [70.0, 72.0, None])  # seed 2's linear record is missing
    _seeded(root, "single", [40.0], [45.0])
    _record(root / "single-seedling", "knn", 99.0, run="single-seedling")  # not a seed directory
    _record(root / "ours" / "extra", "knn", 80.0, run="ours")  # an extra evaluation of the run ...
    _record(root / "ours-seed1" / "extra", "knn", 82.0, run="ours-seed1")  # ... and of its seed 1
    columns = [Column("k-NN", "knn"), Column("linear", "linear")]
    base = Row("base", load_run(root / "base"))
    table = Table("t", columns, [base, Row("ours", load_run(root / "ours"), baseline=base),
                                 Row("ours, extra", load_run(root / "ours" / "extra")),
                                 Row("single", load_run(root / "single"), ["1.0"], baseline=base)], ["paper"], ["a note"])
    text = markdown(table)
    assert "| base | 52.0 ± 2.0 (n=3) | 61.0 ± 1.0 (n=3) | — | — |" in text
    # k-NN 57.0 ± sqrt(7) - 52.0; linear over the two seeds with a record: 71.0 ± sqrt(2) - 61.0
    assert "| ours | 57.0 ± 2.6 (n=3) (+5.0) | 71.0 ± 1.4 (n=2) (+10.0) | — | — |" in text
    assert "| ours, extra | 81.0 ± 1.4 (n=2) | — | — | — |" in text
    # a single seed against a seeded baseline: its own number, the difference of seed 0's
    assert "| single | 40.0 (seed 0: -10.0) | 45.0 (seed 0: -15.0) | — | 1.0 |" in text
    assert f"\na note\n{tables.SEED_NOTE}\n" in text
    provenance = text.split("Provenance of every number above")[1]
    for name, protocol, value in (("base", "knn", 50.0), ("base-seed1", "knn", 52.0), ("base-seed2", "knn", 54.0),
                                  ("ours-seed2", "knn", 60.0), ("ours-seed1", "linear", 72.0),
                                  ("ours-seed1/extra", "knn", 82.0)):
        assert f"- `{root / name}/{protocol}.json`: {protocol}/top1={value:.2f} ckpt" in provenance
    assert "ours-seed2/linear.json" not in provenance and "seedling" not in text


def test_rows_without_seed_records_are_rendered_as_before_byte_for_byte(tmp_path):
    root = tmp_path / "results" / "paper" / "mini"
    _seeded(root, "base", [50.0], [60.0])
    _seeded(root, "ours", [52.5], [61.0])
    _seeded(root, "other", [40.0], [45.0])

    def render() -> str:
        base = Row("base", load_run(root / "base"))
        return markdown(Table("t", [Column("k-NN", "knn"), Column("linear", "linear")],
                              [base, Row("ours", load_run(root / "ours"), ["70.0"], baseline=base),
                               Row("other", load_run(root / "other"))], ["paper"], ["a note"]))
    before = render()
    assert "| ours | 52.5 (+2.5) | 61.0 (+1.0) | — | 70.0 |" in before
    assert "±" not in before and tables.SEED_NOTE not in before
    assert before.count("- `") == 6  # one provenance line per record

    _seeded(root, "other", [40.0, 42.0], [45.0, 47.0])  # seeds of another row change only that row
    after = render()
    rows = before.split("\n| other |")[0]  # title, header and the rows of base and ours
    assert after.startswith(rows + "\n| other | 41.0 ± 1.4 (n=2) | 46.0 ± 1.4 (n=2) | — | — |\n\na note\n")
    assert set(before.splitlines()) - set(after.splitlines()) == {"| other | 40.0 | 45.0 | — | — |"}


def test_a_seed_trained_with_another_recipe_is_left_out_of_the_mean_and_named(tmp_path, capsys):
    root = tmp_path / "results" / "paper" / "mini"
    _record(root / "run", "knn", 50.0, run="run", recipe_hash="r1")
    _record(root / "run-seed1", "knn", 52.0, run="run-seed1", recipe_hash="r1")
    _record(root / "run-seed2", "knn", 90.0, run="run-seed2", recipe_hash="r0")  # before the recipe changed
    text = markdown(Table("t", [Column("k-NN", "knn")], [Row("run", load_run(root / "run"))]))
    assert "| run | 51.0 ± 1.4 (n=2) |" in text and "run-seed2" not in text
    err = capsys.readouterr().err
    assert f"{root / 'run-seed2' / 'knn.json'} is left out of the mean over seeds" in err
    assert "python scripts/seeds.py --run run-seed2" in err


def test_seeds_of_a_per_block_grid_are_read_with_seed_0s_feature(tmp_path):
    """Seed 0 has a head per block, a seed only the last block's (eval.layers=1): a column that
    reads the last block of the grid reads the same head in both."""
    root = tmp_path / "results" / "paper" / "mini"
    grid = {"metric": "linear/best/top1",
            "metrics": {"linear/cls@1/best/top1": 90.0, "linear/cls@2/best/top1": 60.0, "linear/best/top1": 90.0}}
    _record(root / "run", "linear", 90.0, run="run", features=["cls@1", "cls@2"], **grid)
    _record(root / "run-seed1", "linear", 64.0, run="run-seed1", features=["cls@2"], metric="linear/best/top1",
            metrics={"linear/cls@2/best/top1": 64.0, "linear/best/top1": 64.0})
    text = markdown(Table("t", [Column("linear", "linear", "linear/{feature}/best/top1")], [Row("run", load_run(root / "run"))]))
    assert "| run | 62.0 ± 2.8 (n=2) | — |" in text
