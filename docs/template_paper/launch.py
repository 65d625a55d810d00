"""Entry point: ``python <paper>/launch.py [--slurm | --local] [--dry-run] [--only RUN] [key=value ...]``.

Without arguments it trains and evaluates the runs of ``experiment=mini`` and prints the table
of tables.py. The paper is named by this directory, so a copy needs no edit here.
"""
from pathlib import Path

from common.launch import main

if __name__ == "__main__":
    main(paper=Path(__file__).resolve().parent.name)
