"""Entry point: ``python udi/launch.py [--slurm | --local] [--dry-run] [key=value ...]``.

Without arguments it runs the mini comparison (DINO vs UDI vs UDI+ on Fashion-MNIST) and
prints its table; ``experiment=paper_in1k --slurm`` submits the paper-scale runs.
"""
from common.launch import main
from eval.api import evaluate_run
from eval.tables import table_after_runs


def run(argv: list[str] | None = None) -> None:
    main(paper="udi", argv=argv, after_train=evaluate_run, render_table=table_after_runs("udi"))


if __name__ == "__main__":
    run()
