"""Bootleg benchmarks: mask-generator speed and training-step throughput.

    python benchmarks/bootleg_bench.py [--repeats 7] [--threads 2]

1. masks/s of both generators at paper scale (224 px, patch 16 -> 14x14 grid, per-GPU
   batch 128), and the vectorised Bootleg generator against a per-sample loop doing the
   same work (target: >= 5x);
2. at mini scale (Fashion-MNIST 28 px, patch 4, batch 128): images/s of a full training
   step (forward, backward, AdamW, EMA) of Bootleg, I-JEPA and MAE, the share of that step
   that mask generation takes, and the achieved GFLOP/s (FLOPs counted by
   ``torch.utils.flop_counter``) against a measured 2048x2048 fp32 matmul.

Every number is the median of ``--repeats`` timed runs after a warm-up; the machine load
(``/proc/loadavg``) is printed before and after, because the CPU may be shared.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bootleg.masks import BootlegMaskGenerator, IJepaMaskGenerator, Masks
from bootleg.model import build_method, build_train_data
from common.config import load_config

PAPER_GRID, MINI_GRID, BATCH = (14, 14), (7, 7), 128


def median_time(fn, repeats: int, warmup: int = 1, clock=time.perf_counter) -> float:
    """Median seconds of ``fn``; ``clock=time.process_time`` gives this process's CPU
    seconds, which a shared machine disturbs much less than wall time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def bootleg_masks_per_sample(gen: BootlegMaskGenerator, batch: int, generator) -> Masks:
    """The Bootleg generator's work written as a loop over samples (the baseline to beat)."""
    (H, W), M = gen.grid, gen.npred
    h, w = gen._draw_size(generator)
    contexts, targets = [], []
    for _ in range(batch):
        covered = torch.zeros(H, W, dtype=torch.bool)
        blocks = []
        for _ in range(M):
            top = int(torch.randint(0, H - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, W - w + 1, (1,), generator=generator))
            covered[top:top + h, left:left + w] = True
            rows = torch.arange(top, top + h).view(-1, 1)
            blocks.append((rows * W + torch.arange(left, left + w)).flatten())
        candidates = (~covered).flatten().nonzero().squeeze(1)
        pick = torch.randperm(len(candidates), generator=generator)[:gen.n_context]
        contexts.append(candidates[pick].sort().values)
        targets.append(torch.stack(blocks))
    return Masks(torch.stack(contexts), torch.stack(targets, dim=1))


def bench_masks(repeats: int) -> list[tuple[str, float, float]]:
    g = torch.Generator().manual_seed(0)
    ijepa, bootleg = IJepaMaskGenerator(PAPER_GRID), BootlegMaskGenerator(PAPER_GRID)
    rows = []
    for name, fn in [("I-JEPA (reference algorithm)", lambda: ijepa(BATCH, g)),
                     ("Bootleg, vectorised", lambda: bootleg(BATCH, g)),
                     ("Bootleg, per-sample loop", lambda: bootleg_masks_per_sample(bootleg, BATCH, g))]:
        rows.append((name, BATCH / median_time(fn, repeats),
                     BATCH / median_time(fn, repeats, clock=time.process_time)))
    return rows


def matmul_gflops(repeats: int, n: int = 2048, clock=time.perf_counter, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / median_time(lambda: a @ b, repeats, clock=clock) / 1e9


def bench_steps(repeats: int) -> list[dict]:
    results = []
    for method in ("bootleg", "ijepa", "mae"):
        overrides = ["scale=mini", f"method={method}"]
        if method == "bootleg":
            overrides.append("method.target_layers=[even:3]")  # as in the compare experiment
        cfg = load_config("bootleg", overrides)
        dataset, collate = build_train_data(cfg)
        torch.manual_seed(0)
        samples = [dataset[i] for i in range(BATCH)]
        batch = collate(samples)
        model = build_method(cfg, total_steps=1000)
        opt = torch.optim.AdamW([p for g in model.param_groups() for p in g["params"]], lr=1e-4)

        def step():
            out = model.training_step(batch, 0)
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            model.after_step(0)

        with FlopCounterMode(display=False) as counter:
            model.training_step(batch, 0)["loss"].backward()
        opt.zero_grad(set_to_none=True)
        step_s = median_time(step, repeats)
        step_cpu_s = median_time(step, repeats, clock=time.process_time)
        mask_s = median_time(lambda: collate.mask_generator(BATCH, None), repeats)
        results.append({"method": method, "img_per_s": BATCH / step_s,
                        "img_per_cpu_s": BATCH / step_cpu_s,
                        "gflop_per_step": counter.get_total_flops() / 1e9,
                        "gflops": counter.get_total_flops() / step_s / 1e9,
                        "gflops_cpu": counter.get_total_flops() / step_cpu_s / 1e9,
                        "mask_share": mask_s / step_s, "mask_ms": 1e3 * mask_s})
    return results


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bootleg_bench.py")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"load average before: {loadavg()}; torch threads {torch.get_num_threads()}")
    masks = bench_masks(args.repeats)
    print(f"\nMask generation, 14x14 grid, batch {BATCH} (median of {args.repeats})\n")
    print("| generator | masks/s (wall) | masks per CPU-s |\n|---|---|---|")
    for name, rate, rate_cpu in masks:
        print(f"| {name} | {rate:,.0f} | {rate_cpu:,.0f} |")
    print(f"\nvectorised / per-sample loop: {masks[1][1] / masks[2][1]:.1f}x wall, "
          f"{masks[1][2] / masks[2][2]:.1f}x CPU time")
    peak = matmul_gflops(args.repeats)
    peak_cpu = matmul_gflops(args.repeats, clock=time.process_time)
    steps = bench_steps(args.repeats)
    print(f"\nMini training step (7x7 grid, batch {BATCH}); 2048^2 fp32 matmul: {peak:.0f} GFLOP/s "
          f"wall, {peak_cpu:.0f} GFLOP per CPU-s\n")
    print("| method | img/s (wall) | img per CPU-s | GFLOP/step | GFLOP/s (wall) | % of matmul (wall) | "
          "GFLOP per CPU-s | % of matmul (CPU) | mask ms | mask share of step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in steps:
        print(f"| {r['method']} | {r['img_per_s']:.0f} | {r['img_per_cpu_s']:.0f} | {r['gflop_per_step']:.1f} | "
              f"{r['gflops']:.0f} | {100 * r['gflops'] / peak:.0f}% | {r['gflops_cpu']:.0f} | "
              f"{100 * r['gflops_cpu'] / peak_cpu:.0f}% | {r['mask_ms']:.2f} | {100 * r['mask_share']:.2f}% |")
    print("\nmask share = one batch's masks / one training step (both wall); the collator runs them "
          "in data-loader workers, beside the step.")
    print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    main()
