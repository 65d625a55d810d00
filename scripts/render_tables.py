"""The `table@<paper>` stages: one paper's table (its default experiment) and its model zoo.

    python scripts/render_tables.py --paper udi [--scale mini]   # tables/udi.md, results/udi/MODEL_ZOO.yaml

Every paper's table is rendered the same way, from the records the pipeline's stages wrote
(`<paper>/tables.py` with the pipeline's overrides); its floor rows come from the
`floors@<paper>` stage. The papers come from `papers` of dvc_runs.yaml
(common.papers.discover_papers); RESULTS.md is the `tables` stage's own (scripts/results.py).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from common.io import atomic_write
from common.papers import discover_papers
from eval.tables import paper_tables

REPO = Path(__file__).resolve().parents[1]
# where the stages of dvc.yaml train and write records, whatever the scale's own defaults
PIPELINE_ROOTS = ("train.out_root=runs", "results_root=results")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("smoke", "mini"), default="mini",
                   help="the scale of the pipeline (params.yaml): which experiment's table to render")
    p.add_argument("--paper", required=True, choices=discover_papers(REPO))
    args = p.parse_args(argv)
    overrides = [f"scale={args.scale}", *PIPELINE_ROOTS]
    text = paper_tables(args.paper).render(overrides)
    atomic_write(REPO / "tables" / f"{args.paper}.md",
                 f"<!-- python {args.paper}/tables.py {shlex.join(overrides)} -->\n{text}\n")
    print(f"wrote tables/{args.paper}.md")
    subprocess.run([sys.executable, str(REPO / "scripts" / "model_zoo.py"), "--papers", args.paper],
                   check=True, cwd=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
