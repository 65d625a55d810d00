"""The launcher: teachers are inputs it reads from the manifest (never builds), a missing one
stops it before it writes anything with the command that builds it, the paper-scale job array
is printed, and bad input fails with the fix."""

import json
from pathlib import Path

import pytest

from common.checkpoint import sha256_file
from common.launch import plan_runs
from hd_smoke_teachers import save_teacher
from hybrid_distill.launch import run
from hybrid_distill.manifest import MissingTeacherError, manifest_path, resolve_encoder_teacher

ROLES = ("clip", "deit", "mae")


def write_manifest(results: Path, teachers: dict[str, Path], scale: str = "smoke") -> Path:
    entries = {role: {"path": str(path), "sha256": sha256_file(path), "scale": scale, "build": "python ..."}
               for role, path in teachers.items()}
    path = manifest_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return path


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: what a run that writes nothing leaves equal."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def roots(tmp_path: Path) -> list[str]:
    return ["scale=smoke", f"train.out_root={tmp_path}/runs", f"results_root={tmp_path}/results"]


def test_without_teachers_the_launcher_names_the_build_command_and_writes_nothing(tmp_path):
    with pytest.raises(SystemExit) as exc:
        run(roots(tmp_path))
    message = str(exc.value)
    assert "\n" not in message and "teacher 'clip' is not built" in message
    assert "dvc repro teachers" in message
    assert f"python scripts/build_teachers.py scale=smoke train.out_root={tmp_path}/runs " \
           f"results_root={tmp_path}/results" in message
    assert "also missing: mae, deit" in message
    assert list(tmp_path.iterdir()) == []


def test_one_missing_teacher_file_stops_the_launcher_before_it_writes(tmp_path):
    teachers = {role: save_teacher(tmp_path / "teachers" / role / "encoder.pt", seed) for seed, role in enumerate(ROLES)}
    write_manifest(tmp_path / "results", teachers)
    teachers["mae"].unlink()
    before = tree(tmp_path)
    with pytest.raises(SystemExit, match=r"teacher 'mae': .*mae/encoder.pt, recorded in .*teachers.json, does not exist; "
                                         r"run `dvc repro teachers`"):
        run(roots(tmp_path))
    assert tree(tmp_path) == before  # no run directory, no floor record, no manifest update


def test_dry_run_notes_missing_teachers_and_lists_the_runs(capsys, tmp_path):
    run(["--dry-run", *roots(tmp_path)])
    out = capsys.readouterr().out
    for role in ROLES:
        assert f"# teacher '{role}' is not built" in out
    for spec in plan_runs("hybrid_distill", roots(tmp_path)):
        assert f"# ---- run {spec.name}" in out
    assert list(tmp_path.iterdir()) == []


def test_manifest_entry_gives_path_and_sha256(tmp_path):
    encoder = save_teacher(tmp_path / "mae.pt", 0)
    write_manifest(tmp_path, {"mae": encoder})
    spec = resolve_encoder_teacher("mae", {"kind": "encoder", "path": None, "sha256": None}, "smoke", "runs", tmp_path)
    assert spec == {"kind": "encoder", "path": str(encoder), "sha256": sha256_file(encoder)}


@pytest.mark.parametrize("case,message", [
    ("other_scale", r"teacher 'mae' of .* was built for scale=mini, this run is scale=smoke; "
                    r".*build_teachers.py scale=smoke"),
    ("changed_file", r"teacher 'mae': .*mae.pt is not the file .* records"),
    ("no_entry", r"teacher 'mae' is not built \(.*teachers.json has no entry 'mae'\)"),
    ("explicit_path", r"teachers.mae.path=.*nowhere.pt does not exist; point it to an encoder.pt"),
])
def test_unusable_teacher_is_refused_with_the_fix(tmp_path, case, message):
    encoder = save_teacher(tmp_path / "mae.pt", 0)
    spec = {"kind": "encoder", "path": None, "sha256": None}
    write_manifest(tmp_path, {"mae": encoder}, scale="mini" if case == "other_scale" else "smoke")
    if case == "changed_file":
        save_teacher(encoder, seed=1)
    elif case == "no_entry":
        write_manifest(tmp_path, {"clip": encoder})
    elif case == "explicit_path":
        spec["path"] = str(tmp_path / "nowhere.pt")
    with pytest.raises(MissingTeacherError, match=message):
        resolve_encoder_teacher("mae", spec, "smoke", "runs", tmp_path)


def test_paper_scale_slurm_dry_run_prints_the_job_array(capsys):
    run(["--dry-run", "--slurm", "experiment=table1", "cost.measure=false"])  # the cost: tests/common/test_cost.py
    out = capsys.readouterr().out
    assert "# ---- run b300_hybrid_clip" in out and "# ---- run l40_hybrid_clip" in out
    assert "#SBATCH --array=0-6" in out and "#SBATCH --gpus-per-node=8" in out
    assert "name: vit_large_patch14_clip_quickgelu_224.openai" in out  # the ViT-L run's teachers
    assert "# teacher" not in out  # timm teachers: weight files, found where the job runs
