"""Training throughput (forward + backward, images/s) of ``common.vit.ViT`` against plain
timm ``VisionTransformer.forward_features`` with the same weights, in the same process.

Runs are interleaved (the order alternates every run, so slow drift from other processes on
a shared machine hits both models alike) and the wrapper/timm ratio is the median of the
per-run ratios.  The achieved GFLOP/s is compared with the fp32 matmul GFLOP/s measured in
the same loop (``torch.mm`` of two 2048 x 2048 matrices, timed once per run).

    python -m benchmarks.vit_throughput            # both configurations of issue 2
    python -m benchmarks.vit_throughput --runs 9 --configs vit_tiny_p4_32

Exit status 1 when the wrapper is more than ``--max-slowdown`` (3 %) slower than timm.
"""

from __future__ import annotations

import argparse
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


MATMUL_N = 2048


def timed_matmul(a: torch.Tensor, b: torch.Tensor) -> float:
    t0 = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - t0


def build_pair(model_kwargs: dict) -> tuple[ViT, VisionTransformer]:
    torch.manual_seed(0)
    wrapper = ViT(**model_kwargs).train()
    plain = VisionTransformer(num_classes=0, **model_kwargs).train()
    plain.load_state_dict(wrapper.state_dict(), strict=True)
    return wrapper, plain


def timed_step(forward, model: torch.nn.Module, x: torch.Tensor) -> float:
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    forward(model, x).mean().backward()
    return time.perf_counter() - t0


def wrapper_forward(model: ViT, x: torch.Tensor) -> torch.Tensor:
    return model(x).tokens


def timm_forward(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    return model.forward_features(x)


def bench_config(name: str, runs: int, warmup: int) -> dict:
    cfg = CONFIGS[name]
    wrapper, plain = build_pair(cfg["model"])
    x = torch.randn(cfg["batch"], 3, cfg["model"]["img_size"], cfg["model"]["img_size"])
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    pairs = [(wrapper_forward, wrapper), (timm_forward, plain)]
    for _ in range(warmup):
        timed_matmul(a, b)
        for fwd, model in pairs:
            timed_step(fwd, model, x)
    t_wrapper, t_timm, t_matmul = [], [], []
    for r in range(runs):
        # the matmul reference is timed inside the same loop, so it sees the same load
        t_matmul.append(timed_matmul(a, b))
        order = pairs if r % 2 == 0 else pairs[::-1]
        for fwd, model in order:
            (t_wrapper if model is wrapper else t_timm).append(timed_step(fwd, model, x))
    flops = train_step_flops(batch=cfg["batch"], **cfg["model"])
    med_w, med_t = statistics.median(t_wrapper), statistics.median(t_timm)
    return dict(
        name=name,
        batch=cfg["batch"],
        img_s_wrapper=cfg["batch"] / med_w,
        img_s_timm=cfg["batch"] / med_t,
        # >1 means the wrapper is slower; median of per-run ratios cancels drift between runs
        slowdown=statistics.median(w / t for w, t in zip(t_wrapper, t_timm)),
        gflops_wrapper=flops / med_w / 1e9,
        gflops_timm=flops / med_t / 1e9,
        step_gflop=flops / 1e9,
        matmul_gflops=2 * MATMUL_N**3 / statistics.median(t_matmul) / 1e9,
        raw=dict(wrapper=t_wrapper, timm=t_timm, matmul=t_matmul),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--runs", type=int, default=7, help="timed runs per model (median; >= 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-slowdown", type=float, default=0.03)
    parser.add_argument("--verbose", action="store_true", help="print the raw step times")
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be >= 5 (the figure is a median)")

    load_before = os.getloadavg()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load avg {load_before[0]:.2f}")
    print("| config | batch | wrapper img/s | timm img/s | wrapper/timm time (median of runs) "
          "| wrapper GFLOP/s | timm GFLOP/s | fp32 matmul GFLOP/s | wrapper % of matmul |")
    print("|---|---|---|---|---|---|---|---|---|")
    failed = False
    for name in args.configs:
        res = bench_config(name, args.runs, args.warmup)
        mm = res["matmul_gflops"]
        failed |= res["slowdown"] > 1 + args.max_slowdown
        print(f"| {name} | {res['batch']} | {res['img_s_wrapper']:.1f} | {res['img_s_timm']:.1f} "
              f"| {res['slowdown']:.3f} | {res['gflops_wrapper']:.1f} | {res['gflops_timm']:.1f} "
              f"| {mm:.1f} | {100 * res['gflops_wrapper'] / mm:.0f}% |", flush=True)
        if args.verbose:
            for key, times in res["raw"].items():
                print(f"#   {name} {key} step seconds: " + " ".join(f"{t:.3f}" for t in times))
    load_after = os.getloadavg()
    print(f"# load avg after: {load_after[0]:.2f}; runs={args.runs}, warmup={args.warmup}")
    if failed:
        print(f"FAIL: wrapper slower than timm by more than {100 * args.max_slowdown:.0f}%", file=sys.stderr)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
