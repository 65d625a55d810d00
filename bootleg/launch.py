"""Bootleg's entry point: ``python bootleg/launch.py [--slurm | --local] [--dry-run] [key=value ...]``.

Without arguments it runs the mini comparison (Bootleg vs I-JEPA vs MAE on Fashion-MNIST:
pretraining, then k-NN, linear and attentive probes) and prints the side-by-side table.
``experiment=<name>`` selects another table or figure (bootleg/configs/experiment/).
"""
from common.launch import main

if __name__ == "__main__":
    main(paper="bootleg")
