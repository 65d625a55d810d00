"""Images/s of one Hybrid Distill step (teachers under inference mode, student forward +
backward + AdamW) with and without progressive redundant token masking.

    python -m benchmarks.hybrid_distill_step                  # mini and paper scale
    python -m benchmarks.hybrid_distill_step --scales mini --runs 7

Scales: ``mini`` = the mini configuration (ViT 128/6/4, 28 px, patch 4, batch 64) with two
teachers of the same size; ``paper`` = ViT-B/16 student with MAE ViT-B/16 and CLIP ViT-B/16
(QuickGELU) teachers built by timm name with random weights (speed does not depend on the
weights, and nothing is downloaded), 224 px, batch 4 (``--paper-batch``).

The CPU is shared with other jobs, so every run times the modes interleaved (A B B A, then
reversed) and the saving is the median over runs of the per-run time ratio; images/s use
the median step time of each mode. ``uptime`` load is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import timm
import torch

from common.method import input_meta
from common.vit import RelationAttention, ViT
from hybrid_distill.model import HybridDistill, Term
from hybrid_distill.teachers import FrozenTeacher

TERMS = [Term("tc_feature", "tc", "feature", (0,), 1.0), Term("tm_relation", "tm", "relation", (-2, -1), 1.0)]
MODES = {
    "none": {"strategy": "none"},
    "progressive": {"strategy": "progressive", "K": 0.3, "teacher_tokens": "reduced"},
    "progressive_full_teacher": {"strategy": "progressive", "K": 0.3, "teacher_tokens": "full"},
}


def mini_method(mask: dict) -> tuple[HybridDistill, torch.Tensor]:
    arch = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4)
    teachers = {n: FrozenTeacher(ViT(**arch), [0.286], [0.353], 28, n, "random", None) for n in ("tc", "tm")}
    method = HybridDistill(ViT(**arch, pos_embed="sincos"), teachers, TERMS, input_meta("fashion_mnist", 1, 28),
                           dict(mask, teacher="tm"))
    return method, torch.rand(64, 1, 28, 28)


def paper_method(mask: dict, batch: int = 4) -> tuple[HybridDistill, torch.Tensor]:
    def teacher(name):
        net = timm.create_model(name, pretrained=False, num_classes=0, attn_layer=RelationAttention)
        return FrozenTeacher(net, net.pretrained_cfg["mean"], net.pretrained_cfg["std"], 224, name, "random", None)

    teachers = {"tc": teacher("vit_base_patch16_clip_quickgelu_224.openai"), "tm": teacher("vit_base_patch16_224.mae")}
    student = ViT(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, pos_embed="sincos",
                  drop_path_rate=0.1)
    return (HybridDistill(student, teachers, TERMS, input_meta("imagenet", 3, 224), dict(mask, teacher="tm")),
            torch.rand(batch, 3, 224, 224))


def step_time(method: HybridDistill, optimizer, images: torch.Tensor) -> float:
    t0 = time.perf_counter()
    loss = method.training_step({"images": images}, 0)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def bench(scale: str, runs: int, modes: list[str], paper_batch: int = 4) -> dict:
    build = mini_method if scale == "mini" else (lambda mask: paper_method(mask, paper_batch))
    setups = {}
    for mode in modes:
        torch.manual_seed(0)
        method, images = build(MODES[mode])
        method.train()
        opt = torch.optim.AdamW([p for g in method.param_groups() for p in g["params"]], lr=1e-4)
        step_time(method, opt, images)  # warm-up (allocator, first-call overheads)
        setups[mode] = (method, opt, images)
    times = {m: [] for m in modes}
    ratios = {m: [] for m in modes if m != "none"}
    for r in range(runs):
        order = modes + modes[::-1]
        if r % 2:
            order = order[::-1]
        per_run = {m: 0.0 for m in modes}
        for m in order:
            t = step_time(*setups[m])
            times[m].append(t)
            per_run[m] += t
        for m in ratios:
            ratios[m].append(per_run[m] / per_run["none"])
    batch = setups[modes[0]][2].shape[0]
    result = {"scale": scale, "batch": batch, "runs": runs, "threads": torch.get_num_threads(),
              "kept_patches": {m: setups[m][0].plan.final_count for m in modes},
              "img_per_s": {m: batch / statistics.median(times[m]) for m in modes},
              "time_ratio_vs_none": {m: statistics.median(v) for m, v in ratios.items()}}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="mini,paper")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--modes", default="none,progressive,progressive_full_teacher")
    p.add_argument("--paper-batch", type=int, default=4)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    print("load before:", os.getloadavg())
    results = [bench(s, args.runs, args.modes.split(","), args.paper_batch) for s in args.scales.split(",")]
    print("load after:", os.getloadavg())
    for r in results:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "load_after": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
    main()
