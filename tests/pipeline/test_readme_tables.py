"""scripts/sync_readme_tables.py: the table blocks of the paper READMEs are the table part of
tables/<paper>.md, `--check` names a README whose block is stale, and a bad marker is refused."""
from __future__ import annotations

from pathlib import Path

from scripts import sync_readme_tables as sync

REPO = Path(__file__).resolve().parents[2]

TABLE = """<!-- python toy/tables.py scale=mini train.out_root=runs results_root=results -->
### Toy mini: fashion_mnist

| row | k-NN top-1 |
|---|---|
| Toy | {knn} ± 0.4 (n=3) |
| floor: raw pixels | 80.8 |

k-NN at k=20 on the class token.
mean ± std (n=K): over the pretraining seeds.

Provenance of every number above (record, checkpoint, config, commit, data, hardware):

- `results/toy/mini/toy/knn.json`: knn/cls/k20/top1={knn}0 ckpt 14f80cc92cf0 commit abd6a9e44d7c, 2026-12-03T12:13:38+00:00
"""


def make_repo(root: Path, readme_marker: str = "tables/toy.md", knn: str = "51.4") -> Path:
    """A repository root with one paper `toy` (configs/config.yaml + launch.py), its tables
    file and a README with one marked, still empty, block."""
    paper = root / "toy"
    (paper / "configs").mkdir(parents=True)
    (paper / "configs" / "config.yaml").write_text("{}\n")
    (paper / "launch.py").write_text("")
    (root / "tables").mkdir()
    (root / "tables" / "toy.md").write_text(TABLE.format(knn=knn))
    readme = paper / "README.md"
    readme.write_text(f"# Toy\n\nBefore.\n\n<!-- table: {readme_marker} -->\n<!-- /table -->\n\nAfter.\n")
    return readme


def test_the_committed_readmes_are_in_sync():
    assert sync.main(["--check", "--root", str(REPO)]) == 0


def test_the_block_is_the_table_part_without_heading_or_provenance(tmp_path):
    readme = make_repo(tmp_path)
    assert sync.main(["--root", str(tmp_path)]) == 0
    text = readme.read_text()
    assert text.startswith("# Toy\n\nBefore.\n\n<!-- table: tables/toy.md -->\n\n| row | k-NN top-1 |")
    assert text.endswith("<!-- /table -->\n\nAfter.\n")
    assert "| Toy | 51.4 ± 0.4 (n=3) |" in text and "mean ± std (n=K): over the pretraining seeds." in text
    assert "[`tables/toy.md`](../tables/toy.md)" in text
    for dropped in ("python toy/tables.py", "### Toy mini", "Provenance of every number above", "knn.json"):
        assert dropped not in text


def test_a_changed_number_fails_the_check_naming_the_readme_and_a_sync_fixes_it(tmp_path, capsys):
    readme = make_repo(tmp_path)
    root = ["--root", str(tmp_path)]
    assert sync.main(root) == 0
    assert sync.main(["--check", *root]) == 0
    (tmp_path / "tables" / "toy.md").write_text(TABLE.format(knn="52.0"))
    capsys.readouterr()
    before = readme.read_text()
    assert sync.main(["--check", *root]) == 1
    err = capsys.readouterr().err
    assert "toy/README.md" in err and "python scripts/sync_readme_tables.py" in err
    assert readme.read_text() == before  # --check writes nothing
    assert sync.main(root) == 0
    assert "updated: toy/README.md" in capsys.readouterr().out
    assert "| Toy | 52.0 ± 0.4 (n=3) |" in readme.read_text()
    assert sync.main(["--check", *root]) == 0


def test_a_marker_naming_a_missing_tables_file_is_refused_naming_it(tmp_path, capsys):
    make_repo(tmp_path, readme_marker="tables/nope.md")
    assert sync.main(["--check", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "tables/nope.md" in err and "toy/README.md" in err and "does not exist" in err


def test_an_unclosed_marker_is_refused_and_nothing_is_written(tmp_path, capsys):
    readme = make_repo(tmp_path)
    readme.write_text("# Toy\n\n<!-- table: tables/toy.md -->\nold\n")
    assert sync.main(["--root", str(tmp_path)]) == 2
    assert "never closed" in capsys.readouterr().err
    assert readme.read_text() == "# Toy\n\n<!-- table: tables/toy.md -->\nold\n"
