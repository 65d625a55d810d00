"""UDI / DINO throughput and memory (issue 8).

    python -m benchmarks.udi_step                      # everything below, 5 runs each
    python -m benchmarks.udi_step --only srs memory    # a subset

* ``step``: images/s of one training step (forward, backward, AdamW, EMA + centers) of DINO
  and UDI at mini scale (Fashion-MNIST config) and paper scale (ViT-S/16, 2x224 + 10x96,
  K = 65536, a small batch); median of ``--runs`` steps after one warm-up step.
* ``teacher``: the single-pass teacher against the official twice-run teacher, interleaved
  in the same run (A B B A per round), ratio = median of per-round ratios.
* ``srs``: SRS map generation in the collator (paper geometry, batch 128), maps per second.
* ``memory``: bytes of the 65536-way teacher local patch logits at the paper batch
  (128 images per GPU), unchunked (what the official code materialises) vs our chunked
  reduction; measured peak RSS growth of the reduction at a small batch, plus arithmetic.

The machine is shared: each section prints ``os.getloadavg()`` next to its numbers, and the
process CPU time next to wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common.config import load_config
from udi.model import build_method, build_train_data

SECTIONS = ("step", "teacher", "srs", "memory")
PAPER_K = 65536


def load() -> str:
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def cfg_for(scale: str, method: str, *extra: str):
    overrides = [f"scale={scale}", f"method={method}", "train.device=cpu", "train.precision=fp32", *extra]
    if scale == "paper":
        overrides += ["data.name=fashion_mnist", "data.stats=fashion_mnist", "model.in_chans=1"]
    return load_config("udi", overrides)


def make_batch(cfg, batch: int) -> dict:
    """A real collated batch; at paper scale the Fashion-MNIST images are upsampled to 256 px so
    the paper's 224 / 96 px crops apply (only the geometry matters for speed)."""
    dataset, collate = build_train_data(cfg)
    torch.manual_seed(0)
    items = []
    for i in range(batch):
        image, label = dataset.dataset[i]
        if cfg.scale_name == "paper":
            image = torch.nn.functional.interpolate(image[None].float(), size=(256, 256))[0].byte()
        items.append((dataset.transform(image), label))
    return collate(items)


def timed_step(method, optimizer, batch: dict, step: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = method.training_step(batch, step)
    out["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    method.after_step(step)
    return time.perf_counter() - wall, time.process_time() - cpu


def build(cfg):
    torch.manual_seed(0)
    method = build_method(cfg, 1000)
    params = [p for g in method.param_groups() for p in g["params"]]
    return method, torch.optim.AdamW(params, lr=1e-4)


def bench_step(runs: int, paper_batch: int, mini_batch: int, scales: list[str]) -> list[dict]:
    rows = []
    for scale, batch in [(s, {"mini": mini_batch, "paper": paper_batch}[s]) for s in scales]:
        for name in ("dino", "udi"):
            cfg = cfg_for(scale, name)
            method, opt = build(cfg)
            data = make_batch(cfg, batch)
            timed_step(method, opt, data, 0)
            walls, cpus = zip(*[timed_step(method, opt, data, s + 1) for s in range(runs)])
            rows.append({"section": "step", "scale": scale, "method": name, "batch": batch, "runs": runs,
                         "median_s": statistics.median(walls), "img_per_s": batch / statistics.median(walls),
                         "cpu_s": statistics.median(cpus), "load": load()})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_teacher(runs: int, batch: int, scale: str) -> dict:
    single_cfg = cfg_for(scale, "udi")
    single, opt_a = build(single_cfg)
    twice, opt_b = build(cfg_for(scale, "udi", "method.teacher_single_pass=false"))
    data = make_batch(single_cfg, batch)
    timed_step(single, opt_a, data, 0)
    timed_step(twice, opt_b, data, 0)
    ratios, t_single, t_twice = [], [], []
    for r in range(runs):
        order = [(single, opt_a, t_single), (twice, opt_b, t_twice)]
        order = order + order[::-1] if r % 2 == 0 else order[::-1] + order
        round_times = {id(m): [] for m, _, _ in order}
        for m, opt, sink in order:
            wall, _ = timed_step(m, opt, data, r + 1)
            round_times[id(m)].append(wall)
            sink.append(wall)
        ratios.append(statistics.mean(round_times[id(twice)]) / statistics.mean(round_times[id(single)]))
    row = {"section": "teacher", "scale": scale, "batch": batch, "runs": runs,
           "single_pass_s": statistics.median(t_single), "twice_run_s": statistics.median(t_twice),
           "speedup": statistics.median(ratios), "load": load()}
    print(json.dumps(row), flush=True)
    return row


def bench_srs(runs: int, batch: int = 128) -> dict:
    from udi.srs import srs_maps

    g = torch.Generator().manual_seed(0)
    boxes = torch.stack([torch.tensor([[0, 0, 200, 200], [30, 40, 180, 190]] + [[50, 60, 80, 90]] * 10)] * batch)
    flips = torch.rand(batch, 12, generator=g) < 0.5
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        srs_maps(boxes, flips, torch.tensor([256, 256]), 14, 6, 3, 2, generator=g)
        times.append(time.perf_counter() - t)
    row = {"section": "srs", "batch": batch, "runs": runs, "median_s": statistics.median(times),
           "images_per_s": batch / statistics.median(times), "load": load()}
    print(json.dumps(row), flush=True)
    return row


def _peak_rss_growth(code: str) -> float:
    """Peak RSS growth (MiB) of ``code`` run in a fresh interpreter after its imports."""
    script = ("import resource, torch\nbase = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              f"{code}\nprint((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_memory(batch: int, chunk_rows: int, paper_chunk_rows: int = 8192) -> dict:
    """Teacher local patch logits: 10 locals x 2 globals x 9 samples per image, K = 65536.
    Measured at ``batch`` with ``chunk_rows``; extrapolated to the paper batch with the
    config default ``paper_chunk_rows`` (``method.teacher_chunk_rows``)."""
    rows_per_image = 10 * 2 * 9
    code = (f"from udi.heads import DINOHead\nhead = DINOHead(384, {PAPER_K})\n"
            f"z = torch.randn({batch} * 20, 9, 384)\nvalid = torch.rand({batch} * 20, 9) < 0.7\n"
            "with torch.no_grad():\n"
            "    {body}\n")
    unchunked = "s = (head(z) * valid.unsqueeze(-1)).sum(1)"
    per_chunk = max(1, chunk_rows // 9)
    chunked = (f"s = torch.cat([(head(a) * b.unsqueeze(-1)).sum(1) for a, b in zip(z.split({per_chunk}), "
               f"valid.split({per_chunk}))])")
    measured = {name: _peak_rss_growth(code.format(body=body)) for name, body in
                (("unchunked", unchunked), ("chunked", chunked))}
    paper_rows = rows_per_image * 128
    row = {"section": "memory", "measured_batch": batch, "chunk_rows": chunk_rows,
           "measured_peak_rss_growth_mib": measured,
           "paper_batch_per_gpu": 128,
           "paper_unchunked_logits_gib_fp32": paper_rows * PAPER_K * 4 / 2**30,
           "paper_unchunked_logits_gib_fp16": paper_rows * PAPER_K * 2 / 2**30,
           "measured_logits_mib_fp32": rows_per_image * batch * PAPER_K * 4 / 2**20,
           "paper_chunk_rows": paper_chunk_rows,
           "paper_chunked_logits_gib_fp32": min(paper_chunk_rows, paper_rows) * PAPER_K * 4 / 2**30,
           "student_logits_gib_fp32": (2 * 12 + 2 * 16) * 128 * PAPER_K * 4 / 2**30,
           "load": load()}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--paper-batch", type=int, default=2)
    p.add_argument("--mini-batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--scales", nargs="*", choices=("mini", "paper"), default=["mini", "paper"])
    p.add_argument("--out", type=Path, default=Path("results/udi/benchmarks.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    if "srs" in args.only:
        rows.append(bench_srs(max(args.runs, 5)))
    if "memory" in args.only:
        rows.append(bench_memory(batch=16, chunk_rows=720))
    if "step" in args.only:
        rows += bench_step(args.runs, args.paper_batch, args.mini_batch, args.scales)
    if "teacher" in args.only:
        rows.append(bench_teacher(args.runs, args.paper_batch, "paper"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else []
    fresh = {(r["section"], r.get("scale"), r.get("method")) for r in rows}
    kept = [r for r in previous if (r["section"], r.get("scale"), r.get("method")) not in fresh]
    args.out.write_text(json.dumps(kept + rows, indent=1))
    print(f"wrote {args.out} (threads {args.threads}, {load()}, maxrss "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
