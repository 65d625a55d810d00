"""Training throughput (forward + backward, images/s) of ``common.vit.ViT`` against plain
timm ``VisionTransformer.forward_features`` with the same weights, in the same process.

Design, for a CPU shared with other jobs:

* One run times the two models in the order A B B A (A B A B reversed on odd runs, i.e.
  B A A B), so load that drifts linearly during the run hits both alike; the run's ratio is
  (wrapper time) / (timm time) over its four steps and the reported ratio is the median over
  runs.  Images/s use the median step time of each model.
* The fp32 matmul reference (``torch.mm`` of two 2048 x 2048 matrices) is timed once per
  run inside the same loop, so it sees the same load; achieved GFLOP/s count the matmul
  FLOPs of the model (``train_step_flops``).
* As a load-independent check, the aten operator multiset of one forward + backward step is
  compared between the two models (``--check-ops``): identical lists mean the wrapper adds no
  tensor work, only Python dispatch.  The process CPU-time ratio is printed next to the
  wall-clock one: it moves much less when other jobs compete for the cores (use
  ``--threads 1`` on a busy machine, so that no thread spins waiting for a descheduled one).

    python -m benchmarks.vit_throughput            # both configurations of issue 2
    python -m benchmarks.vit_throughput --runs 9 --configs vit_tiny_p4_32 --verbose

Exit status 1 when the wrapper is more than ``--max-slowdown`` (3 %) slower than timm.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import time

import torch
from timm.models.vision_transformer import VisionTransformer

from common.vit import ViT

CONFIGS = {
    "vit_tiny_p4_32": dict(model=dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3), batch=128),
    "vit_small_p16_224": dict(model=dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6), batch=8),
}
MATMUL_N = 2048


def train_step_flops(img_size: int, patch_size: int, embed_dim: int, depth: int, mlp_ratio: float = 4.0,
                     in_chans: int = 3, batch: int = 1, **_) -> float:
    """Matmul FLOPs (2 m n k per GEMM) of one forward + backward step; backward = 2 x forward.

    Per block and token: qkv (3 D^2) + proj (D^2) + MLP (2 r D^2) multiply-adds, plus the
    two attention products (2 N D); the patch projection adds C p^2 D per patch.  Norms,
    softmax and GELU are not counted (as usual for GFLOP/s figures).
    """
    n_patches = (img_size // patch_size) ** 2
    n_tokens = n_patches + 1
    per_block = 2 * n_tokens * ((4 + 2 * mlp_ratio) * embed_dim**2) + 2 * 2 * n_tokens**2 * embed_dim
    patch = 2 * n_patches * in_chans * patch_size**2 * embed_dim
    return 3.0 * batch * (depth * per_block + patch)


def build_pair(model_kwargs: dict) -> tuple[ViT, VisionTransformer]:
    torch.manual_seed(0)
    wrapper = ViT(**model_kwargs).train()
    plain = VisionTransformer(num_classes=0, **model_kwargs).train()
    plain.load_state_dict(wrapper.state_dict(), strict=True)
    assert all(a.attn.fused_attn == b.attn.fused_attn for a, b in zip(wrapper.blocks, plain.blocks))
    return wrapper, plain


def wrapper_loss(model: ViT, x: torch.Tensor) -> torch.Tensor:
    return model(x).tokens.mean()


def timm_loss(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    return model.forward_features(x).mean()


def timed_step(loss_fn, model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training step."""
    model.zero_grad(set_to_none=True)
    t0, c0 = time.perf_counter(), time.process_time()
    loss_fn(model, x).backward()
    return time.perf_counter() - t0, time.process_time() - c0


def timed_matmul(a: torch.Tensor, b: torch.Tensor) -> float:
    t0 = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - t0


def aten_ops(loss_fn, model: torch.nn.Module, x: torch.Tensor) -> collections.Counter:
    from torch.profiler import ProfilerActivity, profile

    loss_fn(model, x).backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss_fn(model, x).backward()
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))


def bench_config(name: str, runs: int, warmup: int) -> dict:
    cfg = CONFIGS[name]
    wrapper, plain = build_pair(cfg["model"])
    x = torch.randn(cfg["batch"], 3, cfg["model"]["img_size"], cfg["model"]["img_size"])
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    W, T = (wrapper_loss, wrapper), (timm_loss, plain)
    for _ in range(warmup):
        timed_matmul(a, b)
        for loss_fn, model in (W, T):
            timed_step(loss_fn, model, x)
    t_wrapper, t_timm, t_matmul, ratios, cpu_ratios = [], [], [], [], []
    for r in range(runs):
        t_matmul.append(timed_matmul(a, b))
        order = (W, T, T, W) if r % 2 == 0 else (T, W, W, T)
        run = {id(wrapper): [], id(plain): []}
        for loss_fn, model in order:
            run[id(model)].append(timed_step(loss_fn, model, x))
        (w_wall, w_cpu), (t_wall, t_cpu) = (list(zip(*run[id(m)])) for m in (wrapper, plain))
        t_wrapper += w_wall
        t_timm += t_wall
        ratios.append(sum(w_wall) / sum(t_wall))
        cpu_ratios.append(sum(w_cpu) / sum(t_cpu))
    flops = train_step_flops(batch=cfg["batch"], **cfg["model"])
    med_w, med_t = statistics.median(t_wrapper), statistics.median(t_timm)
    return dict(
        name=name,
        batch=cfg["batch"],
        img_s_wrapper=cfg["batch"] / med_w,
        img_s_timm=cfg["batch"] / med_t,
        ratio=statistics.median(ratios),  # > 1: the wrapper is slower
        # CPU time of this process is much less sensitive to other jobs on a shared machine
        cpu_ratio=statistics.median(cpu_ratios),
        gflops_wrapper=flops / med_w / 1e9,
        gflops_timm=flops / med_t / 1e9,
        matmul_gflops=2 * MATMUL_N**3 / statistics.median(t_matmul) / 1e9,
        raw=dict(wrapper=t_wrapper, timm=t_timm, matmul=t_matmul, ratios=ratios, cpu_ratios=cpu_ratios),
    )


def check_ops(name: str) -> str:
    wrapper, plain = build_pair(CONFIGS[name]["model"])
    size = CONFIGS[name]["model"]["img_size"]
    x = torch.randn(2, 3, size, size)
    ops_w, ops_t = aten_ops(wrapper_loss, wrapper, x), aten_ops(timm_loss, plain, x)
    same = "identical" if ops_w == ops_t else f"DIFFER: {dict((ops_w - ops_t) + (ops_t - ops_w))}"
    return f"aten ops per fwd+bwd: wrapper {sum(ops_w.values())}, timm {sum(ops_t.values())}, {same}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--runs", type=int, default=7, help="ABBA runs (median; >= 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--max-slowdown", type=float, default=0.03)
    parser.add_argument("--check-ops", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--verbose", action="store_true", help="print the raw step times")
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be >= 5 (the figures are medians)")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load avg before {os.getloadavg()[0]:.2f}")
    print("| config | batch | wrapper img/s | timm img/s | wrapper/timm wall time | wrapper/timm CPU time "
          "| wrapper GFLOP/s | timm GFLOP/s | fp32 matmul GFLOP/s | wrapper % of matmul |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    for name in args.configs:
        res = bench_config(name, args.runs, args.warmup)
        mm = res["matmul_gflops"]
        failed |= res["ratio"] > 1 + args.max_slowdown
        print(f"| {name} | {res['batch']} | {res['img_s_wrapper']:.1f} | {res['img_s_timm']:.1f} "
              f"| {res['ratio']:.3f} | {res['cpu_ratio']:.3f} | {res['gflops_wrapper']:.1f} | {res['gflops_timm']:.1f} "
              f"| {mm:.1f} | {100 * res['gflops_wrapper'] / mm:.0f}% |", flush=True)
        if args.verbose:
            for key, values in res["raw"].items():
                print(f"#   {name} {key}: " + " ".join(f"{v:.3f}" for v in values))
    print(f"# load avg after {os.getloadavg()[0]:.2f}; runs={args.runs} (ABBA), warmup={args.warmup}")
    if args.check_ops:
        for name in args.configs:
            print(f"# {name}: {check_ops(name)}")
    if failed:
        print(f"FAIL: wrapper slower than timm by more than {100 * args.max_slowdown:.0f}%", file=sys.stderr)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
