"""A paper directory never reaches into another one: it imports no other paper and starts no
process (the work of another paper that it needs, such as Hybrid Distill's teachers, is done
by scripts/ and a DVC stage, and comes in as files)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.papers import discover_papers

REPO = Path(__file__).resolve().parents[2]
PAPERS = discover_papers(REPO)


def imported_packages(path: Path) -> set[str]:
    """Top-level names of the absolute imports of one module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("paper", PAPERS)
def test_a_paper_imports_no_other_paper_and_starts_no_process(paper):
    forbidden = (set(PAPERS) - {paper}) | {"subprocess"}
    offenders = {str(path.relative_to(REPO)): sorted(imported_packages(path) & forbidden)
                 for path in sorted((REPO / paper).rglob("*.py"))}
    assert {module: names for module, names in offenders.items() if names} == {}


def test_the_check_sees_an_import_of_another_paper(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import subprocess\nfrom bootleg.model import build_method\n")
    assert {"subprocess", "bootleg"} <= imported_packages(module)
