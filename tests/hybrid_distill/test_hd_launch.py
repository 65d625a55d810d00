"""The launcher: missing mini teachers are built first (dry-run shows the commands), the
paper-scale job array is printed, and bad input fails with the fix."""

import pytest

from hybrid_distill.launch import build_teachers, needed_teachers, run


def test_dry_run_lists_missing_teacher_builds_and_the_runs(capsys, tmp_path):
    run(["--dry-run", f"train.out_root={tmp_path}", f"teachers.mae.path={tmp_path}/mae.pt",
         f"teachers.clip.path={tmp_path}/clip.pt", f"teachers.deit.path={tmp_path}/deit.pt"])
    out = capsys.readouterr().out
    assert "# building missing teacher mae:" in out and "bootleg/launch.py method=mae" in out
    assert "# building missing teacher clip:" in out and "sdssl/launch.py method=moco_v3" in out
    assert "# building missing teacher deit:" in out and "finetune.recipe=supervised" in out
    for name in ("hybrid_clip", "distill_deit", "distill_mae", "distill_clip"):
        assert f"# ---- run {name}" in out


def test_existing_teachers_are_reused(tmp_path):
    (tmp_path / "mae.pt").write_bytes(b"x")
    needed = needed_teachers([f"teachers.mae.path={tmp_path}/mae.pt"], only="distill_mae")
    assert list(needed.values()) == [{"name": "mae", "build": needed[f"{tmp_path}/mae.pt"]["build"], "exists": True}]
    build_teachers(needed, dry_run=False)  # nothing to build, nothing runs


def test_missing_teacher_without_build_command_names_the_fix(tmp_path):
    needed = {str(tmp_path / "x.pt"): {"name": "mae", "build": [], "exists": False}}
    with pytest.raises(SystemExit, match="teachers.<name>.path"):
        build_teachers(needed, dry_run=False)


def test_paper_scale_slurm_dry_run_prints_the_job_array(capsys):
    run(["--dry-run", "--slurm", "experiment=table1", "cost.measure=false"])  # the cost: tests/common/test_cost.py
    out = capsys.readouterr().out
    assert "# ---- run b300_hybrid_clip" in out and "# ---- run l40_hybrid_clip" in out
    assert "#SBATCH --array=0-6" in out and "#SBATCH --gpus-per-node=8" in out
    assert "name: vit_large_patch14_clip_quickgelu_224.openai" in out  # the ViT-L run's teachers
