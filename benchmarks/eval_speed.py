"""Speed of the evaluation package on this machine (issue 4):

* frozen feature extraction, images/s, for the mini ViT (Fashion-MNIST 28 px, patch 4,
  width 128, depth 6 -- ``bootleg/configs/model/vit_mini.yaml``) on the Fashion-MNIST test
  images, for the final feature alone and for every block's feature (per-layer protocols);
* DINO k-NN (k in {10, 20, 100, 200}, T = 0.07, 100 chunks) on 60k x 10k features.

Each figure is the median of ``--repeats`` runs; the 1-minute load average is printed
before and after, because other jobs share the CPU. Next to wall-clock rates the script
prints the process CPU time per run: on a machine shared with other jobs, wall time measures
the share of the CPU we got, CPU seconds (2 threads) what the work costs.

    python -m benchmarks.eval_speed [--repeats 5] [--images 4096] [--dims 128 384] [--only knn] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from common.data import get_dataset
from common.vit import ViT
from eval.encoders import EvalEncoder
from eval.features import Atom, Extraction, Preprocess, extract_atoms
from eval.knn import knn_classify

MINI = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4,
            num_class_tokens=0, pos_embed="sincos", global_pool="avg")


def load() -> str:
    return "load average (1/5/15 min): " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def extraction_speed(n_images: int, repeats: int, batch_size: int, per_layer: bool) -> list[float]:
    data = get_dataset("fashion_mnist", "test", root="data")
    data = data.subset(torch.arange(min(n_images, len(data))))
    torch.manual_seed(0)
    vit = ViT(**MINI).eval()
    meta = {"img_size": 28, "in_chans": 1, "mean": [0.2860406], "std": [0.3530242]}
    encoder = EvalEncoder(vit, meta, "0" * 64, "random")
    layers = range(1, MINI["depth"] + 1) if per_layer else [MINI["depth"]]
    atoms = [Atom("avgpool", l) for l in layers]
    rates, cpu = [], []
    for _ in range(repeats):
        start, cpu0 = time.perf_counter(), time.process_time()
        extract_atoms(encoder, Extraction(data, "test", Preprocess(meta)), atoms, batch_size=batch_size,
                      cache_dir=None, progress=False)
        rates.append(len(data) / (time.perf_counter() - start))
        cpu.append(len(data) / (time.process_time() - cpu0))
    return rates, cpu


def matmul_seconds(n: int = 2048) -> float:
    """Wall time of one fp32 n x n matmul, timed beside the k-NN runs so that it sees the
    same load: the ratio k-NN / matmul is a load-robust cost (an idle 2-core build machine
    does this matmul at about 258 GFLOP/s, i.e. in about 0.067 s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


def knn_speed(dim: int, repeats: int, n_train: int = 60_000, n_test: int = 10_000):
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(n_train, dim, generator=g), torch.randn(n_test, dim, generator=g)
    ytr, yte = torch.randint(0, 10, (n_train,), generator=g), torch.randint(0, 10, (n_test,), generator=g)
    times, cpu, ratios = [], [], []
    for _ in range(repeats):
        before = matmul_seconds()
        start, cpu0 = time.perf_counter(), time.process_time()
        knn_classify(train, ytr, test, yte, 10, ks=(10, 20, 100, 200), T=0.07, chunks=100)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
        ratios.append(times[-1] / ((before + matmul_seconds()) / 2))
    return times, cpu, ratios


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--dims", type=int, nargs="+", default=[128, 384])
    p.add_argument("--only", nargs="+", choices=["extraction", "knn"], default=["extraction", "knn"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load()}")
    for per_layer in (False, True) if "extraction" in args.only else ():
        rates, cpu = extraction_speed(args.images, args.repeats, args.batch_size, per_layer)
        what = "avgpool of all 6 blocks" if per_layer else "final avgpool"
        print(f"extraction, mini ViT 128/6 p4, {what}: median {statistics.median(rates):.0f} img/s wall "
              f"(runs: {', '.join(f'{r:.0f}' for r in rates)}); {statistics.median(cpu):.0f} img per CPU-second")
    for dim in args.dims if "knn" in args.only else ():
        times, cpu, ratios = knn_speed(dim, args.repeats)
        print(f"k-NN 60k x 10k, dim {dim}, k in (10,20,100,200): median {statistics.median(times):.2f} s wall "
              f"(runs: {', '.join(f'{t:.2f}' for t in times)}); median {statistics.median(cpu):.2f} CPU-s; "
              f"median {statistics.median(ratios):.0f} x a 2048^2 fp32 matmul timed in the same run")
    print(load())


if __name__ == "__main__":
    main()
