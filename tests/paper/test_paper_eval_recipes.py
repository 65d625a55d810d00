"""Every evaluation recipe at paper scale executes two real steps on CPU.

Each recipe of ``eval/configs`` (linear probes with their augmentation, the attentive probe
with AutoAugment, the fine-tune recipes, low-shot, the linear segmentation probe) plus the
transfer datasets the paper-scale tables name, through ``eval.api.evaluate`` with
``scale=paper``, on the synthetic folders (ADE20K layout for segmentation) and a random encoder
of the architecture the recipe serves (that paper's paper-scale model). The overrides change
only the data path, the batch sizes (2) and the number of steps (2, ``eval.max_steps``;
schedules still span the recipe's epochs, or ``seg.iters``).

CI runs CI_RECIPES rotating recipes among those whose encoder ``paper_recipes.model_cost``
admits (at most ViT-B: the ViT-L fine-tune runs only under ``pytest -m paper tests/paper``).
"""
from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from paper_recipes import CONFIGS_EVAL, SEG_FOLDER, model_cost, rotation_key

# recipe -> the paper whose paper-scale encoder it evaluates
LINEAR_ARCH = {"dino": "udi", "mocov3": "sdssl", "sdssl": "sdssl", "sdssl_multiexit": "sdssl",
               "udi": "udi", "mae_bn": "bootleg"}
FINETUNE_ARCH = {"dbot": "hybrid_distill", "dbot_large": "hybrid_distill model=vit_l16", "beit_ibot": "udi",
                 "deit": "sdssl", "supervised": "hybrid_distill"}  # "<paper> [overrides]"
# transfer tables: dataset folder -> (protocol, eval block, paper) as the paper-scale tables set them
TRANSFER = {"inat21": ("attentive", {}, "bootleg"),  # bootleg experiment=inat21
            "stanford_cars": ("finetune", {"finetune": {"recipe": "dbot"}}, "hybrid_distill"),  # table2_cars
            "inat19": ("finetune", {"finetune": {"recipe": "dbot"}}, "hybrid_distill"),  # table2_inat19
            "cifar100": ("finetune", {"finetune": {"recipe": "dbot"}}, "hybrid_distill")}  # table2_cifar100
BATCH_KEYS = ("linear", "attn_probe", "lowshot", "finetune", "seg")
CI_RECIPES = 2  # recipes per CI run (rotating); `pytest -m paper` runs all


def _recipes():
    linear = sorted(p.stem for p in (CONFIGS_EVAL / "linear").glob("*.yaml"))
    finetune = sorted(p.stem for p in (CONFIGS_EVAL / "finetune").glob("*.yaml"))
    assert set(linear) == set(LINEAR_ARCH) and set(finetune) == set(FINETUNE_ARCH), \
        "a new eval recipe needs its architecture in LINEAR_ARCH / FINETUNE_ARCH"
    cases = [("imagenet", "linear", {"linear": {"protocol": r}}, LINEAR_ARCH[r]) for r in linear]
    cases += [("imagenet", "finetune", {"finetune": {"recipe": r}}, FINETUNE_ARCH[r]) for r in finetune]
    cases += [("imagenet", "attentive", {}, "bootleg"),
              ("imagenet_tiny", "lowshot", {"lowshot": {"solver": "logreg_full_batch"}}, "udi"),
              ("imagenet_tiny", "lowshot", {"lowshot": {"solver": "adamw"}}, "udi")]
    cases += [(data, protocol, block, arch) for data, (protocol, block, arch) in TRANSFER.items()]
    # dense: hybrid_distill experiment=ade20k_linear, the ViT-B/16 students under the linear segmentation
    # probe (40k iterations of batch 16, sliding-window validation) on an ADE20K-layout folder
    cases += [(SEG_FOLDER, "segment", {}, "hybrid_distill")]
    cheap = [i for i, c in enumerate(cases) if model_cost(OmegaConf.create(_model(c[3]))) is None]
    share = {cheap[(rotation_key() + k) % len(cheap)] for k in range(CI_RECIPES)}  # the rest under -m paper
    return [pytest.param(*c, marks=[] if i in share else [pytest.mark.paper],
                         id=f"{c[0]}-{c[1]}-{json.dumps(c[2], sort_keys=True) if c[2] else 'default'}-{c[3].replace(' ', '-')}")
            for i, c in enumerate(cases)]


@functools.lru_cache(maxsize=None)
def _model(arch: str) -> dict:
    """The paper-scale ``model`` block of ``"<paper> [overrides]"``."""
    from common.config import load_config
    paper, *overrides = arch.split()
    return OmegaConf.to_container(load_config(paper, ["scale=paper", *overrides]).model, resolve=True)


def _arch_file(arch: str, directory: Path) -> Path:
    path = directory / f"{arch.split()[0]}_arch.json"
    path.write_text(json.dumps(_model(arch)))
    return path


@pytest.mark.parametrize("data,protocol,block,paper", _recipes())
def test_paper_eval_recipe(data, protocol, block, paper, synthetic_root, tmp_path):
    from eval.api import evaluate

    kind = "cifar100" if data == "cifar100" else "imagefolder"
    cfg = {"scale": "paper", "data": f"{kind}:{synthetic_root / 'data' / data}", "device": "cpu",
           "batch_size": 2, "max_steps": 2, "progress": False, "cache_dir": str(tmp_path / "cache"),
           **copy.deepcopy(block)}  # the parametrised block is shared by the session: batch sizes go in a copy
    if protocol == "segment":  # its own folder (eval.seg.data); eval.data stays the ImageNet one, as in ade20k_linear
        cfg["data"] = f"imagefolder:{synthetic_root / 'data' / 'imagenet'}"
        cfg["seg"] = {"data": str(synthetic_root / "data" / data)}
    for section in BATCH_KEYS:
        cfg.setdefault(section, {})["batch_size"] = 2
    [record] = evaluate(f"random:{_arch_file(paper, tmp_path)}", protocol, cfg, out_dir=tmp_path / "results")
    assert math.isfinite(record["value"]) and 0 <= record["value"] <= 100
    if protocol == "finetune":
        assert record["steps"] == 2 and math.isfinite(record["metrics"]["finetune/last_epoch_loss"])
    if protocol == "segment":
        assert record["steps"] == 2 and math.isfinite(record["final_loss"]) and record["val_mode"] == "slide"
