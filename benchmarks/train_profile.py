"""Where a training step's wall time goes in the real training loop (`common.train.train`).

    python benchmarks/train_profile.py <paper> [--run RUN] [--steps N] [--threads T]
        [--torch-profile [--profile-steps K] [--top M]] [--out DIR] [key=value ...]

Run from the repository root. Plans the paper's experiment at mini scale as its launcher does
(`common.launch.plan_runs(paper, ["scale=mini", *overrides])`; `--run` picks a run, default
the first), trains that run with the real loop for `train.max_steps=N` steps into a temporary
directory (`--out` keeps it) with `train.log_every=1`, and prints:

* images/s over steps 2..N: the first step, which also holds the step-0 monitors and the first
  data-loader start-up, is warm-up;
* the loop's wall time per phase over those steps (`time_<phase>_s` of the log lines, see
  `common.phases`): data (loader start-up, waits for batches, worker shut-down), step (forward,
  backward, optimizer, `after_step`: EMA), monitor (health, online k-NN), ckpt, log, and other
  (progress bar, loop bookkeeping), in seconds and % of the wall time; the data time of each
  epoch's first step (the loader is made again every epoch) against the median step's;
* this process's CPU seconds and the loader workers' (children that have exited), which
  compete with the step for the cores without showing up as data time;
* FLOPs per training step (`common.cost.measure_step`: `training_step` forward + backward
  counted by FlopCounterMode, CPU attention included, at batch 2, times the batch), the
  achieved GFLOP/s over the window's wall time and over its step phase alone, a 2048x2048 fp32
  matmul's GFLOP/s measured in the same process afterwards (same torch threads) and the % of it
  (with `train.precision=bf16` also a bf16 matmul's, the ceiling of a bf16 step);
* the load average before and after (`/proc/loadavg`): on a shared machine the figures are
  only comparable at similar loads.

`--torch-profile` records steps K+1..2K with `torch.profiler` (a training hook called at steps
K and 2K) and prints the operators with the most self CPU time; the profiler's overhead then
lands in those steps and the monitor phase, so take the timing figures from a run without it.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

import common.train
from benchmarks.bootleg_bench import loadavg, matmul_gflops
from common.config import load_config
from common.cost import measure_step
from common.launch import plan_runs
from common.train import run_dir_of, train, training_log

PHASES = {"data": "data (loader start-up, waits for batches, worker shut-down)",
          "step": "step (forward, backward, optimizer, after_step/EMA)",
          "monitor": "monitor (health, online k-NN: train.hooks)",
          "ckpt": "ckpt (finite check, checkpoint write)",
          "log": "log (log.jsonl line, progress-bar postfix)"}


class ProfilerHook:
    """A training hook (`common.hooks`) that runs `torch.profiler` from step `every` to step
    2 x `every`, so that it records the steps in between."""

    def __init__(self, every: int):
        self.every = every
        self.profiler: torch.profiler.profile | None = None
        self.done = False

    def __call__(self, step: int, method, first) -> dict:
        if step == self.every and self.profiler is None:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.start()
        elif step == 2 * self.every and self.profiler is not None and not self.done:
            self.profiler.stop()
            self.done = True
        return {}


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_config(paper: str, run: str | None, overrides: list[str], steps: int, threads: int | None, out: Path):
    """The run's config as `python <paper>/launch.py scale=mini ...` plans it, capped at `steps`."""
    specs = plan_runs(paper, ["scale=mini", *overrides], run)
    spec = specs[0]
    extra = [f"train.max_steps={steps}", f"train.out_root={out / 'runs'}", f"results_root={out / 'results'}",
             "train.log_every=1", "train.progress=false"]
    if threads:
        extra.append(f"train.threads={threads}")
    return spec.name, load_config(paper, [*spec.overrides, *extra])


def window_report(records: list[dict], batch: int) -> dict:
    """Images/s and seconds per phase over the log lines of steps 2..N (one line a step)."""
    window = [r for r in records if r["step"] >= 2]
    if not window:
        raise SystemExit("error: --steps must be at least 2 (step 1 is warm-up)")
    wall = sum(r["time_wall_s"] for r in window)
    seconds = {p: sum(r[f"time_{p}_s"] for r in window) for p in PHASES}
    seconds["other"] = wall - sum(seconds.values())
    return {"steps": len(window), "first": window[0]["step"], "last": window[-1]["step"],
            "wall": wall, "seconds": seconds, "img_per_s": len(window) * batch / wall}


def epoch_starts(records: list[dict]) -> list[dict]:
    """The log lines of each epoch's first step after the first epoch (a new DataLoader)."""
    return [r for prev, r in zip(records, records[1:]) if r["epoch"] != prev["epoch"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/train_profile.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paper")
    parser.add_argument("--run", default=None, help="a run of the mini experiment (default: its first)")
    parser.add_argument("--steps", type=int, default=100,
                        help="train.max_steps (default 100: bootleg's mini crosses an epoch at 78 and "
                             "runs its health monitor at 50 and k-NN monitor at 100)")
    parser.add_argument("--threads", type=int, default=None,
                        help="train.threads (default: the paper's config, null = torch's default)")
    parser.add_argument("--torch-profile", action="store_true")
    parser.add_argument("--profile-steps", type=int, default=5, help="with --torch-profile: K (steps K+1..2K)")
    parser.add_argument("--top", type=int, default=25, help="with --torch-profile: operators listed")
    parser.add_argument("--matmul-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="keep the run directory here")
    parser.add_argument("overrides", nargs="*", help="key=value, as for the paper's launch.py")
    args = parser.parse_intermixed_args(argv)
    if args.torch_profile and args.steps < 2 * args.profile_steps:
        parser.error(f"--torch-profile needs --steps >= 2 x --profile-steps ({2 * args.profile_steps})")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="train-profile-") as tmp:
        out = args.out or Path(tmp)
        name, cfg = run_config(args.paper, args.run, args.overrides, args.steps, args.threads, out)
        batch = int(cfg.data.get("per_process_batch") or cfg.data.batch_size)  # one process
        print(f"load average before: {loadavg()}", flush=True)
        print(f"run {args.paper}/{cfg.scale_name}/{name}: {args.steps} steps of {batch} images, "
              f"data.num_workers={cfg.data.num_workers}, train.threads={cfg.train.get('threads')}, "
              f"output {run_dir_of(cfg)}", flush=True)
        hook = ProfilerHook(args.profile_steps) if args.torch_profile else None
        load_hooks = common.train.load_hooks
        cpu_self, cpu_children = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        with mock.patch.object(common.train, "load_hooks", lambda c: [*load_hooks(c), *([hook] if hook else [])]):
            summary = train(cfg)
        elapsed = time.perf_counter() - started
        cpu_self, cpu_children = (cpu_seconds(resource.RUSAGE_SELF) - cpu_self,
                                  cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_children)
        records = training_log(run_dir_of(cfg))
        lines = [json.loads(line) for line in (run_dir_of(cfg) / "log.jsonl").read_text().splitlines()]
        monitor_steps = sorted({r["step"] for r in lines if r.get("kind") == "monitor" and len(r) > 3})
        threads = torch.get_num_threads()  # as the loop set them

        w = window_report(records, batch)
        print(f"\nTimed window: steps {w['first']}..{w['last']} ({w['steps']} steps); "
              f"torch threads {threads}\n")
        print(f"images/s: {w['img_per_s']:.1f}\n")
        print("| phase | seconds | % of wall |\n|---|---|---|")
        for phase, label in [*PHASES.items(), ("other", "other (progress bar, loop bookkeeping)")]:
            print(f"| {label} | {w['seconds'][phase]:.2f} | {100 * w['seconds'][phase] / w['wall']:.1f}% |")
        print(f"| **wall** | {w['wall']:.2f} | 100% |")
        data = [r["time_data_s"] for r in records if r["step"] >= 2]
        print(f"\ndata per step: median {statistics.median(data):.4f} s, max {max(data):.4f} s"
              + "".join(f"; epoch {r['epoch']} starts at step {r['step']}: {r['time_data_s']:.3f} s data, "
                        f"{r['time_ckpt_s']:.3f} s ckpt" for r in epoch_starts(records)))
        print(f"monitor lines (with values) at steps: {monitor_steps or 'none'}")
        loop = summary["loop_time_s"]
        print("whole loop (done.json loop_time_s: step 1, the step-0 monitors and the checkpoint after "
              "the last step included): " + ", ".join(f"{k} {v:.2f} s" for k, v in loop.items())
              + f"; train() returned after {elapsed:.2f} s (with set-up and export)")
        print(f"CPU seconds during train(): this process {cpu_self:.1f}, loader workers {cpu_children:.1f} "
              f"(wall {elapsed:.1f})")

        flops = measure_step(cfg).flops_per_image * batch
        peak = matmul_gflops(args.matmul_repeats)
        wall_rate = flops * w["steps"] / w["wall"] / 1e9
        step_rate = flops * w["steps"] / w["seconds"]["step"] / 1e9
        print(f"\nFLOPs per training step: {flops / 1e9:.2f} GFLOP (training_step forward + backward)")
        print(f"fp32 2048x2048 matmul: {peak:.1f} GFLOP/s (median of {args.matmul_repeats}, "
              f"{torch.get_num_threads()} threads)")
        print(f"achieved: {wall_rate:.1f} GFLOP/s over the window's wall time = {100 * wall_rate / peak:.0f}% "
              f"of the matmul; {step_rate:.1f} GFLOP/s over its step phase = {100 * step_rate / peak:.0f}%")
        if cfg.train.get("precision") == "bf16":
            # a CPU with bf16 matrix instructions (AMX, AVX-512 BF16) runs a bf16 matmul 2-6x faster
            # than fp32 (BENCHMARKS.md): that, not the fp32 matmul, is a bf16 step's ceiling
            peak16 = matmul_gflops(args.matmul_repeats, dtype=torch.bfloat16)
            print(f"bf16 2048x2048 matmul: {peak16:.1f} GFLOP/s; achieved = {100 * wall_rate / peak16:.0f}% of it "
                  f"over the wall time, {100 * step_rate / peak16:.0f}% over the step phase")

        if hook is not None and hook.profiler is not None:
            print(f"\ntorch.profiler, steps {args.profile_steps + 1}..{2 * args.profile_steps}, "
                  f"top {args.top} operators by self CPU time:\n")
            print(hook.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
        print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    sys.exit(main())
