"""Process-group set-up from SLURM, torchrun or a single local process, and collectives.

The loop all-reduces gradients itself (see common.train) instead of wrapping the method in
DistributedDataParallel, so EMA teachers, centers and frozen parts need no special care.
"""
from __future__ import annotations

import datetime
import os
import re
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun" | "slurm" | "single"


def _first_slurm_host(nodelist: str) -> str:
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, check=True, timeout=10).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    # "node[03-05,07],other" -> "node03" without scontrol
    m = re.match(r"([^\[,]+)(?:\[(\d+))?", nodelist)
    return (m.group(1) + (m.group(2) or "")) if m else "127.0.0.1"


def detect_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Read the process layout; torchrun variables win over SLURM's (submitit exports them too)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)),
                       "torchrun")
    ntasks = int(env.get("SLURM_NTASKS", "1"))
    if "SLURM_PROCID" in env and ntasks > 1:
        job_id = int(env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "0")))
        # A port derived from the job id lets several jobs share a node without colliding.
        port = 20000 + (job_id + int(env.get("SLURM_ARRAY_TASK_ID", "0"))) % 20000
        return DistEnv(int(env["SLURM_PROCID"]), ntasks, int(env.get("SLURM_LOCALID", 0)),
                       _first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")), port, "slurm")
    return DistEnv(0, 1, 0, "127.0.0.1", 0, "single")


def init_distributed(backend: str | None = None, timeout_s: float = 120.0) -> DistEnv:
    """Join the process group (if more than one process) and prove it works with one all-reduce."""
    denv = detect_env()
    if denv.world_size == 1 or (dist.is_available() and dist.is_initialized()):
        return denv
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    os.environ.setdefault("MASTER_ADDR", denv.master_addr)
    os.environ.setdefault("MASTER_PORT", str(denv.master_port))
    if backend == "nccl":
        torch.cuda.set_device(denv.local_rank)
    hint = (f"rank {denv.rank}/{denv.world_size} ({denv.source}) could not reach the other processes at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s:.0f}s; check that "
            "every task was started, that the port is free, and the network between nodes")
    try:
        dist.init_process_group(backend, rank=denv.rank, world_size=denv.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        probe = torch.ones(1, device="cuda" if backend == "nccl" else "cpu")
        dist.all_reduce(probe)
    except Exception as exc:
        raise RuntimeError(f"{hint}: {exc}") from exc
    if int(probe.item()) != denv.world_size:
        raise RuntimeError(f"{hint}: start-up all-reduce gave {probe.item()}, expected {denv.world_size}")
    return denv


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad):
        # Every rank's loss depends on this rank's slice: sum the gradients of all ranks.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` of every rank along dim 0; gradients flow back to each rank's slice."""
    return _GatherWithGrad.apply(x) if world_size() > 1 else x


@torch.no_grad()
def all_gather_nograd(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, 0)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(x)
        x /= world_size()
    return x


@torch.no_grad()
def all_reduce_grads(params) -> None:
    """Average gradients over ranks in one flat buffer (what DDP does, without its wrapper)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
