"""The paper's table: our records of an experiment's runs beside the paper's own numbers.

    python <paper>/tables.py [experiment=mini] [key=value ...] [--out FILE]   # markdown on stdout

The overrides are the ones given to launch.py, so the table reads what that launch wrote.
``table(runs)`` declares the rows (one per run here) and the paper column; eval/tables.py adds
the floor rows (raw pixels, a random encoder per init) and the provenance of every number.
Rendering only reads records: launch.py (or ``python -m eval.tables floors --paper <paper>``)
evaluates the floors first.
"""
from __future__ import annotations

from pathlib import Path

from eval.tables import Column, Row, Table, fmt, render_cli, render_experiment, run_records

PAPER = Path(__file__).resolve().parent.name
# {run: {protocol: the paper's number}}: the paper column of the table (none for the template)
PAPER_VALUES: dict[str, dict[str, float]] = {}


def table(runs) -> Table:
    cfg = runs[0].cfg
    protocols = list(cfg.eval.protocols)
    rows = [Row(f"{run.cfg.method.name} ({run.name})", run_records(run),
                [fmt(PAPER_VALUES.get(run.name, {}).get(p)) for p in protocols]) for run in runs]
    return Table(f"{PAPER}: {cfg.experiment_name} ({cfg.eval.data})", [Column(p, p) for p in protocols], rows,
                 [f"paper {p}" for p in protocols])


def render(overrides=()) -> str:
    return render_experiment(PAPER, overrides, table)


if __name__ == "__main__":
    render_cli(render)
