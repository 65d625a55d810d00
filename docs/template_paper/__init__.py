"""A template paper: copy this directory to the repository root and rename it (docs/ADDING_A_PAPER.md)."""
