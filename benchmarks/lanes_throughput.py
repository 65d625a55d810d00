"""Pipeline lanes: one training process with T threads against T processes with one thread each,
the choice `scripts/repro_lanes.py` makes for the mini stages.

    python benchmarks/lanes_throughput.py [--paper bootleg] [--steps 40] [--reps 3] [--threads 2]

Run from the repository root on an idle machine. Each repetition runs
`benchmarks/train_profile.py <paper> --steps N` once with T threads, then T copies of it at once
with one thread each (so the T-process figure includes their contention for memory bandwidth
and for the loader workers), and reads each run's images/s over its timed window. Prints the
medians over the repetitions, the ratio of the summed T-process throughput to the single
process's within each repetition, and the load average before and after.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "benchmarks" / "train_profile.py"


def start(paper: str, steps: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(PROFILE), paper, "--steps", str(steps), "--threads", str(threads)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def images_per_s(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    found = re.search(r"^images/s: ([0-9.]+)", out, re.M)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"train_profile.py failed (exit {proc.returncode}):\n{out[-2000:]}")
    return float(found.group(1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paper", default="bootleg")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="threads of the single process = processes of the lanes")
    args = p.parse_args(argv)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    single, lanes, ratios = [], [], []
    for rep in range(args.reps):
        one = images_per_s(start(args.paper, args.steps, args.threads))
        many = [images_per_s(proc) for proc in [start(args.paper, args.steps, 1) for _ in range(args.threads)]]
        single.append(one)
        lanes.append(sum(many))
        ratios.append(sum(many) / one)
        print(f"rep {rep + 1}: 1 x {args.threads} threads {one:.1f} img/s; {args.threads} x 1 thread "
              f"{' + '.join(f'{m:.1f}' for m in many)} = {sum(many):.1f} img/s; ratio {ratios[-1]:.2f}", flush=True)
    print(f"\n| {args.paper} mini, {args.steps} steps, {args.reps} reps | img/s (median) |\n|---|---|")
    print(f"| 1 process x {args.threads} threads | {statistics.median(single):.1f} |")
    print(f"| {args.threads} processes x 1 thread (sum) | {statistics.median(lanes):.1f} |")
    print(f"| ratio within a repetition (median) | {statistics.median(ratios):.2f} |")
    print(f"\nload average before {' '.join(load_before)}, after {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
