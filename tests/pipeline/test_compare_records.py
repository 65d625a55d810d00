"""scripts/compare_records.py: a reproduction checked record by record against another tree."""
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_records", REPO / "scripts/compare_records.py")
compare_records = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_records)
main = compare_records.main


def write(root, rel, value, sha="s1", extra_metric=None):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"knn/cls/k20/top1": value, "knn/cls/k20/top5": 90.0, **(extra_metric or {})}
    path.write_text(json.dumps({"protocol": "knn", "metric": "knn/cls/k20/top1", "value": value,
                                "metrics": metrics, "checkpoint_sha256": sha, "eval_config_hash": "h"}))


def test_identical_trees_pass_and_differences_beyond_the_tolerance_fail(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "run/knn.json", 60.0)
    write(b, "run/knn.json", 60.0)
    assert main([str(a), str(b)]) == 0
    write(b, "run/knn.json", 60.5, sha="s2")
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "max |diff| 0.50 (knn/cls/k20/top1) encoder-differs" in out
    assert main([str(a), str(b), "--tol", "0.5"]) == 0


def test_records_or_metrics_on_one_side_only_fail(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "run/knn.json", 60.0)
    write(b, "run/knn.json", 60.0, extra_metric={"knn/cls/k5/top1": 58.0})
    assert main([str(a), str(b), "--tol", "100"]) == 1
    write(b, "run/knn.json", 60.0)
    write(b, "other/knn.json", 60.0)
    assert main([str(a), str(b)]) == 1
    assert "ONLY IN b  other/knn.json" in capsys.readouterr().out
    assert main([str(a), str(tmp_path / "missing")]) == 2
