"""SDSSL training-step throughput and the cost of self-distillation.

    python benchmarks/sdssl_throughput.py [--scale mini paper] [--repeats 5] [--threads 2]

For each scale and each of the six methods: images/s of one full training step (student
forward on both views, teacher forward, losses, backward, AdamW step, EMA update) on random
images, and the SD overhead ``time(SD-x) / time(x) - 1`` measured in the same run.  SD methods
are timed twice: with the batched per-layer heads of ``sdssl.heads.StackedMLP`` (one batched
matmul per MLP layer for all blocks) and with the same heads run as a Python loop over blocks
("naive", the paper's +16.9% setting), so the gain of batching is measured, not assumed.

Scales: ``mini`` = the committed CPU comparison (Fashion-MNIST 28 px, batch 128); ``paper`` =
ViT-S/16 at 224 px with the paper's head widths and a small batch (``--paper-batch``, default 4).
Each number is the median of ``--repeats`` timed steps after one warm-up step. Wall time and
this process's CPU time are both reported: on a CPU shared with other jobs the wall time
depends on the load (printed), the CPU time of a single-threaded run much less.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn as nn

from common.config import load_config
from sdssl.heads import StackedMLP
from sdssl.model import build_method

METHODS = ["simclr", "sd_simclr", "byol", "sd_byol", "moco_v3", "sd_moco_v3"]
SCALES = {"mini": ["scale=mini"], "paper": ["scale=paper", "model=vit_s16"]}


class LoopedMLP(nn.Module):
    """The same ``n`` MLPs as a ``StackedMLP``, evaluated one block at a time (the naive way)."""

    def __init__(self, stacked: StackedMLP) -> None:
        super().__init__()
        self.members = nn.ModuleList(StackedMLP(1, stacked.dims, stacked.last_bn) for _ in range(stacked.n))
        self.n, self.dims = stacked.n, stacked.dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(x[:, i:i + 1]) for i, member in enumerate(self.members)], dim=1)


def make_naive(method) -> None:
    for name in ("inter_projectors", "inter_predictors"):
        stacked = getattr(method, name)
        if stacked is not None:
            setattr(method, name, LoopedMLP(stacked))


def step_time(scale: str, name: str, batch: int | None, repeats: int, naive: bool) -> tuple[float, float, int]:
    """Median (wall seconds, CPU seconds) of one training step, and the batch size."""
    cfg = load_config("sdssl", [*SCALES[scale], f"method={name}"])
    torch.manual_seed(0)
    method = build_method(cfg, total_steps=1000).train()
    if naive:
        make_naive(method)
    params = [p for group in method.param_groups() for p in group["params"]]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = batch or int(cfg.data.batch_size)
    shape = (batch, int(cfg.model.in_chans), int(cfg.data.img_size), int(cfg.data.img_size))
    views = (torch.randn(shape), torch.randn(shape))

    def one_step(step: int) -> None:
        out = method.training_step((views, None), step)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step(step)

    one_step(0)
    wall, cpu = [], []
    for step in range(1, repeats + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        one_step(step)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", nargs="+", default=["mini", "paper"], choices=sorted(SCALES))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paper-batch", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}; torch threads {args.threads}", flush=True)
    print("| scale | method | heads | batch | wall s/step | images/s (wall) | CPU s/step | images/s (CPU) "
          "| SD overhead (wall) | SD overhead (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for scale in args.scale:
        batch = args.paper_batch if scale == "paper" else None
        measured: dict[tuple[str, bool], tuple[float, float]] = {}
        for name in args.methods:
            for naive in ([False, True] if name.startswith("sd_") else [False]):
                wall, cpu, b = step_time(scale, name, batch, args.repeats, naive)
                measured[name, naive] = wall, cpu
                base = measured.get((name[3:], False)) if name.startswith("sd_") else None
                overheads = [f"{100 * (t / t0 - 1):+.1f}%" for t, t0 in zip((wall, cpu), base)] if base else ["", ""]
                heads = "looped" if naive else ("batched" if name.startswith("sd_") else "-")
                print(f"| {scale} | {name} | {heads} | {b} | {wall:.3f} | {b / wall:.1f} | {cpu:.3f} | {b / cpu:.1f} "
                      f"| {overheads[0]} | {overheads[1]} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
