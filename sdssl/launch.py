"""SDSSL entry point: ``python sdssl/launch.py [--slurm | --local] [--dry-run] [key=value ...]``.

Without arguments it trains and evaluates the six methods of the mini comparison
(``experiment=mini``) and prints the table; ``experiment=table1 scale=paper --slurm`` sends the
paper's Table 1 as one job array.  See sdssl/README.md for every table and figure.
"""
from common.launch import main

if __name__ == "__main__":
    main(paper="sdssl")
