"""scripts/build_teachers.py: trains the smoke teachers with the other papers' entry points and
records them in the manifest that hybrid_distill/launch.py accepts; dvc.yaml's `teachers` outs
are where it puts the encoders; an existing supervised teacher and another scale's manifest
are left alone."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from common.checkpoint import load_encoder, sha256_file
from common.launch import plan_runs
from common.train import run_dir_of
from hybrid_distill.launch import run as hybrid_launch
from hybrid_distill.manifest import manifest_path
from hybrid_distill.model import used_teachers
from scripts import build_teachers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The smoke teachers (about a minute at one thread) and the roots they were built under."""
    root = tmp_path_factory.mktemp("teachers")
    settings = {"scale": "smoke", "train.out_root": str(root / "runs"), "results_root": str(root / "results")}
    assert build_teachers.main([f"{k}={v}" for k, v in settings.items()]) == 0
    return settings, json.loads(manifest_path(settings["results_root"]).read_text())


@pytest.mark.slow
def test_smoke_teachers_are_recorded_with_their_sha256_and_command(built):
    settings, manifest = built
    assert sorted(manifest) == ["clip", "deit", "mae"]
    for entry in manifest.values():
        assert entry["scale"] == "smoke" and sha256_file(entry["path"]) == entry["sha256"]
    assert manifest["mae"]["build"].startswith("python bootleg/launch.py experiment=none scale=smoke method=mae")
    assert manifest["clip"]["build"].startswith("python sdssl/launch.py experiment=none scale=smoke method=moco_v3")
    assert "protocol=finetune finetune.recipe=supervised" in manifest["deit"]["build"]
    # the paper teachers are where their own run configs put them
    mae_cfg = plan_runs("bootleg", shlex.split(manifest["mae"]["build"])[2:])[0].cfg
    assert manifest["mae"]["path"] == str(run_dir_of(mae_cfg) / "encoder.pt")
    _, meta, _ = load_encoder(manifest["mae"]["path"])
    assert meta["method"] == "mae" and meta["img_size"] == 16


@pytest.mark.slow
def test_hybrid_launch_distils_from_the_built_teachers(built):
    settings, manifest = built
    roots = [f"{k}={v}" for k, v in settings.items()]
    # the hybrid run: a feature teacher and the MAE teacher (relations and masking)
    spec = next(s for s in plan_runs("hybrid_distill", roots) if used_teachers(s.cfg) == ["clip", "mae"])
    hybrid_launch(["--only", spec.name, "train.epochs=1", "train.progress=false", "train.threads=1", *roots])
    _, meta, _ = load_encoder(run_dir_of(spec.cfg) / "encoder.pt")
    assert {name: t["sha256"] for name, t in meta["teachers"].items()} == \
        {name: manifest[name]["sha256"] for name in ("clip", "mae")}


def test_dvc_teachers_outs_are_where_the_script_puts_the_encoders():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["teachers"]
    scale = yaml.safe_load((REPO / "params.yaml").read_text())["scale"]
    settings, dry_run = build_teachers.parse(stage["cmd"].replace("${scale}", scale).split()[2:])
    planned = build_teachers.plan(settings["scale"], settings["train.out_root"], settings["results_root"])
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    outs = [o.replace("${scale}", scale) for o in outs]
    expected = [str(t.encoder) for t in planned] + [str(manifest_path(settings["results_root"]))]
    assert sorted(outs) == sorted(expected), "update the outs of the teachers stage in dvc.yaml"
    assert not dry_run


def test_existing_supervised_teacher_is_reused(tmp_path, monkeypatch, capsys):
    [*_, deit] = build_teachers.plan("smoke", str(tmp_path), str(tmp_path))
    assert deit.trainer == build_teachers.FINETUNE
    deit.encoder.parent.mkdir(parents=True)
    deit.encoder.write_bytes(b"kept")
    monkeypatch.setattr(build_teachers.subprocess, "run", lambda *a, **k: pytest.fail("retrained"))
    build_teachers.train(deit)
    assert deit.encoder.read_bytes() == b"kept" and "reusing" in capsys.readouterr().out


def test_another_scales_manifest_is_not_replaced(tmp_path):
    manifest = manifest_path(tmp_path)
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"mae": {"path": "x", "sha256": "y", "scale": "mini"}}))
    before = manifest.read_text()
    with pytest.raises(SystemExit, match=r"records the scale=mini teachers; pass another results_root="):
        build_teachers.main(["scale=smoke", f"results_root={tmp_path}", f"train.out_root={tmp_path}/runs"])
    assert manifest.read_text() == before and not (tmp_path / "runs").exists()


def test_unknown_setting_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit):
        build_teachers.main(["epochs=3"])
    err = capsys.readouterr().err
    assert "'epochs=3': expected key=value with key one of scale, train.out_root, results_root" in err
