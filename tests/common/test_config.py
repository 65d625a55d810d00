"""Config errors are readable, run directories refuse an incompatible config."""
import pytest

from common.config import ConfigError, config_hash, load_config, recipe_hash, save_run_config


def test_unknown_key_lists_closest_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*train\.epochs"):
        load_config("toy_paper", ["train.epoch=3"])


def test_wrong_type_names_expected_type():
    with pytest.raises(ConfigError, match=r"train.epochs expects an int.*'ten'"):
        load_config("toy_paper", ["train.epochs=ten"])


def test_int_accepted_for_float():
    assert load_config("toy_paper", ["optim.lr=1"]).optim.lr == 1


def test_missing_required_value_names_the_key():
    with pytest.raises(ConfigError, match=r"missing required value\(s\): method.temperature"):
        load_config("toy_paper", ["method.temperature=???"])


def test_unknown_group_option_lists_available():
    with pytest.raises(ConfigError, match=r"method/nope'; valid options in 'method': toy$"):
        load_config("toy_paper", ["method=nope"])


def test_hash_ignores_where_a_run_goes_but_not_what_it_computes():
    a = load_config("toy_paper", [])
    assert config_hash(a) == config_hash(load_config("toy_paper", ["train.out_root=/elsewhere", "cluster=slurm"]))
    assert config_hash(a) != config_hash(load_config("toy_paper", ["optim.lr=0.5"]))


def test_the_recipe_hash_is_shared_by_the_seeds_of_a_recipe_and_by_nothing_else():
    a = load_config("toy_paper", [])
    seed = load_config("toy_paper", [f"train.seed={int(a.train.seed) + 1}", "run_name=toy-seed1"])
    assert config_hash(seed) != config_hash(a) and recipe_hash(seed) == recipe_hash(a)
    assert recipe_hash(load_config("toy_paper", ["optim.lr=0.5"])) != recipe_hash(a)


def test_run_dir_refuses_incompatible_config_with_diff(tmp_path):
    save_run_config(load_config("toy_paper", []), tmp_path)
    save_run_config(load_config("toy_paper", ["train.log_every=7"]), tmp_path)  # same identity: fine
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_000000001.pt").write_bytes(b"state")
    with pytest.raises(ConfigError, match=r"another configuration.*model.embed_dim: 32 -> 64"):
        save_run_config(load_config("toy_paper", ["model.embed_dim=64"]), tmp_path)
    assert "embed_dim: 32" in (tmp_path / "config.yaml").read_text()


def _trained(run_dir, cfg):
    save_run_config(cfg, run_dir)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "step_000000001.pt").write_bytes(b"state")
    (run_dir / "done.json").write_text("{}")


def test_archive_moves_a_run_of_another_config_aside_whole(tmp_path):
    run_dir = tmp_path / "run"
    old = load_config("toy_paper", [])
    _trained(run_dir, old)
    new = load_config("toy_paper", ["model.embed_dim=64", "train.on_config_change=archive"])
    save_run_config(new, run_dir)
    kept = tmp_path / f"run.config-{config_hash(old)}"
    assert (kept / "checkpoints" / "step_000000001.pt").read_bytes() == b"state"
    assert (kept / "done.json").exists() and "embed_dim: 32" in (kept / "config.yaml").read_text()
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "config_hash"]
    assert (run_dir / "config_hash").read_text().strip() == config_hash(new)


def test_archive_never_overwrites_an_earlier_archive(tmp_path):
    run_dir = tmp_path / "run"
    old = load_config("toy_paper", [])
    for embed_dim in (64, 96):
        _trained(run_dir, old)
        save_run_config(load_config("toy_paper", [f"model.embed_dim={embed_dim}", "train.on_config_change=archive"]),
                        run_dir)
        for p in list(run_dir.iterdir()):
            p.unlink()
    stem = f"run.config-{config_hash(old)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", stem, f"{stem}.2"]


def test_on_config_change_is_not_part_of_the_hash_and_is_checked():
    assert config_hash(load_config("toy_paper", ["train.on_config_change=archive"])) == \
        config_hash(load_config("toy_paper", []))
    with pytest.raises(ConfigError, match=r"train.on_config_change='keep' is not one of refuse, archive"):
        save_run_config(load_config("toy_paper", ["train.on_config_change=keep"]), None)
