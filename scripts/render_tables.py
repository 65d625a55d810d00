"""The `tables` stage: each paper's mini table, the cross-paper RESULTS.md and the model zoos.

    python scripts/render_tables.py          # writes tables/<paper>.md, RESULTS.md, results/<paper>/MODEL_ZOO.yaml
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.launch import plan_runs, render_tables

REPO = Path(__file__).resolve().parents[1]
PAPERS = ("bootleg", "sdssl", "hybrid_distill", "udi")


def main() -> int:
    out = REPO / "tables"
    out.mkdir(exist_ok=True)
    for paper in PAPERS:
        experiment = plan_runs(paper, [])[0].cfg.experiment_name
        text = render_tables(paper, experiment)
        (out / f"{paper}.md").write_text(f"<!-- python {paper}/tables.py ({experiment}) -->\n{text}\n")
        print(f"wrote tables/{paper}.md")
    for script in ("results.py", "model_zoo.py"):
        subprocess.run([sys.executable, str(REPO / "scripts" / script)], check=True, cwd=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
