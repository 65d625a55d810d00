"""The `table@<paper>` stages: one paper's mini table and its model zoo.

    python scripts/render_tables.py --paper udi [--scale mini]   # tables/udi.md, results/udi/MODEL_ZOO.yaml

The papers come from `papers` of dvc_runs.yaml (common.papers.discover_papers); RESULTS.md is
the `tables` stage's own (scripts/results.py).
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

from bootleg import tables as bootleg_tables
from common.launch import plan_runs
from common.papers import discover_papers

REPO = Path(__file__).resolve().parents[1]
# where the stages of dvc.yaml train and write records, whatever the scale's own defaults;
# Bootleg's table looks records up through its config, the other papers' in results/<paper>
PIPELINE_ROOTS = ("train.out_root=runs", "results_root=results")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("smoke", "mini"), default="mini",
                   help="the scale of the pipeline (params.yaml): which experiment's table to render")
    p.add_argument("--paper", required=True, choices=discover_papers(REPO))
    args = p.parse_args(argv)
    out = REPO / "tables"
    out.mkdir(exist_ok=True)
    paper = args.paper
    experiment = plan_runs(paper, [f"scale={args.scale}"])[0].cfg.experiment_name
    text = bootleg_tables.render(experiment, overrides=PIPELINE_ROOTS) if paper == "bootleg" \
        else importlib.import_module(f"{paper}.tables").render(experiment)
    (out / f"{paper}.md").write_text(f"<!-- python {paper}/tables.py ({experiment}) -->\n{text}\n")
    print(f"wrote tables/{paper}.md")
    subprocess.run([sys.executable, str(REPO / "scripts" / "model_zoo.py"), "--papers", paper], check=True, cwd=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
