"""The `tables` stage: each paper's mini table, the cross-paper RESULTS.md and the model zoos.

    python scripts/render_tables.py [--scale mini]   # writes tables/<paper>.md, RESULTS.md, results/<paper>/MODEL_ZOO.yaml
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bootleg import tables as bootleg_tables
from common.launch import plan_runs, render_tables
from common.papers import discover_papers

REPO = Path(__file__).resolve().parents[1]
# where the stages of dvc.yaml train and write records, whatever the scale's own defaults;
# Bootleg's table looks records up through its config, the other papers' in results/<paper>
PIPELINE_ROOTS = ("train.out_root=runs", "results_root=results")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("smoke", "mini"), default="mini",
                   help="the scale of the pipeline (params.yaml): which experiment's table to render")
    args = p.parse_args(argv)
    out = REPO / "tables"
    out.mkdir(exist_ok=True)
    for paper in discover_papers(REPO):
        experiment = plan_runs(paper, [f"scale={args.scale}"])[0].cfg.experiment_name
        text = bootleg_tables.render(experiment, overrides=PIPELINE_ROOTS) if paper == "bootleg" \
            else render_tables(paper, experiment)
        (out / f"{paper}.md").write_text(f"<!-- python {paper}/tables.py ({experiment}) -->\n{text}\n")
        print(f"wrote tables/{paper}.md")
    for script in ("results.py", "model_zoo.py"):
        subprocess.run([sys.executable, str(REPO / "scripts" / script)], check=True, cwd=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
