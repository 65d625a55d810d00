"""SDSSL entry point: ``python sdssl/launch.py [--slurm | --local] [--dry-run] [key=value ...]``.

Without arguments it trains and evaluates the six methods of the mini comparison
(``experiment=mini``) and prints the table; ``experiment=table1 scale=paper --slurm`` sends the
paper's Table 1 as one job array.  See sdssl/README.md for every table and figure.
"""
from common.launch import main
from eval.api import evaluate_run
from eval.tables import table_after_runs


def run(argv: list[str] | None = None) -> None:
    main(paper="sdssl", argv=argv, after_train=evaluate_run, render_table=table_after_runs("sdssl"))


if __name__ == "__main__":
    run()
