"""Every bad command line is answered in one line and changes nothing on disk (issue 14 C).

Each case: the entry point, argv, substrings the single stderr line must hold. A case runs
in this process through the launcher's `main(argv)` from an empty working directory whose
tree is compared before and after; a few run the real command in a subprocess.
"""
from __future__ import annotations

import pytest
from cli_harness import assert_one_line_error, disk_snapshot, run_cli, run_entry

from common.config import ConfigError, config_hash, load_config, save_run_config
from common.launch import plan_runs

SMOKE = ["scale=smoke", "--dry-run"]

CASES = [
    # ---- issue 14 C.1: the user's override wins over the run table, and is validated
    ("bootleg", [*SMOKE, "method.target_layers=[99]", "--only", "bootleg"],
     ["method.target_layers: 99", "depth-2", "1..2"]),
    # ---- C.4 / C.5: range checks at config time, naming the key
    ("bootleg", [*SMOKE, "train.epochs=0"], ["train.epochs=0", "int >= 1"]),
    ("bootleg", [*SMOKE, "train.epochs=-1"], ["train.epochs=-1", "train.epochs=10"]),
    ("bootleg", [*SMOKE, "data.batch_size=0"], ["data.batch_size=0", "int >= 1"]),
    ("bootleg", [*SMOKE, "data.batch_size=-5"], ["data.batch_size=-5"]),
    ("bootleg", [*SMOKE, "optim.lr=-1"], ["optim.lr=-1", "> 0"]),
    ("bootleg", [*SMOKE, "optim.lr=nan"], ["optim.lr=nan", "finite"]),
    ("bootleg", [*SMOKE, "method.ema=[1.5,0.2]"], ["method.ema=[1.5,0.2]", "[0, 1]"]),
    ("bootleg", [*SMOKE, "train.threads=-2"], ["train.threads=-2", "int >= 1"]),
    ("bootleg", [*SMOKE, "data.train_subset=0"], ["data.train_subset=0", "fraction"]),
    ("bootleg", [*SMOKE, "data.train_subset=1.5"], ["data.train_subset=1.5", "(0, 1]"]),
    ("bootleg", [*SMOKE, "data.train_subset=10"], ["data.train_subset=10", "fewer than one batch"]),
    ("bootleg", [*SMOKE, "optim.accum_steps=3"], ["data.batch_size=50", "optim.accum_steps=3"]),
    ("bootleg", [*SMOKE, "optim.warmup_epochs=2"], ["optim.warmup_epochs=2", "optim.allow_full_warmup=true"]),
    ("bootleg", [*SMOKE, "train.precision=fp8"], ["train.precision='fp8'", "bf16"]),
    ("bootleg", [*SMOKE, "optim.betas=[0.9]"], ["optim.betas=[0.9]"]),
    ("bootleg", [*SMOKE, "data.name=nope"], ["data.name='nope'", "fashion_mnist"]),
    ("bootleg", [*SMOKE, "method.layer_weights=[1,2,3]", "--only", "bootleg"],
     ["method.layer_weights has 3 entries", "2 target layers"]),
    ("bootleg", [*SMOKE, "method.layer_weights=half", "--only", "bootleg"], ["method.layer_weights='half'", "equal"]),
    ("bootleg", [*SMOKE, "eval.protocols=[svm]"], ["eval.protocols", "svm", "knn"]),
    # ---- C.5: extra evaluations without protocols fail before training, not after it
    ("bootleg", [*SMOKE, "extra_evals={extra:{}}"], ["extra_evals.extra", "protocols=[knn]"]),
    ("bootleg", [*SMOKE, "extra_evals={extra:{protocols:[svm]}}"], ["extra_evals.extra.protocols", "svm"]),
    # ---- C.8: run names stay inside train.out_root
    ("bootleg", [*SMOKE, "experiment=none", "run_name=../../escaped"], ["run_name='../../escaped'", "no '/'"]),
    ("bootleg", [*SMOKE, "run_name=mine"], ["run_name=mine", "cannot rename", "--only"]),
    ("bootleg", [*SMOKE, "method=mae"], ["method=mae", "run 'bootleg'", "method=bootleg"]),
    # ---- unknown key, wrong type, unknown group option, unknown experiment, bad flags
    ("bootleg", [*SMOKE, "trian.epochs=3"], ["unknown config key 'trian.epochs'", "train.epochs"]),
    ("bootleg", [*SMOKE, "train.epochs=abc"], ["train.epochs expects an int", "'abc'"]),
    ("bootleg", [*SMOKE, "train=5"], ["train expects a mapping", "'5'"]),
    ("bootleg", [*SMOKE, "method=nope"], ["method/nope", "valid options in 'method': bootleg, "]),
    ("bootleg", [*SMOKE, "experiment=nope"], ["experiment/nope", "compare"]),
    ("bootleg", [*SMOKE, "--only", "nope"], ["--only names unknown run(s) ['nope']", "bootleg, ijepa, mae"]),
    # ---- issue 15: one naming scheme; the old names are refused with the new one
    ("bootleg", [*SMOKE, "data.norm_stats=imagenet"], ["data.norm_stats was renamed data.stats"]),
    ("bootleg", [*SMOKE, "data.hflip=true"], ["data.hflip was renamed data.aug.flip_p"]),
    ("udi", [*SMOKE, "crop.n_local=4"], ["crop.n_local was renamed data.aug.n_local"]),
    ("sdssl", [*SMOKE, "--only", "mini-simclr"], ["run names no longer carry the scale", "use --only simclr"]),
    ("bootleg", [*SMOKE, "experiment=none", "--only", "nope"], ["--only names unknown run(s) ['nope']"]),
    ("bootleg", [*SMOKE, "--bogus"], ["unrecognized arguments: --bogus"]),
    ("bootleg", [*SMOKE, "epochs"], ["'epochs' is not key=value"]),
    ("bootleg", [*SMOKE, "--stage", "nope"], ["--stage", "'nope'"]),
    # ---- the other launchers share the checks
    ("sdssl", [*SMOKE, "train.epochs=0"], ["train.epochs=0"]),
    ("sdssl", [*SMOKE, "method.momentum_base=1.5"], ["method.momentum_base=1.5", "[0, 1]"]),
    ("sdssl", [*SMOKE, "experiment=none", "data.batch_size=0"], ["data.batch_size=0"]),
    ("sdssl", [*SMOKE, "method=nope"], ["method/nope", "simclr"]),
    ("udi", [*SMOKE, "method.momentum_teacher=2"], ["method.momentum_teacher=2"]),
    ("udi", [*SMOKE, "optim.lr=inf"], ["optim.lr=inf", "finite"]),
    ("udi", [*SMOKE, "train.threads=0"], ["train.threads=0"]),
    ("udi", [*SMOKE, "experiment=nope"], ["experiment/nope", "mini"]),
    ("hybrid_distill", [*SMOKE, "train.epochs=0"], ["train.epochs=0"]),
    ("hybrid_distill", [*SMOKE, "method=nope"], ["method/nope", "hybrid"]),
    ("hybrid_distill", [*SMOKE, "--only", "nope"], ["--only names unknown run(s) ['nope']"]),
    ("hybrid_distill", [*SMOKE, "data.batch_size=0"], ["data.batch_size=0"]),
    ("hybrid_distill", ["--dry-run", "experiment=table1", "scale=paper", "--only", "l40_hybrid_clip",
                        "optim.warmup_epochs=40"], ["optim.warmup_epochs=40", "train.epochs=40"]),
    # ---- eval/launch.py
    ("eval", ["checkpoint=pixels", "protocol=", "--dry-run"], ["protocol= is empty", "protocol=knn"]),
    ("eval", ["checkpoint=pixels", "protocol=svm", "--dry-run"], ["unknown protocol 'svm'", "knn"]),
    ("eval", ["checkpoint=pixels", "protocol=knn,,linear", "--dry-run"], ["unknown protocol ''"]),
    ("eval", ["checkpoint=", "protocol=knn", "--dry-run"], ["checkpoint= is empty"]),
    ("eval", ["protocol=knn", "--dry-run"], ["checkpoint=PATH is required"]),
    ("eval", ["checkpoint=pixels", "out=", "--dry-run"], ["out= is empty"]),
    ("eval", ["checkpoint=nowhere/encoder.pt", "protocol=knn", "--dry-run"], ["nowhere/encoder.pt"]),
    ("eval", ["checkpoint=pixels", "knn.kk=3", "--dry-run"], ["unknown eval config key 'knn.kk'", "knn.k"]),
    ("eval", ["checkpoint=pixels", "seed=abc", "--dry-run"], ["seed expects an int", "'abc'"]),
    ("eval", ["checkpoint=pixels", "knn.k=abc", "--dry-run"], ["knn.k expects a list"]),
    ("eval", ["checkpoint=pixels", "data=nope", "--dry-run"], ["data=nope", "fashion_mnist"]),
    ("eval", ["checkpoint=pixels", "scale=huge", "--dry-run"], ["unknown scale 'huge'", "mini"]),
    ("eval", ["checkpoint=pixels", "linear.protocol=nope", "--dry-run"], ["unknown linear 'nope'", "dino"]),
    ("eval", ["checkpoint=pixels", "--bogus"], ["unrecognized arguments: --bogus"]),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory: the launchers' relative defaults (runs/, results/) land here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    return tmp_path


@pytest.mark.parametrize("entry, argv, expected", CASES, ids=[f"{e}:{' '.join(a)}" for e, a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(entry, argv, expected, workdir):
    before = disk_snapshot(workdir)
    assert_one_line_error(run_entry(entry, argv), *expected)
    assert disk_snapshot(workdir) == before


def test_not_dry_run_either_writes_nothing(workdir):
    """Without --dry-run the same checks run before any directory is made."""
    argv = ["scale=smoke", "data.batch_size=0", f"train.out_root={workdir}/runs", f"results_root={workdir}/results"]
    assert_one_line_error(run_entry("bootleg", argv), "data.batch_size=0")
    assert list(workdir.iterdir()) == []


def test_eval_stage_of_an_untrained_run_is_one_line(workdir):
    argv = ["scale=smoke", "--only", "bootleg", "--stage", "eval", f"train.out_root={workdir}/runs"]
    assert_one_line_error(run_entry("bootleg", argv), "no finished encoder", "--stage train")
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("entry, argv, expected", [
    ("bootleg", [*SMOKE, "method.target_layers=[99]", "--only", "bootleg"], ["method.target_layers: 99"]),
    ("hybrid_distill", [*SMOKE, "method=nope"], ["method/nope"]),
    ("eval", ["checkpoint=pixels", "protocol=", "--dry-run"], ["protocol= is empty"]),
])
def test_the_real_command_prints_one_line(entry, argv, expected, workdir):
    assert_one_line_error(run_cli(entry, argv, cwd=workdir), *expected)
    assert list(workdir.iterdir()) == []


def test_debug_flag_and_hydra_full_error_show_the_traceback(workdir):
    argv = [*SMOKE, "train.epochs=0"]
    with pytest.raises(ConfigError, match="train.epochs=0"):
        run_entry("bootleg", [*argv, "--debug"])
    import os
    full = run_cli("bootleg", argv, cwd=workdir, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert full.code != 0 and "Traceback" in full.stderr and "train.epochs=0" in full.stderr


# ------------------------------------------------------------------ what must be accepted

def _only(paper: str, run: str, *overrides: str):
    [spec] = plan_runs(paper, ["scale=smoke", *overrides], only=run)
    return spec.cfg


def test_the_users_override_wins_over_the_run_table():
    assert list(_only("bootleg", "bootleg").method.target_layers) == ["even:3"]  # the table's value
    assert list(_only("bootleg", "bootleg", "method.target_layers=[1]").method.target_layers) == [1]


def test_overrides_are_accepted_after_flags(workdir):
    out = run_entry("bootleg", ["scale=smoke", "--only", "bootleg", "train.threads=1", "--dry-run", "train.epochs=3"])
    assert out.code == 0, out.stderr
    assert "threads: 1" in out.stdout and "epochs: 3" in out.stdout


def test_documented_values_are_accepted():
    cfg = _only("bootleg", "bootleg", "data.train_subset=0.1", "method.layer_weights=[0.25,0.75]")
    assert cfg.data.train_subset == 0.1 and list(cfg.method.layer_weights) == [0.25, 0.75]
    assert _only("bootleg", "bootleg", "optim.warmup_epochs=2", "optim.allow_full_warmup=true").optim.warmup_epochs == 2


def test_hybrid_l40_run_warms_up_for_less_than_its_epochs():
    [spec] = plan_runs("hybrid_distill", ["experiment=table1", "scale=paper"], only="l40_hybrid_clip")
    assert spec.cfg.train.epochs == 40 and 0 < spec.cfg.optim.warmup_epochs < 40


# ------------------------------------------------------------------ a failed start does not wedge

def test_a_run_dir_without_checkpoints_takes_a_corrected_config(toy_overrides, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "toy_paper" / "wedge"
    first = load_config("toy_paper", [*toy_overrides, "run_name=wedge", "data.batch_size=16"])
    save_run_config(first, run_dir)  # as a start that then failed before its first checkpoint
    (run_dir / "log.jsonl").write_text('{"step": 1}\n')
    corrected = load_config("toy_paper", [*toy_overrides, "run_name=wedge", "data.batch_size=32"])
    save_run_config(corrected, run_dir)
    note = capsys.readouterr().err.strip()
    assert note.count("\n") == 0 and "no checkpoint" in note and "data.batch_size: 16 -> 32" in note
    assert load_config("toy_paper", [*toy_overrides, "run_name=wedge"]).data.batch_size == 32
    assert "batch_size: 32" in (run_dir / "config.yaml").read_text()
    assert not (run_dir / "log.jsonl").exists()  # the new run starts its own log; the old one is kept
    assert (run_dir / f"log.{config_hash(first)}.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.parametrize("state", ["checkpoints/step_000000005.pt", "encoder.pt"])
def test_a_run_dir_with_training_state_is_never_given_another_config(state, toy_overrides, tmp_path):
    run_dir = tmp_path / "runs" / "toy_paper" / "kept"
    first = load_config("toy_paper", [*toy_overrides, "run_name=kept"])
    save_run_config(first, run_dir)
    (run_dir / state).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / state).write_bytes(b"weights")
    before = disk_snapshot(run_dir)
    other = load_config("toy_paper", [*toy_overrides, "run_name=kept", "optim.lr=0.5"])
    with pytest.raises(ConfigError) as exc:
        save_run_config(other, run_dir)
    message = str(exc.value)
    assert "\n" not in message and "optim.lr: 0.001 -> 0.5" in message and "run_name" in message
    assert disk_snapshot(run_dir) == before


def test_a_start_that_fails_at_runtime_can_be_relaunched_corrected(toy_overrides, tmp_path):
    """A batch larger than the whole toy set (about 1400 images) passes the config checks
    but fails once the data is built; the corrected relaunch then trains in that directory."""
    from common.train import train

    args = [*toy_overrides, "run_name=relaunch", "train.epochs=1"]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(load_config("toy_paper", [*args, "data.train_subset=null", "data.batch_size=4096"]))
    summary = train(load_config("toy_paper", args))
    assert summary["steps"] > 0 and (tmp_path / "runs" / "toy_paper" / "smoke" / "relaunch" / "encoder.pt").is_file()


def test_harness_snapshot_sees_a_change(tmp_path):
    """The disk check of the table above can fail: a new, grown or touched file is seen."""
    (tmp_path / "a").write_text("x")
    before = disk_snapshot(tmp_path)
    (tmp_path / "a").write_text("xy")
    assert disk_snapshot(tmp_path) != before
    before = disk_snapshot(tmp_path)
    (tmp_path / "d").mkdir()
    assert disk_snapshot(tmp_path) != before

