"""The method contract (common.method): every paper's method implements it, the loop refuses a
method that does not, `method.export_encoder` is checked at config time for every paper, the
renamed `eval.encoder` is refused with its new name, and the input metadata every encoder.pt
carries is what it was before the helper replaced the papers' own copies."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from common.config import ConfigError, config_hash, identity, load_config
from common.method import REQUIRED_META, Method, MethodBase, check_method, input_meta, input_meta_of
from common.papers import discover_papers
from common.train import run_dir_of, train
from common.validate import RENAMED_KEYS, refuse_renamed_keys
from common.vit import ViT
from eval import settings
from hd_smoke_teachers import smoke_teachers, teacher_overrides

PAPERS = discover_papers(Path(__file__).resolve().parents[2])
FASHION_MNIST = {"mean": [0.2860406], "std": [0.3530242]}  # common.augment.STATS, measured on the train split

# The encoders each paper exports, in its own words (method.export_encoder).
EXPORTS = {"bootleg": "teacher, target, student, context", "sdssl": "teacher, student",
           "udi": "teacher, student", "hybrid_distill": "student"}

# export_meta() of each paper's default method at smoke scale, key order included (it is part of
# encoder.pt's bytes), as the papers wrote it before common.method.input_meta_of; Hybrid Distill's
# mean/std were its float32 buffers read back (0.28604060411453247), now STATS' values.
SMOKE_META = {
    "bootleg": [("feature", "avgpool"), ("img_size", 28), ("in_chans", 1), ("mean", FASHION_MNIST["mean"]),
                ("std", FASHION_MNIST["std"]), ("encoder", "teacher")],
    "sdssl": [("img_size", 28), ("in_chans", 1), ("mean", FASHION_MNIST["mean"]), ("std", FASHION_MNIST["std"]),
              ("feature", "cls"), ("framework", "moco_v3"), ("distilled_layers", [1, 2])],
    "udi": [("feature", "cls"), ("class_tokens", ["cls", "cls_plus"]), ("encoder", "teacher"), ("img_size", 28),
            ("in_chans", 1), ("mean", FASHION_MNIST["mean"]), ("std", FASHION_MNIST["std"])],
    "hybrid_distill": [("feature", "cls"), ("img_size", 16), ("in_chans", 1), ("mean", FASHION_MNIST["mean"]),
                       ("std", FASHION_MNIST["std"]), ("mask_strategy", "progressive"), ("kept_patches", 6)],
}


@pytest.fixture(scope="module")
def teacher_paths(tmp_path_factory):
    return teacher_overrides(smoke_teachers(tmp_path_factory.mktemp("teachers")))


def smoke_cfg(paper: str, teacher_paths: list[str], *overrides: str):
    extra = teacher_paths if paper == "hybrid_distill" else []
    return load_config(paper, ["scale=smoke", *extra, *overrides])


def build(paper: str, cfg):
    torch.manual_seed(0)
    return importlib.import_module(f"{paper}.model").build_method(cfg, 10)


@pytest.mark.parametrize("paper", PAPERS)
def test_every_paper_method_implements_the_contract(paper, teacher_paths):
    method = build(paper, smoke_cfg(paper, teacher_paths))
    assert isinstance(method, Method) and isinstance(method, MethodBase)
    assert check_method(method, paper) is method
    assert set(REQUIRED_META) <= set(method.export_meta())
    assert all(isinstance(v, ViT) for v in method.monitored_encoders().values())


@pytest.mark.parametrize("paper", PAPERS)
def test_export_meta_is_what_the_paper_exported_before(paper, teacher_paths):
    if paper not in SMOKE_META:
        pytest.skip(f"{paper} has no encoder exported before the method contract")
    meta = build(paper, smoke_cfg(paper, teacher_paths)).export_meta()
    expected = SMOKE_META[paper]
    assert list(meta.items())[:len(expected)] == expected


@pytest.mark.parametrize("paper", PAPERS)
def test_input_meta_of_each_default_config(paper):
    cfg = load_config(paper)  # the mini comparison: Fashion-MNIST, 28 x 28, one channel
    assert input_meta_of(cfg) == {"img_size": 28, "in_chans": 1, **FASHION_MNIST}


def test_input_meta_repeats_gray_statistics_for_rgb_and_refuses_the_reverse():
    assert input_meta("fashion_mnist", 3, 28) == {"img_size": 28, "in_chans": 3, "mean": [0.2860406] * 3,
                                                  "std": [0.3530242] * 3}
    assert input_meta("imagenet", 3, 224)["std"] == [0.229, 0.224, 0.225]
    with pytest.raises(ValueError, match="has 3 channels, cannot expand to 1"):
        input_meta("imagenet", 1, 224)


@pytest.mark.parametrize("paper", PAPERS)
def test_unknown_export_encoder_fails_at_config_time_with_the_allowed_values(paper):
    allowed = EXPORTS.get(paper) or ", ".join(importlib.import_module(f"{paper}.model").EXPORT_ENCODERS)
    with pytest.raises(ConfigError, match=f"method.export_encoder='bogus' is not an encoder {paper} exports; "
                                          f"choose one of {allowed} "):
        load_config(paper, ["scale=smoke", "method.export_encoder=bogus"])


def test_a_teacher_is_refused_where_the_method_has_none():
    with pytest.raises(ConfigError, match="SimCLR has no teacher; use method.export_encoder=student"):
        load_config("sdssl", ["scale=smoke", "method=simclr", "method.export_encoder=teacher"])


@pytest.mark.parametrize(("paper", "choice", "network"), [
    ("sdssl", "student", "student"), ("sdssl", "teacher", "teacher"), ("sdssl", "null", "teacher"),
    ("udi", "student", "student"), ("udi", "null", "teacher")])
def test_export_encoder_chooses_the_exported_network(paper, choice, network, teacher_paths):
    method = build(paper, smoke_cfg(paper, teacher_paths, f"method.export_encoder={choice}"))
    teacher = method.teacher.backbone if paper == "udi" else method.teacher
    student = method.student.backbone if paper == "udi" else method.student
    assert method.encoder_for_eval() is {"teacher": teacher, "student": student}[network]


@pytest.mark.parametrize("override", ["eval.encoder=student", "+eval.encoder=student"])
def test_the_old_eval_encoder_key_is_refused_with_its_new_name(override):
    with pytest.raises(ConfigError, match="^eval.encoder was renamed method.export_encoder: "
                                          r"set method.export_encoder instead \(docs/ERRORS.md\)$"):
        load_config("toy_paper", [override])


def test_every_renamed_key_in_a_config_file_is_refused():
    for old, new in RENAMED_KEYS.items():
        cfg = load_config("toy_paper")
        OmegaConf.set_struct(cfg, False)
        OmegaConf.update(cfg, old, "student", force_add=True)  # as a config file that still names it
        with pytest.raises(ConfigError, match=f"its configs sets {old}, which was renamed {new}"):
            refuse_renamed_keys(cfg, "its configs")


def test_the_eval_block_refuses_encoder_with_its_new_name():
    with pytest.raises(KeyError, match="eval.encoder was renamed method.export_encoder"):
        settings.resolve({"encoder": "student"})


def test_export_encoder_hashes_as_eval_encoder_did():
    """Run directories (and the config_hash inside encoder.pt) made before the rename keep their hash."""
    cfg = load_config("bootleg", ["scale=smoke", "method=mae"])
    saved_before = OmegaConf.to_container(cfg, resolve=True)  # the layout of a config.yaml saved before
    del saved_before["method"]["export_encoder"]
    saved_before["eval"]["encoder"] = "student"
    assert config_hash(OmegaConf.create(saved_before)) == config_hash(cfg)
    assert identity(cfg)["eval"] == {"encoder": "student"} and "export_encoder" not in identity(cfg)["method"]

    default = load_config("udi", ["scale=smoke"])  # null: out of the hash, as the absent eval.encoder was
    assert "eval" not in identity(default) and "export_encoder" not in identity(default)["method"]
    student = load_config("udi", ["scale=smoke", "method.export_encoder=student"])
    assert identity(student)["eval"] == {"encoder": "student"}
    assert config_hash(student) != config_hash(default)


class WithoutExportMeta(MethodBase):
    def __init__(self, cfg):
        super().__init__()
        self.vit = ViT(**cfg.model)

    def training_step(self, batch, step):
        return {"loss": self.vit(batch["view1"]).tokens.mean()}

    def param_groups(self):
        return [{"params": list(self.parameters())}]

    def encoder_for_eval(self):
        return self.vit


class WithoutInputMeta(WithoutExportMeta):
    def export_meta(self):
        return {"feature": "cls"}


@pytest.mark.parametrize(("method", "message"), [
    (WithoutExportMeta, "the method WithoutExportMeta of paper toy_paper lacks export_meta of common.method.Method"),
    (WithoutInputMeta, "WithoutInputMeta.export_meta\\(\\) of paper toy_paper lacks img_size, in_chans, mean, std"),
])
def test_the_loop_refuses_a_method_without_export_meta_before_training(method, message, monkeypatch,
                                                                      toy_overrides):
    monkeypatch.setattr(importlib.import_module("toy_paper.model"), "build_method",
                        lambda cfg, total_steps: method(cfg))
    cfg = load_config("toy_paper", toy_overrides)
    with pytest.raises(TypeError, match=message):
        train(cfg)
    assert not (run_dir_of(cfg) / "checkpoints").exists() and not (run_dir_of(cfg) / "encoder.pt").exists()
