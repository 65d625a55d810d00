"""Synthetic datasets in the layouts the paper-scale configs read, random-weight teachers, and
the parametrisation of the paper-recipe tests (every run of every table, or a rotating share).

The synthetic root mirrors the relative paths of the configs (``data/imagenet``,
``data/teachers/...``): the tests run with it as the working directory, so a config's own
paths resolve to it; only ``data.name`` paths that are absolute (Bootleg's ``/datasets/...``)
are rewritten. ``synthetic_root`` is a session fixture requested only by the tests that train or
evaluate at paper scale, so it is written (seconds: 8 distinct JPEGs, the rest hard links) only
when one of them runs, never at collection or for skipped cases.
"""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from paper_recipes import (SEG_FOLDER, TORCH_THREADS, Unplannable, ci_cost, experiments, plan, planned,
                           rotation_key)
from seg_synthetic import write_seg_folder

# The folders every `data.name` / `eval.data` of a paper-scale config points to, by basename.
PRETRAIN_FOLDERS = ("imagenet", "imagenet21k")
# small image folders: transfer sets, and ImageNet layout for frozen-feature protocols (low-shot)
TRANSFER_FOLDERS = ("inat21", "inat19", "stanford_cars", "imagenet_tiny")
IMAGENET_CLASSES = 1000
# Pretraining plans its steps from the global batch (up to 4096, MAE and SDSSL ViT-S/32): the
# train split must hold at least that many images for one step per epoch.
IMAGES_PER_CLASS = 5
PAPER_RESOLUTION = 224
# ADE20K layout for the segmentation recipe (eval.seg.data; Hybrid Distill's ade20k_linear): a few
# landscape and portrait images of ADE20K's typical size, labels up to its 150 classes, so that
# training crops are rescaled and validation takes several sliding windows
SEG_SIZES = [(384, 512), (512, 384)]
SEG_CLASSES = (1, 75, 150)


# --------------------------------------------------------------------------- synthetic data
def _smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-frequency colour image (JPEG-compressible, not constant: crops and norms differ)."""
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    from PIL import Image
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))


def _distinct_jpegs(directory: Path, n: int, size: int, seed: int) -> list[Path]:
    from PIL import Image
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = directory / f"base_{i}.JPEG"
        Image.fromarray(_smooth_image(rng, size)).save(path, quality=90)
        paths.append(path)
    return paths


def write_imagefolder(root: Path, bases: list[Path], classes: int, per_class: int, val_images: int) -> Path:
    """``root/train/<wnid>/*.JPEG`` (``classes`` x ``per_class``) and ``root/val/<wnid>/*.JPEG``
    (``val_images``, one per class from the first): hard links of a few distinct images."""
    wnids = [f"n{10000000 + i:08d}" for i in range(classes)]
    for split, count in (("train", per_class), ("val", 1)):
        for c, wnid in enumerate(wnids if split == "train" else wnids[:val_images]):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                src = bases[(c * count + k) % len(bases)]
                dst = folder / f"{wnid}_{k}.JPEG"
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
    return root


def write_cifar100(root: Path, per_class: int = 1, classes: int = 100) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` pickles as the official archive has them."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        n = classes * per_class
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [i % classes for i in range(n)]
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(classes)]}, f)
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A working directory whose ``data/`` holds every dataset layout the paper configs name:
    ImageNet-1k (1000 classes x 5 train images at 224 px, 2 val images), ImageNet-21k (the same
    layout), iNat21 / iNat19 / Stanford Cars / a 4-class ImageNet layout (image folders, 4 classes), CIFAR-100
    (pickles) and ADE20K (``SEG_FOLDER``: 4 training and 2 validation images with their annotations)."""
    root = tmp_path_factory.mktemp("paper_data")
    bases = _distinct_jpegs(root / "bases", 8, PAPER_RESOLUTION, seed=0)
    data = root / "data"
    write_imagefolder(data / "imagenet", bases, IMAGENET_CLASSES, IMAGES_PER_CLASS, val_images=2)
    (data / "imagenet21k").symlink_to(data / "imagenet", target_is_directory=True)
    for name in TRANSFER_FOLDERS:
        write_imagefolder(data / name, bases, classes=4, per_class=2, val_images=2)
    write_cifar100(data / "cifar100")
    write_seg_folder(data / SEG_FOLDER, {"training": 4, "validation": 2}, SEG_SIZES, SEG_CLASSES)
    (data / "teachers").mkdir()
    return root


# --------------------------------------------------------------------------- parametrisation
def wants_all(config) -> bool:
    """`pytest -m paper` (or any marker expression selecting `paper`) runs every recipe."""
    expr = config.getoption("markexpr") or ""
    return "paper" in expr.replace("not paper", "")


# How many pretraining runs the default (CI) selection executes; `-m paper` runs all.
CI_RUNS = 1


def all_runs() -> list[tuple[str, str, object]]:
    return [(paper, exp, spec) for paper, exp in experiments() for spec in planned(paper, exp)]


def rotating_runs(key: int) -> list[tuple[str, str, object]]:
    """CI_RUNS runs that ``ci_cost`` admits, found by walking the experiments from ``key``.

    Only the experiments walked are planned (planning every table takes minutes of CPU at
    collection). An experiment whose paper-scale plan fails on the way joins the share as a
    failing case; an experiment with no run cheap enough is passed over.
    """
    exps = experiments()
    chosen: list[tuple[str, str, object]] = []
    found = 0
    for i in range(len(exps)):
        paper, exp = exps[(key + i) % len(exps)]
        specs = planned(paper, exp)
        if isinstance(specs[0], Unplannable):
            chosen.append((paper, exp, specs[0]))
            continue
        cheap = [spec for spec in specs if ci_cost(spec.cfg) is None]
        if cheap:
            chosen.append((paper, exp, cheap[(key // len(exps)) % len(cheap)]))
            found += 1
            if found == CI_RUNS:
                break
    return chosen


def named_runs(ids: str) -> list[tuple[str, str, object]]:
    """Runs named ``paper/experiment/run`` (comma-separated), as in the test ids."""
    chosen, plans = [], {}
    for name in ids.split(","):
        paper, exp, run = name.strip().split("/")
        if (paper, exp) not in plans:  # one plan per experiment: a list may name all its runs
            plans[paper, exp] = {s.name: s for s in plan(paper, exp)}
        specs = plans[paper, exp]
        if run not in specs:
            raise ValueError(f"PAPER_RECIPES_ONLY: {paper}/{exp} has no run {run!r}; it has {sorted(specs)}")
        chosen.append((paper, exp, specs[run]))
    return chosen


def pytest_generate_tests(metafunc):
    if "paper_run" not in metafunc.fixturenames:
        return
    if os.environ.get("PAPER_RECIPES_ONLY"):  # e.g. rerun one failure without planning every table
        runs, marks = named_runs(os.environ["PAPER_RECIPES_ONLY"]), []
    elif wants_all(metafunc.config):
        runs, marks = all_runs(), [pytest.mark.paper]
    else:
        runs, marks = rotating_runs(rotation_key()), []
    metafunc.parametrize("paper_run", [pytest.param(r, marks=marks, id=f"{r[0]}/{r[1]}/{r[2].name}")
                                       for r in runs])


def pytest_report_header(config):
    if wants_all(config):
        return "paper recipes: every run of every experiment at scale=paper (-m paper)"
    return (f"paper recipes: rotating CI share, key {rotation_key()} (PAPER_RECIPES_ROTATION to choose); "
            "`pytest -m paper tests/paper` runs every run")


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(TORCH_THREADS)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: under -m paper the CI share belongs to the set too
def pytest_collection_modifyitems(config, items):
    """`paper`-marked tests are hours of CPU: they run only when the marker expression asks."""
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.fspath)).parents]
    if wants_all(config):
        for item in mine:
            item.add_marker(pytest.mark.paper)
        return
    # deselected, not skipped: outside `-m paper` they are not part of the run (the header says how
    # to run them), so a skip in CI still means a missing service or a bug
    outside = [item for item in mine if item.get_closest_marker("paper")]
    if outside:
        items[:] = [item for item in items if item not in outside]
        config.hook.pytest_deselected(items=outside)


# --------------------------------------------------------------------------- ledger
def pytest_runtest_logreport(report):
    """``PAPER_RECIPES_LEDGER=<file>``: one JSON line per finished test (id, outcome, seconds,
    commit, threads, time; a recipe's seconds per training step, step_s). The whole `-m paper` set is hours of CPU; with a ledger it can run in
    parts, in several processes or sessions, and what passed at which commit stays readable."""
    path = os.environ.get("PAPER_RECIPES_LEDGER")
    if not path or not (report.when == "call" or report.outcome != "passed"):
        return  # setup and teardown are recorded only when they fail or skip
    import datetime
    import json

    from common.provenance import git_commit
    line = {"test": report.nodeid, "outcome": report.outcome, "when": report.when,
            "seconds": round(report.duration, 1), "commit": git_commit(), "threads": TORCH_THREADS,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **dict(report.user_properties)}  # test_paper_recipe: step_s, seconds per training step
    with open(path, "a") as f:  # one short append per line: processes sharing the file do not interleave
        f.write(json.dumps(line) + "\n")
