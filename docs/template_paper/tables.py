"""The paper's table: our records of an experiment's runs beside the paper's own numbers.

    python <paper>/tables.py [experiment] [key=value ...]   # markdown on stdout (default: mini)

``render(experiment)`` is what launch.py prints after its runs and what the DVC ``tables``
stage writes to tables/<paper>.md. It only reads records (results/<paper>/<scale>/<run>/*.json;
``scale=smoke`` among the overrides reads a smoke run's).
"""
from __future__ import annotations

import sys
from pathlib import Path

from common.launch import plan_runs
from eval.records import load_records, records_dir
from eval.report import table

PAPER = Path(__file__).resolve().parent.name
# {run: {protocol: the paper's number}}: the paper column of the table (none for the template)
PAPER_VALUES: dict[str, dict[str, float]] = {}


def render(experiment: str = "mini", overrides: tuple[str, ...] = ()) -> str:
    runs = plan_runs(PAPER, [f"experiment={experiment}", *overrides])
    records = load_records(d for d in (records_dir(run.cfg) for run in runs) if d.is_dir())
    if not records:
        return (f"{PAPER} {experiment}: no records under {records_dir(runs[0].cfg).parent} yet "
                f"(python {PAPER}/launch.py experiment={experiment} {' '.join(overrides)})")
    return f"### {PAPER}: {experiment}\n\n" + table(records, PAPER_VALUES)


if __name__ == "__main__":
    print(render(*sys.argv[1:2], overrides=tuple(sys.argv[2:])))
