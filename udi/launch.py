"""Entry point: ``python udi/launch.py [--slurm | --local] [--dry-run] [key=value ...]``.

Without arguments it runs the mini comparison (DINO vs UDI vs UDI+ on Fashion-MNIST) and
prints its table; ``experiment=paper_in1k --slurm`` submits the paper-scale runs.
"""
from common.launch import main

if __name__ == "__main__":
    main(paper="udi")
