"""Entry point: ``python <paper>/launch.py [--slurm | --local] [--dry-run] [--only RUN] [key=value ...]``.

Without arguments it trains and evaluates the runs of ``experiment=mini``, evaluates the floor
rows of its table and prints the table of tables.py. The paper is named by this directory, so
a copy needs no edit here.
"""
from pathlib import Path

from common.launch import main
from eval.api import evaluate_run
from eval.tables import table_after_runs

PAPER = Path(__file__).resolve().parent.name


def run(argv: list[str] | None = None) -> None:
    main(paper=PAPER, argv=argv, after_train=evaluate_run, render_table=table_after_runs(PAPER))


if __name__ == "__main__":
    run()
