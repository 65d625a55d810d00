"""The random-init floors of dvc_runs.yaml (scripts/pipeline.py): one per distinct init and
architecture of the runs, and each run's own floor."""
from types import SimpleNamespace

import yaml
from omegaconf import OmegaConf

from eval.encoders import built_arch
from scripts import cross_eval, pipeline

PATCH_MEAN = {"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 2,
              "num_class_tokens": 0, "global_pool": "avg"}
CLASS_TOKEN = {**PATCH_MEAN, "depth": 1, "num_class_tokens": 1, "global_pool": "token"}


def spec(name: str, model: dict, init: str | None = None, eval_feature: str | None = None):
    method = {"init": init, **({"eval_feature": eval_feature} if eval_feature else {})}
    return SimpleNamespace(name=name, cfg=OmegaConf.create({"model": model, "method": method}))


def test_two_runs_of_one_init_and_two_archs_get_two_floors_each_run_its_own():
    archs, of_run = pipeline.floors([spec("mae", PATCH_MEAN), spec("dino", CLASS_TOKEN),
                                     spec("distill", PATCH_MEAN), spec("udi", CLASS_TOKEN)])
    # the first arch of an init keeps the init as its key; a later one adds the run it comes from
    assert archs == {"timm": PATCH_MEAN, "timm-dino": CLASS_TOKEN}
    assert of_run == {"mae": "timm", "dino": "timm-dino", "distill": "timm", "udi": "timm-dino"}


def test_one_arch_spelled_with_or_without_its_defaults_is_one_floor():
    # num_class_tokens=1 and global_pool=token are the ViT's defaults
    implicit = {k: v for k, v in CLASS_TOKEN.items() if k not in ("num_class_tokens", "global_pool")}
    archs, of_run = pipeline.floors([spec("a", CLASS_TOKEN), spec("b", implicit)])
    assert list(archs) == ["timm"] and of_run == {"a": "timm", "b": "timm"}


def test_one_arch_of_two_inits_is_two_floors_keyed_by_init():
    archs, of_run = pipeline.floors([spec("mae", PATCH_MEAN), spec("ijepa", PATCH_MEAN, "ijepa"),
                                     spec("simclr", CLASS_TOKEN, "moco")])
    assert list(archs) == ["timm", "ijepa", "moco"] and archs["ijepa"]["weight_init"] == "ijepa"
    assert of_run == {"mae": "timm", "ijepa": "ijepa", "simclr": "moco"}


def test_a_run_read_at_its_patch_mean_gets_the_floor_of_its_own_arch_pooled_by_the_mean():
    """A random arch is read at the feature its global_pool implies (eval.encoders.arch_feature):
    the floor of a student exported at its patch mean (Hybrid Distill's method.eval_feature) keeps
    its class token, which its patch tokens attend to, and pools by the mean."""
    student = {**PATCH_MEAN, "num_class_tokens": 1, "global_pool": "token"}
    pooled = {**student, "global_pool": "avg"}
    archs, of_run = pipeline.floors([spec("mae", PATCH_MEAN), spec("distill", student, eval_feature="avgpool"),
                                     spec("cls", student, eval_feature="cls"), spec("plain", student)])
    assert archs == {"timm": PATCH_MEAN, "timm-distill": pooled, "timm-cls": student}
    assert of_run == {"mae": "timm", "distill": "timm-distill", "cls": "timm-cls", "plain": "timm-cls"}
    archs, _ = pipeline.floors([spec("distill", student, eval_feature="avgpool")])
    assert archs == {"timm": pooled}


def test_the_udi_and_dino_rows_are_not_measured_against_the_patch_mean_floor():
    """Issue 17: the `timm` floor is Bootleg MAE's depth-6 patch-mean encoder; UDI and DINO are
    depth-4 class-token ViTs, each with a floor of its own arch."""
    table = yaml.safe_load(pipeline.OUT.read_text())
    archs, of_run = table["floor_archs"], table["run_floors"]
    assert set(of_run) == set(table["runs"]) and set(of_run.values()) == set(archs)
    assert of_run["mae"] == "timm" and archs["timm"]["global_pool"] == "avg"
    for run, tokens in (("dino", 1), ("udi", 2)):
        floor = archs[of_run[run]]
        assert (floor["depth"], floor["num_class_tokens"], floor.get("weight_init", "")) == (4, tokens, "")
    # Hybrid Distill's students, exported at their patch mean: their own class-token arch, pooled by the mean
    students = ("hybrid_clip", "distill_deit", "distill_mae", "distill_clip")
    assert {of_run[run] for run in students} == {"timm-hybrid_clip"}
    floor = built_arch(archs["timm-hybrid_clip"])
    assert (floor["num_class_tokens"], floor["global_pool"], floor["depth"]) == (1, "avg", 6)


def test_cross_eval_evaluates_pixels_and_one_floor_per_key_of_floor_archs(monkeypatch, tmp_path):
    """Several keys share the timm init: each is a directory of its own; the first of each init
    keeps the name of the one floor per init before (random-init-timm) and so its records."""
    seen = []
    monkeypatch.setattr(cross_eval, "ensure_floors", lambda floors, run_info: seen.extend(floors))
    cross_eval.evaluate_floors(tmp_path / "cross", "mini")
    archs = yaml.safe_load(pipeline.OUT.read_text())["floor_archs"]
    names = ["pixels", *(f"random-init-{key}" for key in archs)]
    root = tmp_path / "cross" / "floors-cross-mini"
    assert [(f.name, f.out_dir) for f in seen] == [(n, root / n) for n in names] + \
        [(n, root / n / "mnist5k") for n in names]
    assert {"random-init-ijepa", "random-init-timm", "random-init-moco", "random-init-timm-dino"} <= set(names)
    assert all(f.arch == archs[f.name.removeprefix("random-init-")] for f in seen if f.arch is not None)
    assert [f.eval_cfg["protocols"] for f in seen[len(names):]] == [["knn"]] * len(names)
