"""What a table costs before anyone queues it (printed by `--dry-run`).

For each run: the method's parameters (encoder, predictor, heads, EMA targets, teachers), the
FLOPs of one training step per image, counted by `torch.utils.flop_counter.FlopCounterMode` on
the real method (`training_step` forward and backward on a batch of 2 from the paper's own data
pipeline), the images seen, the training PFLOPs, the GPU-hours on the accelerator profile of the
`cost` config group, and an estimate of the peak memory per GPU. The optimiser update and the
data loading are not counted (a few FLOPs per parameter, against thousands per image).

Path-based datasets (`imagefolder:<path>`) are not read: two synthetic images stand in for the
pipeline's input, and the epoch size comes from `cost.dataset_images` (by folder name).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from common.config import identity

SAMPLE_BATCH = 2
# optimiser state tensors per trainable parameter (AdamW: two moments; SGD/LARS: momentum)
OPTIMIZER_STATES = {"adamw": 2, "sgd": 1, "lars": 1}
# keys that change neither the step's shapes nor its operations
_STEP_IRRELEVANT = ("optim", "train", "cost", "data.batch_size", "data.name", "data.train_subset", "data.seed")


@dataclass
class StepCost:
    """One training step, measured at batch SAMPLE_BATCH on CPU."""
    params: int                  # every parameter of the method
    trainable: int               # those the optimiser updates
    flops_per_image: float       # forward + backward of training_step
    state_bytes: int             # parameters and buffers as built (fp32)
    activation_bytes_per_image: float  # tensors saved for backward, per image


@dataclass
class RunCost:
    name: str
    step: StepCost | None
    images_seen: int | None      # epochs x whole global batches per epoch
    per_gpu_batch: int
    note: str = ""               # why a column is unknown

    def pflops(self) -> float | None:
        if self.step is None or self.images_seen is None:
            return None
        return self.step.flops_per_image * self.images_seen / 1e15


def _attention_flops(query, key, value, *args, out_val=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _attention_backward_flops(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


_attention_flops._get_raw = _attention_backward_flops._get_raw = True  # called with the tensors


def counted_flops(fn, *args, **kwargs) -> tuple[int, object]:
    """FLOPs of `fn(*args, **kwargs)` as FlopCounterMode counts them (2 per multiply-add).

    FlopCounterMode knows the CUDA attention kernels but not the CPU one that
    `scaled_dot_product_attention` runs here, which it would count as zero: it is given the
    same formulas (the operands have the same layout).
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    cpu_attention = {aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops,
                     aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        out = fn(*args, **kwargs)
    return counter.get_total_flops(), out


def gpu_hours(pflops: float, peak_tflops: float, utilisation: float) -> float:
    """Hours of one accelerator delivering `utilisation` x its peak."""
    if peak_tflops <= 0 or not 0 < utilisation <= 1:
        raise ValueError(f"cost.peak_tflops must be > 0 and cost.utilisation in (0, 1], "
                         f"got {peak_tflops} and {utilisation}")
    return pflops * 1e15 / (peak_tflops * 1e12 * utilisation) / 3600


def world_size(cfg: DictConfig) -> int:
    return int(cfg.cluster.nodes) * int(cfg.cluster.tasks_per_node)


def per_gpu_batch(cfg: DictConfig) -> int:
    """Images in one forward pass of one process (global batch / processes / accumulation)."""
    return max(1, int(cfg.data.batch_size) // world_size(cfg) // int(cfg.optim.get("accum_steps", 1)))


def peak_memory_gb(cfg: DictConfig, step: StepCost) -> float:
    """Parameters, gradients and optimiser states, plus the activations measured at batch 2
    scaled linearly to the per-GPU batch. An estimate: it ignores the allocator's fragmentation,
    workspace buffers, and the saved tensors freed during the backward pass."""
    optimizer = str(cfg.optim.get("name", "adamw")).lower()
    static = step.state_bytes + 4 * step.trainable * (1 + OPTIMIZER_STATES.get(optimizer, 2))
    return (static + step.activation_bytes_per_image * per_gpu_batch(cfg)) / 2**30


def epoch_images(cfg: DictConfig) -> tuple[int | None, str]:
    """Training images per epoch and where the number comes from."""
    name = str(cfg.data.name)
    subset = cfg.data.get("train_subset")
    kind, _, path = name.partition(":")
    if path:
        folder = Path(path).name
        known = cfg.cost.dataset_images.get(folder)
        if known is None:
            return None, (f"epoch size of {name} unknown: add +cost.dataset_images.{folder}=<training images>")
        total, source = int(known), f"cost.dataset_images.{folder}"
    else:
        from common.data import get_dataset
        total, source = len(get_dataset(name, "train", root=cfg.data.root)), f"{name} as prepared"
    if subset is None:
        return total, source
    count = int(round(float(subset) * total)) if isinstance(subset, float) and subset <= 1 else int(subset)
    return count, f"data.train_subset of {source}"


def images_seen(cfg: DictConfig, per_epoch: int) -> int:
    """As the training loop counts them: whole global batches only."""
    batch = int(cfg.data.batch_size)
    return int(cfg.train.epochs) * (per_epoch // batch) * batch


@contextlib.contextmanager
def _synthetic_folder(img_size: int, in_chans: int):
    """An ImageNet-layout folder of two images (two classes) a little larger than the crops."""
    from PIL import Image

    side = max(int(img_size) * 8 // 7, 8)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="cost-images-") as root:
        for cls in ("a", "b"):
            (Path(root) / "train" / cls).mkdir(parents=True)
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            image = Image.fromarray(pixels) if in_chans == 3 else Image.fromarray(pixels[..., 0])
            image.save(Path(root) / "train" / cls / "0.png")
        yield root


def _sample_batch(paper, cfg: DictConfig):
    """SAMPLE_BATCH samples through the paper's own transforms and collator."""
    from common.train import seed_everything

    path_based = ":" in str(cfg.data.name)
    with contextlib.ExitStack() as stack:
        if path_based:
            size = cfg.data.get("img_size") or cfg.model.img_size
            root = stack.enter_context(_synthetic_folder(int(size), int(cfg.model.in_chans)))
            cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            cfg.data.name, cfg.data.train_subset = f"imagefolder:{root}", None
        seed_everything(int(cfg.train.seed))
        dataset, collate = paper.build_train_data(cfg)
        samples = [dataset[i] for i in range(SAMPLE_BATCH)]
        return (collate or torch.utils.data.default_collate)(samples)


def _saved_activation_bytes(parameters: set[int]):
    """A saved-tensors hook that sums the distinct storages autograd keeps for backward
    (parameters excluded: they are counted once, as state)."""
    seen: dict[int, int] = {}

    def pack(tensor):
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    return seen, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)


def measure_step(cfg: DictConfig) -> StepCost:
    """Build the run's method and data pipeline on CPU and count one training step at batch 2."""
    from common.train import autocast_context

    paper = importlib.import_module(f"{cfg.paper}.model")
    batch = _sample_batch(paper, cfg)
    build = getattr(paper, "build_method_for_cost", paper.build_method)
    torch.manual_seed(int(cfg.train.seed))
    method = build(cfg, 1000)  # total steps set schedules only
    method.train()
    params = list(method.parameters())
    saved, hook = _saved_activation_bytes({p.untyped_storage().data_ptr() for p in params})

    def step():
        with hook, autocast_context(torch.device("cpu"), str(cfg.train.precision)):
            loss = method.training_step(batch, 0)["loss"]
        loss.backward()

    flops, _ = counted_flops(step)
    state = sum(t.numel() * t.element_size() for t in [*params, *method.buffers()])
    return StepCost(params=sum(p.numel() for p in params),
                    trainable=sum(p.numel() for g in method.param_groups() for p in g["params"]),
                    flops_per_image=flops / SAMPLE_BATCH, state_bytes=state,
                    activation_bytes_per_image=sum(saved.values()) / SAMPLE_BATCH)


def step_key(cfg: DictConfig) -> str:
    """Runs that differ only in schedule, batch or dataset share one measured step."""
    plain = identity(cfg)
    for dotted in _STEP_IRRELEVANT:
        *parents, leaf = dotted.split(".")
        node = plain
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    plain["precision"] = cfg.train.precision  # the saved activations' dtype
    return json.dumps(plain, sort_keys=True, default=str)


def run_costs(specs, measure=measure_step) -> list[RunCost]:
    """The cost of each run (`common.launch.RunSpec`); steps measured once per distinct method."""
    cache: dict[str, StepCost | Exception] = {}
    out = []
    for spec in specs:
        cfg = spec.cfg
        key = step_key(cfg)
        if not cfg.cost.measure:
            cache[key] = ValueError("cost.measure=false")
        if key not in cache:
            try:
                cache[key] = measure(cfg)
            except Exception as exc:  # noqa: BLE001 (e.g. a teacher not built yet): the row says why
                cache[key] = exc
        step = cache[key] if isinstance(cache[key], StepCost) else None
        notes = [] if step else [f"step not measured: {type(cache[key]).__name__}: "
                                 f"{str(cache[key]).splitlines()[0]}"]
        try:
            per_epoch, source = epoch_images(cfg)
        except (OSError, ValueError, KeyError) as exc:
            per_epoch, source = None, f"epoch size unknown: {str(exc).splitlines()[0]}"
        if per_epoch is None:
            notes.append(source)
        out.append(RunCost(spec.name, step, images_seen(cfg, per_epoch) if per_epoch is not None else None,
                           per_gpu_batch(cfg), "; ".join(notes)))
    return out


def _num(value) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def cost_table(specs, costs: list[RunCost]) -> str:
    """Markdown: a row per run and the table's total, with the assumptions above it."""
    profile = specs[0].cfg.cost
    peak, util = float(profile.peak_tflops), float(profile.utilisation)
    lines = [f"# ---- cost: GPU-hours on {profile.accelerator} at {peak:g} TFLOP/s bf16 dense peak x "
             f"{util:g} assumed utilisation (cost=a100|h100, cost.utilisation=...)",
             f"# FLOPs counted by FlopCounterMode on one training step (forward + backward, teachers and "
             f"targets included) at batch {SAMPLE_BATCH} on CPU; optimiser update not counted.",
             f"# Peak memory per GPU is an estimate: parameters + gradients + optimiser states + the "
             f"activations saved for backward at batch {SAMPLE_BATCH}, scaled linearly to the per-GPU batch.",
             "| run | params (M) | GFLOPs / image | images seen | PFLOPs | GPU-hours | per-GPU batch "
             "| peak memory / GPU (GB, est.) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total_pflops, total_hours, complete = 0.0, 0.0, True
    for spec, c in zip(specs, costs):
        pf = c.pflops()
        hours = gpu_hours(pf, peak, util) if pf is not None else None
        complete &= pf is not None
        total_pflops += pf or 0.0
        total_hours += hours or 0.0
        memory = peak_memory_gb(spec.cfg, c.step) if c.step else None
        step = c.step
        lines.append(f"| {c.name} | {_num(step and step.params / 1e6)} | {_num(step and step.flops_per_image / 1e9)} "
                     f"| {_num(c.images_seen)} | {_num(pf)} | {_num(hours)} | {c.per_gpu_batch} | {_num(memory)} |")
    images = sum(c.images_seen or 0 for c in costs)
    known = any(c.pflops() is not None for c in costs)
    lines.append(f"| **total{'' if complete else ' (known rows)'}** | | | {_num(images)} "
                 f"| {_num(total_pflops if known else None)} | {_num(total_hours if known else None)} | | |")
    lines += [f"# {c.name}: {c.note}" for c in costs if c.note]
    return "\n".join(lines)


def cost_report(specs) -> str:
    """The cost table of these runs (`common.launch.RunSpec`), for `--dry-run`."""
    return cost_table(specs, run_costs(specs))
