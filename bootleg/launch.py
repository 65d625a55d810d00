"""Bootleg's entry point: ``python bootleg/launch.py [--slurm | --local] [--dry-run] [key=value ...]``.

Without arguments it runs the mini comparison (Bootleg vs I-JEPA vs MAE on Fashion-MNIST:
pretraining, then k-NN, linear and attentive probes) and prints the side-by-side table.
``experiment=<name>`` selects another table or figure (bootleg/configs/experiment/).
"""
from common.launch import main
from eval.api import evaluate_run
from eval.tables import table_after_runs


def run(argv: list[str] | None = None) -> None:
    main(paper="bootleg", argv=argv, after_train=evaluate_run, render_table=table_after_runs("bootleg"))


if __name__ == "__main__":
    run()
