"""Shared fixtures of the eval tests: a tiny exported encoder on scikit-learn's 8x8 digits."""
import pytest
import torch

from common.augment import STATS
from common.checkpoint import export_encoder
from common.vit import ViT

TINY = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2)


def tiny_meta(**extra):
    mean, std = STATS["digits"]
    meta = {"method": "tiny", "paper": "test", "run": "tiny-run", "config_hash": "c0ffee", "git_commit": "x",
            "step": 0, "feature": "cls", "img_size": 8, "in_chans": 1, "mean": list(mean), "std": list(std)}
    meta.update(extra)
    return meta


@pytest.fixture
def tiny_encoder(tmp_path):
    torch.manual_seed(0)
    vit = ViT(**TINY)
    path = tmp_path / "run" / "encoder.pt"
    export_encoder(vit, path, tiny_meta())
    return path


@pytest.fixture
def eval_cfg(tmp_path):
    """A fast eval block on digits (1437 train / 360 test images)."""
    return {"data": "digits", "cache_dir": str(tmp_path / "cache"), "progress": False,
            "knn": {"k": [1, 5, 20], "report_k": 20},
            "linear": {"epochs": 3, "lr_sweep": [0.1, 1.0], "batch_size": 128},
            "attn_probe": {"epochs": 2, "batch_size": 128},
            "lowshot": {"lambdas": [0.1, 1.0]},
            "finetune": {"epochs": 1, "batch_size": 64, "train_subset": 200, "warmup_epochs": 0},
            "metrics": {"n_images": 16, "align_batch": 32}}


@pytest.fixture(autouse=True)
def one_thread():
    """The eval tests run tiny tensors, where a second intra-op thread only adds
    synchronisation (and stalls badly when other processes share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
