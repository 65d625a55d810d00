"""Build the mini teachers that Hybrid Distill needs (the `teachers` stage of dvc.yaml).

Each teacher is trained by another entry point of the repository (Bootleg's MAE, SDSSL's
MoCo v3, eval/'s supervised fine-tuning from scratch), exactly as `python
hybrid_distill/launch.py` does before its runs; existing teachers are reused.

    python scripts/build_teachers.py [key=value ...]     # overrides of the hybrid_distill config
"""
from __future__ import annotations

import sys

from hybrid_distill.launch import build_teachers, needed_teachers, write_manifest


def main(argv: list[str]) -> int:
    needed = needed_teachers(argv)
    build_teachers(needed, dry_run=False)
    write_manifest(needed)
    for path, teacher in needed.items():
        print(f"teacher {teacher['name']}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
