"""The one training loop. It drives any method through the contract `common.method.Method`.

Reproducibility: each sample's augmentation is seeded from (seed, epoch, index), each
collate call (masks) from (seed, epoch, first index), and each step's model randomness
(drop path, MAE masking) from (seed, step, rank). Together with the data position stored
in the checkpoint, a resumed run continues the exact trajectory of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from common import dist
from common.checkpoint import CheckpointManager, export_encoder, non_finite_tensors, sha256_file
from common.config import config_hash, recipe_hash, save_run_config
from common.data import ResumableDistributedSampler
from common.errors import NonFiniteLossError, TrainingInterrupted
from common.hooks import HookRunner, load_hooks
from common.io import atomic_write
from common.method import check_method
from common.optim import apply_schedule, build_optimizer, scaled_lr
from common.phases import PhaseTimer
from common.provenance import git_commit, hardware, peak_memory_mb, resolve_device
from common.schedules import cosine_schedule, ijepa_cosine_wd, ijepa_warmup_cosine
from common.vit import set_fused_attention

log = logging.getLogger(__name__)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SeededDataset(Dataset):
    """Seeds the global RNGs from (seed, epoch, index) before each sample's transform."""

    def __init__(self, dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        seed_everything(mix_seed(self.seed, self.epoch, index))
        return index, self.dataset[index]


class SeededCollate:
    def __init__(self, collate_fn, seed: int, epoch: int):
        self.collate_fn = collate_fn or torch.utils.data.default_collate
        self.seed, self.epoch = seed, epoch

    def __call__(self, items):
        indices = [i for i, _ in items]
        seed_everything(mix_seed(self.seed, self.epoch, 0x5EED, indices[0], len(indices)))
        return self.collate_fn([sample for _, sample in items])


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    raise ValueError(f"train.precision must be fp32, bf16 or fp16, got {precision!r}")


def move_to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def split_batch(batch, parts: int, size: int, batch_dims=None):
    """Cut a batch of `size` samples into `parts` micro-batches of consecutive samples.

    Every tensor is cut along its sample dimension: dim 0 unless the collator declares
    another for a top-level key in its `batch_dims` attribute (Bootleg's mask targets
    `[M, B, Nt]` are cut along 1; `None` marks a tensor shared by all samples, passed whole).
    A tensor may hold several consecutive rows per sample (data2vec 2.0's mask clones:
    `B * clones` rows), which equal cuts keep with their sample.
    """
    if parts == 1:
        return [batch]
    if size % parts:
        raise ValueError(f"per-process batch {size} is not divisible by optim.accum_steps={parts}")
    batch_dims = dict(batch_dims or {})

    def chunk(x, i, key, dim):
        if isinstance(x, dict):
            return {k: chunk(v, i, k if key is None else f"{key}.{k}",
                             batch_dims.get(k, 0) if key is None else dim) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(chunk(v, i, f"{key or 'batch'}[{j}]", dim) for j, v in enumerate(x))
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or dim is None:
            return x
        rows = x.shape[dim] if dim < x.dim() else 0
        if rows == 0 or rows % size:
            raise ValueError(
                f"batch entry {key or 'batch'} of shape {tuple(x.shape)} has {rows} rows along dim {dim}, "
                f"not a multiple of the per-process batch {size}, so optim.accum_steps={parts} cannot "
                f"split it; declare its sample dimension in the collator's batch_dims (None: not split)")
        step = rows // parts
        return x.narrow(dim, i * step, step)

    return [chunk(batch, i, None, 0) for i in range(parts)]


def batch_size_of(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    for v in values:
        with contextlib.suppress(ValueError):
            return batch_size_of(v)
    raise ValueError("could not find a batch dimension in the batch")


def clip_gradients(params, max_norm: float, mode: str) -> float:
    """Global-norm clipping, or DINO's per-parameter clipping. Returns the global norm before."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads]))
    if max_norm > 0:
        if mode == "global":
            torch.nn.utils.clip_grad_norm_(grads, max_norm)
        elif mode == "per_param":
            for p in grads:
                pn = torch.linalg.vector_norm(p.grad)
                p.grad.mul_(torch.clamp(max_norm / (pn + 1e-6), max=1.0))
        else:
            raise ValueError(f"optim.clip_mode must be global or per_param, got {mode!r}")
    return float(norm)


@dataclass
class Plan:
    """How the data maps to optimisation steps for this run."""
    global_batch: int
    per_rank_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def make_plan(cfg: DictConfig, dataset_len: int, world: int) -> Plan:
    gb = int(cfg.data.batch_size)
    if gb % world:
        raise ValueError(f"data.batch_size={gb} (global) is not divisible by the {world} processes")
    spe = dataset_len // gb
    if spe == 0:
        raise ValueError(f"the training set has {dataset_len} images, fewer than one global batch "
                         f"(data.batch_size={gb}); lower data.batch_size")
    total = spe * int(cfg.train.epochs)
    warmup = int(round(float(cfg.optim.warmup_epochs) * spe))
    # data.per_process_batch runs a recipe's steps on a small machine: the loader draws that
    # many images, while lr scaling and the schedule keep the global batch (as one DDP rank)
    per_process = cfg.data.get("per_process_batch")
    return Plan(gb, int(per_process) if per_process else gb // world, spe, total, warmup)


def lr_wd_at(step: int, plan: Plan, base_lr: float, optim: DictConfig) -> tuple[float, float]:
    """Learning rate and weight decay of iteration `step` (`optim.schedule`).

    `cosine`: DINO-style linear warmup from 0, cosine to `min_lr`; weight decay cosine from
    `weight_decay` to `weight_decay_end`. `ijepa`: I-JEPA's schedulers, warmup from
    `start_lr` (scaled like lr), as they are stepped before use, and its cosine wd ramp.
    """
    kind = str(optim.get("schedule", "cosine"))
    wd0, wd1 = float(optim.weight_decay), float(optim.weight_decay_end)
    if kind == "cosine":
        return (cosine_schedule(step, plan.total_steps, base_lr, float(optim.min_lr), plan.warmup_steps),
                cosine_schedule(step, plan.total_steps, wd0, wd1, 0))
    if kind == "ijepa":
        start = base_lr * float(optim.get("start_lr", 0.0)) / float(optim.lr) if float(optim.lr) else 0.0
        return (ijepa_warmup_cosine(step, plan.total_steps, start, base_lr, float(optim.min_lr), plan.warmup_steps),
                ijepa_cosine_wd(step, plan.total_steps, wd0, wd1))
    raise ValueError(f"optim.schedule must be cosine or ijepa, got {kind!r}")


def run_dir_of(cfg: DictConfig) -> Path:
    """Where a run trains, resumes and exports: ``<train.out_root>/<paper>/<scale>/<run>/``.

    The scale is part of the path, so a smoke run and a mini run of one name never share a
    directory (nor trip each other's config-hash guard). The one place this layout is written;
    its records go to ``eval.records.records_dir``.
    """
    return Path(str(cfg.train.out_root), str(cfg.paper), str(cfg.scale_name), str(cfg.run_name))


class JsonlLogger:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, last_step: int) -> None:
    """Drop the records of steps after `last_step`: a run that resumes from the checkpoint at
    `last_step` logs them again. Earlier lines stay verbatim; the file is replaced atomically."""
    if not path.exists():
        return
    text = path.read_text()
    lines = text.split("\n")
    kept = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # the unterminated last line is a write cut short by a kill
                kept.append(line)
            continue
        if not isinstance(record, dict) or record.get("step", 0) <= last_step:
            kept.append(line)
    new = "".join(line + "\n" for line in kept)
    if new != text:
        atomic_write(path, new)


@dataclass
class TrainingCost:
    """Training time and peak memory over all the sessions of a run. Checkpoints carry the
    totals, so a resumed run, or one re-exported from its final checkpoint after `dvc repro`
    deleted done.json, reports the whole cost rather than its last session's."""
    time_before_s: float = 0.0
    peak_before_mb: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def totals(self) -> dict:
        return {"train_time_s": self.time_before_s + time.perf_counter() - self.started,
                "peak_memory_mb": max(self.peak_before_mb, peak_memory_mb())}


class StopRequest:
    """Ctrl-C during the training loop: the first SIGINT asks the loop to stop after the current
    step, where the state is consistent and is checkpointed; a second one, or one outside the
    loop, interrupts at once. Installed only over Python's default handler, in the main thread
    of a single-process run (the ranks of a multi-process run could stop at different steps)."""

    def __init__(self):
        self.armed = self.requested = False

    def _handle(self, signum, frame):
        if self.requested or not self.armed:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self, enabled: bool):
        if not enabled or threading.current_thread() is not threading.main_thread() \
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _ignore_sigint(worker_id: int) -> None:
    """Data-loader workers leave Ctrl-C to the main process, which stops between steps."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_label(cfg: DictConfig) -> str:
    return f"{cfg.paper}/{cfg.scale_name}/{cfg.run_name}"


def interrupted_message(cfg: DictConfig, ckpts: CheckpointManager, step: int | None = None) -> str:
    at = f" at step {step}" if step is not None else ""
    newest = ckpts.list()
    if not newest:
        return f"interrupted {run_label(cfg)}{at} before its first checkpoint; relaunch the same command to start again"
    return (f"interrupted {run_label(cfg)}{at}; last checkpoint {newest[0][1]}; "
            "relaunch the same command to resume")


def non_finite_message(problem: str, step: int, epoch: int, cfg: DictConfig, ckpts: CheckpointManager) -> str:
    """One line: where training diverged, the newest checkpoint that is still finite, and how
    to start over with other settings."""
    run_dir = run_dir_of(cfg)
    found = ckpts.load_latest()  # skips unloadable and non-finite checkpoints
    last = f"last finite checkpoint {found[1]}" if found else "no finite checkpoint"
    o = cfg.optim
    return (f"{problem} at step {step} (epoch {epoch}) of {run_dir}; {last}. Lower optim.lr (now {o.lr}), "
            f"raise optim.warmup_epochs (now {o.warmup_epochs}) or set optim.clip_grad (now {o.clip_grad}), "
            "and relaunch into a fresh run directory (this one resumes only its own config): change run_name "
            f"or train.out_root, or delete {run_dir}")


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr,
                mininterval=1.0)


def train(cfg: DictConfig) -> dict:
    """Train (or resume) the run described by `cfg`; returns a summary with the encoder path.

    Ctrl-C raises TrainingInterrupted, whose message names the checkpoint a relaunch resumes from.
    """
    stop = StopRequest()
    try:
        with stop.installed(dist.detect_env().world_size == 1):
            return _train(cfg, stop)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        raise TrainingInterrupted(interrupted_message(cfg, CheckpointManager(run_dir_of(cfg)))) from None


def _train(cfg: DictConfig, stop: StopRequest) -> dict:
    if cfg.train.get("threads"):
        # one thread per process is much faster when other processes share the cores
        torch.set_num_threads(int(cfg.train.threads))
    denv = dist.init_distributed(timeout_s=float(cfg.train.get("dist_timeout_s", 120)))
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.set_device(denv.local_rank)
    run_dir = run_dir_of(cfg)
    main = dist.is_main()
    if main:
        digest = save_run_config(cfg, run_dir)
    dist.barrier()
    digest = config_hash(cfg)
    done_file = run_dir / "done.json"
    previous = json.loads(done_file.read_text()) if done_file.exists() else None
    if previous and (run_dir / "encoder.pt").exists():
        log.info("%s is already complete; reusing it", run_dir)
        return previous
    # done but encoder.pt gone (e.g. `dvc repro` removed the output): the final checkpoint is
    # loaded below, the loop has nothing left to do, and the encoder is exported again.

    paper = importlib.import_module(f"{cfg.paper}.model")
    seed = int(cfg.train.seed)
    seed_everything(seed)
    dataset, collate_fn = paper.build_train_data(cfg)
    plan = make_plan(cfg, len(dataset), dist.world_size())
    method = check_method(paper.build_method(cfg, plan.total_steps), cfg.paper).to(device)
    fused = bool(cfg.train.get("fused_attn", True))
    layers = set_fused_attention(method, fused)
    log.info("attention: %s in %d layers (train.fused_attn=%s)", "fused SDPA" if fused else "explicit", layers,
             str(fused).lower())
    groups = method.param_groups()
    params = [p for g in groups for p in g["params"]]
    optimizer = build_optimizer(groups, cfg.optim)
    base_lr = scaled_lr(float(cfg.optim.lr), plan.global_batch, ref=int(cfg.optim.ref_batch),
                        rule=str(cfg.optim.lr_scaling))
    use_scaler = cfg.train.precision == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    step_fn = torch.compile(method.training_step) if cfg.train.compile else method.training_step

    ckpts = CheckpointManager(run_dir, keep=int(cfg.train.keep_checkpoints))
    step, epoch, batch_in_epoch = 0, 0, 0
    cost_before = (0.0, 0.0)
    resumed = ckpts.load_latest(map_location=device)
    if resumed is not None:
        state, path = resumed
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        cost_before = (state.get("train_time_s", 0.0), state.get("peak_memory_mb", 0.0))
        if main:
            print(f"resumed {run_label(cfg)} at step {step} from {path}", file=sys.stderr, flush=True)
    elif previous:
        # done.json without encoder.pt or any checkpoint (what a partial `dvc pull` leaves): its
        # time, hardware and commit describe a training this one does not continue
        if main:
            orphan = done_file.with_name(f"done.orphaned.{sha256_file(done_file)[:12]}.json")
            done_file.replace(orphan)
            log.warning("%s has done.json but neither encoder.pt nor a checkpoint: training from scratch; "
                        "the old summary is kept as %s", run_dir, orphan.name)
        previous = None
    if main:
        truncate_log(run_dir / "log.jsonl", step)
    saved_at = None  # the step of the newest checkpoint this session wrote

    def save(next_epoch: int, next_batch: int) -> None:
        nonlocal saved_at
        with timer.phase("ckpt"):
            if bad := non_finite_tensors({"method": method.state_dict(), "optimizer": optimizer.state_dict()}):
                raise NonFiniteLossError(non_finite_message(
                    f"{len(bad)} tensor(s) of the model and optimizer state became NaN or inf (e.g. {bad[0]})",
                    step, epoch, cfg, ckpts))
            if not main:
                return
            saved_at = step
            ckpts.save({
                "step": step, "epoch": next_epoch, "batch_in_epoch": next_batch,
                "method": method.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
                "config_hash": digest,
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state()},
                **cost.totals(),
            }, step)

    logger = JsonlLogger(run_dir / "log.jsonl", main)
    monitor = HookRunner(load_hooks(cfg) if main else [], logger, main)
    sampler = ResumableDistributedSampler(len(dataset), num_replicas=dist.world_size(),
                                          rank=dist.rank(), seed=seed, shuffle=True, drop_last=True)
    bar = _progress(plan.total_steps, step, main and cfg.train.get("progress", True), run_label(cfg))
    accum = int(cfg.optim.accum_steps)
    batch_dims = getattr(collate_fn, "batch_dims", None)  # the collator's layout of its batch
    log_every, ckpt_every = int(cfg.train.log_every), int(cfg.train.ckpt_every_steps)
    t_last, images_since = time.perf_counter(), 0
    cost = TrainingCost(*cost_before)
    # wall seconds of this session's loop per phase: time_<phase>_s in each log line (since the
    # previous one), loop_time_s in done.json. perf_counter only: on CUDA a phase ends when its
    # kernels are queued, not done (common.phases); no device sync is added for the accounting
    timer = PhaseTimer(("data", "step", "monitor", "ckpt", "log"))
    # train.max_steps stops early (tests of paper recipes); the schedules still span the epochs
    stop_at = min(plan.total_steps, int(cfg.train.get("max_steps") or plan.total_steps))
    method.train()
    stop.armed = True
    if step == 0:
        with timer.phase("monitor"):
            t_last += monitor(step, epoch, plan.total_steps, method)
    while epoch < int(cfg.train.epochs) and step < stop_at:
        sampler.set_epoch(epoch)
        sampler.set_start_batch(batch_in_epoch, plan.per_rank_batch)
        loader = DataLoader(SeededDataset(dataset, seed, epoch), batch_size=plan.per_rank_batch,
                            sampler=sampler, drop_last=True,
                            collate_fn=SeededCollate(collate_fn, seed, epoch),
                            num_workers=int(cfg.data.num_workers), worker_init_fn=_ignore_sigint,
                            persistent_workers=False, pin_memory=device.type == "cuda")
        # "data": the workers' start-up, the waits for each batch and the workers' shut-down
        for batch in timer.iterate("data", loader):
            with timer.phase("step"):  # forward, backward, optimizer, after_step (EMA)
                lr, wd = lr_wd_at(step, plan, base_lr, cfg.optim)
                apply_schedule(optimizer, lr, wd)
                torch.manual_seed(mix_seed(seed, 0xC0DE, step, dist.rank()))
                batch = move_to(batch, device)
                logs: dict[str, float] = {}
                for micro in split_batch(batch, accum, plan.per_rank_batch, batch_dims):
                    with autocast_context(device, cfg.train.precision):
                        out = step_fn(micro, step)
                    loss = out["loss"]
                    if not torch.isfinite(loss.detach()).all():
                        logger.write({"step": step, "epoch": epoch, "error": f"non-finite loss {loss.item()}"})
                        raise NonFiniteLossError(non_finite_message(f"loss became {loss.item()}", step, epoch,
                                                                    cfg, ckpts))
                    scaler.scale(loss / accum).backward()
                    for k, v in out.items():
                        logs[k] = logs.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / accum
                dist.all_reduce_grads(params)
                method.cancel_gradients(step)
                scaler.unscale_(optimizer)
                logs["grad_norm"] = clip_gradients(params, float(cfg.optim.clip_grad), str(cfg.optim.clip_mode))
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                method.after_step(step)
            step += 1
            batch_in_epoch += 1
            images_since += plan.global_batch
            if bar is not None:
                bar.update(1)
            with timer.phase("monitor"):
                t_last += monitor(step, epoch, plan.total_steps, method)
            if step % log_every == 0 or step == plan.total_steps:
                with timer.phase("log"):
                    now = time.perf_counter()
                    record = {"step": step, "epoch": epoch, "lr": lr, "wd": wd,
                              "img_per_s": images_since / max(now - t_last, 1e-9), **logs,
                              **{f"time_{k}_s": v for k, v in timer.lap().items()}}
                    t_last, images_since = now, 0
                    logger.write(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.2e}",
                                        img_s=f"{record['img_per_s']:.0f}", **monitor.postfix)
            if ckpt_every > 0 and step % ckpt_every == 0 and batch_in_epoch < plan.steps_per_epoch:
                save(epoch, batch_in_epoch)
            if stop.requested:
                if saved_at != step:
                    if batch_in_epoch == plan.steps_per_epoch:
                        save(epoch + 1, 0)  # what the end-of-epoch checkpoint would hold
                    else:
                        save(epoch, batch_in_epoch)
                if bar is not None:
                    bar.close()  # the message goes on a line of its own
                raise TrainingInterrupted(interrupted_message(cfg, ckpts, step))
            if batch_in_epoch == plan.steps_per_epoch or step == stop_at:
                break
        if batch_in_epoch < plan.steps_per_epoch:  # stopped at train.max_steps
            if saved_at != step:
                save(epoch, batch_in_epoch)
            break
        epoch += 1
        batch_in_epoch = 0
        save(epoch, 0)
    stop.armed = False
    if bar is not None:
        bar.close()

    # The commit lives here and in the result records, never in encoder.pt: the encoder's bytes
    # depend only on what was computed, so a rebuild at a later commit gives the same sha256.
    summary = {"run_dir": str(run_dir), "steps": step, "config_hash": digest, **cost.totals(),
               "loop_time_s": timer.totals(),  # this session's
               "hardware": hardware(), "world_size": dist.world_size(), "git_commit": git_commit()}
    if previous:  # re-export only: the training cost and commit are the original ones
        summary.update({k: previous[k] for k in ("train_time_s", "peak_memory_mb", "loop_time_s", "hardware",
                                                 "git_commit") if k in previous})
    summary["health"] = monitor.summary()
    if main:
        meta = {"method": cfg.method.name, "paper": cfg.paper, "run": cfg.run_name,
                "config_hash": digest, "recipe_hash": recipe_hash(cfg), "step": step, **method.export_meta()}
        summary["encoder"] = str(run_dir / "encoder.pt")
        summary["encoder_sha256"] = export_encoder(method.encoder_for_eval(), run_dir / "encoder.pt", meta)
        atomic_write(done_file, json.dumps(summary, indent=2))
    dist.barrier()
    return summary


def training_log(run_dir: Path) -> list[dict]:
    """The optimisation lines of a run's log.jsonl (loss, lr, ...), without the monitor lines."""
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in lines if "loss" in r]


def final_loss(run_dir: Path) -> float:
    """Last logged loss of a run, for tests and tables."""
    return training_log(run_dir)[-1]["loss"]

