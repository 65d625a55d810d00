"""Entry point: ``python <paper>/launch.py [--slurm | --local] [--dry-run] [--only RUN] [key=value ...]``.

Without arguments it trains and evaluates the runs of ``experiment=mini`` and prints the table
of tables.py. The paper is named by this directory, so a copy needs no edit here.
"""
import importlib
from pathlib import Path

from common.launch import main
from eval.api import evaluate_run

PAPER = Path(__file__).resolve().parent.name


def run(argv: list[str] | None = None) -> None:
    render = importlib.import_module(f"{PAPER}.tables").render
    main(paper=PAPER, argv=argv, after_train=evaluate_run, render_table=render)


if __name__ == "__main__":
    run()
