"""The paper's table: our records of an experiment's runs beside the paper's own numbers.

    python <paper>/tables.py [experiment]   # markdown on stdout (default: mini)

``render(experiment)`` is what launch.py prints after its runs and what the DVC ``tables``
stage writes to tables/<paper>.md. It only reads records (results/<paper>/<run>/*.json).
"""
from __future__ import annotations

import sys
from pathlib import Path

from common.launch import plan_runs
from eval.records import load_records
from eval.report import table

PAPER = Path(__file__).resolve().parent.name
# {run: {protocol: the paper's number}}: the paper column of the table (none for the template)
PAPER_VALUES: dict[str, dict[str, float]] = {}


def render(experiment: str = "mini") -> str:
    runs = plan_runs(PAPER, [f"experiment={experiment}"])
    root = Path(runs[0].cfg.results_root) / PAPER
    records = load_records(d for d in (root / run.name for run in runs) if d.is_dir())
    if not records:
        return f"{PAPER} {experiment}: no records under {root} yet (python {PAPER}/launch.py experiment={experiment})"
    return f"### {PAPER}: {experiment}\n\n" + table(records, PAPER_VALUES)


if __name__ == "__main__":
    print(render(*sys.argv[1:2]))
