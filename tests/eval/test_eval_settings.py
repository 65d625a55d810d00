import pytest
from omegaconf import OmegaConf

from eval.settings import PROTOCOLS, resolve, section_hash


def test_paper_scale_keeps_recipe_constants():
    moco = resolve({"scale": "paper", "linear": {"protocol": "mocov3"}})
    assert (moco.linear.lr, moco.linear.batch_size, moco.linear.epochs, moco.linear.lr_sweep) == (3.0, 1024, 90, None)
    assert moco.val_resize == "short256" and moco.linear.aug == "plain"
    udi = resolve({"scale": "paper", "linear": {"protocol": "udi"}, "finetune": {"recipe": "beit_ibot"}})
    assert (udi.linear.n_last_blocks, udi.linear.lr, udi.linear.report, udi.linear.aug) == (4, 0.02, "best", "mugs_strong")
    assert (udi.finetune.layer_decay, udi.finetune.warmup_epochs, udi.finetune.global_pool) == (0.55, 20, "token")
    mae = resolve({"scale": "paper", "linear": {"protocol": "mae_bn"}})
    assert mae.linear.bn and mae.linear.optimizer == "lars" and mae.linear.warmup_epochs == 10
    assert resolve({"scale": "paper"}).attn_probe.wd == 0.01  # the paper's value, not the config's 0.001


def test_mini_scale_overrides_schedules_and_caller_wins():
    mini = resolve({"linear": {"protocol": "dino"}})
    assert mini.linear.n_last_blocks == 4  # the recipe's feature choice stays
    assert (mini.linear.epochs, mini.linear.aug, mini.val_resize) == (100, "none", "none")  # recipe epochs, no aug
    assert list(mini.linear.lr_sweep) == [0.01, 0.1, 1.0] and mini.attn_probe.aug == "none"
    mine = resolve({"linear": {"protocol": "dino", "epochs": 2, "lr_sweep": [0.5]}})
    assert (mine.linear.epochs, list(mine.linear.lr_sweep)) == (2, [0.5])


def test_every_protocol_has_a_config_section_and_the_hash_ignores_cosmetics():
    cfg = resolve({})
    assert set(PROTOCOLS) == {"knn", "linear", "attentive", "lowshot", "finetune", "analysis", "segment"}
    base = section_hash(cfg, "knn")
    assert section_hash(resolve({"progress": False, "cache_dir": None}), "knn") == base
    assert section_hash(resolve({"knn": {"T": 0.1}}), "knn") != base


def test_resolve_accepts_a_node_of_a_paper_config():
    paper = OmegaConf.create({"data": {"root": "/datasets"}, "eval": {"root": "${data.root}", "protocols": ["knn"]}})
    assert resolve(paper.eval).root == "/datasets"


def test_bad_keys_and_values_name_the_fix():
    with pytest.raises(KeyError, match="closest valid keys: attn_probe.epochs"):
        resolve({"attn_probe": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown scale 'huge'; valid: mini, paper"):
        resolve({"scale": "huge"})
    with pytest.raises(ValueError, match="unknown finetune 'beit'; valid: beit_ibot, dbot, dbot_large, deit, supervised"):
        resolve({"finetune": {"recipe": "beit"}})
