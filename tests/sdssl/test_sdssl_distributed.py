"""Gathered-key losses: 1 process on the full batch == 2 gloo processes on half the batch each."""

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from sdssl.heads import StackedMLP
from sdssl.loss import moco_v3_contrastive, nt_xent

WORLD = 2
BATCH = 6  # global images; each process holds BATCH // WORLD
LAYERS = 3
TAU = 0.2


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "moco_q": torch.randn(LAYERS, BATCH, 16, generator=g),  # [layers, images, d]
        "moco_k": torch.randn(BATCH, 16, generator=g),
        "simclr_v1": torch.randn(BATCH, 16, generator=g),
        "simclr_v2": torch.randn(BATCH, 16, generator=g),
    }


def _losses(moco_q, moco_k, v1, v2):
    """Both losses on one process's shard; queries layer-major, SimCLR rows cat(v1, v2)."""
    moco = moco_v3_contrastive(moco_q.flatten(0, 1), moco_k, TAU)
    simclr = nt_xent(torch.cat([v1, v2]), torch.cat([v1, v2]), TAU, keys_require_grad=True)
    return moco, simclr


def _heads():
    torch.manual_seed(0)
    return StackedMLP(2, [16, 8, 4], last_bn=True).train()


def _worker(rank, init_file, out_file):
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    x = _inputs()
    shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    heads = _heads()
    head_out = heads(x["moco_q"][:2, shard].transpose(0, 1).contiguous())
    head_out.square().sum().backward()
    head_grads = [p.grad.clone() for p in heads.parameters()]
    for g in head_grads:
        tdist.all_reduce(g)
    head_parts = [torch.empty_like(head_out) for _ in range(WORLD)]
    tdist.all_gather(head_parts, head_out.detach())
    moco_q = x["moco_q"][:, shard].clone().requires_grad_()
    v1 = x["simclr_v1"][shard].clone().requires_grad_()
    v2 = x["simclr_v2"][shard].clone().requires_grad_()
    moco, simclr = _losses(moco_q, x["moco_k"][shard], v1, v2)
    (moco + simclr).backward()
    losses = torch.stack([moco.detach(), simclr.detach()])
    tdist.all_reduce(losses)
    gathered = {}
    for name, grad in zip(("moco_q", "v1", "v2"), (moco_q.grad, v1.grad, v2.grad)):
        parts = [torch.empty_like(grad) for _ in range(WORLD)]
        tdist.all_gather(parts, grad.contiguous())
        gathered[name] = torch.cat(parts, dim=1 if name == "moco_q" else 0)
    if rank == 0:
        torch.save({"losses": losses / WORLD, **gathered, "head_out": torch.cat(head_parts),
                    "head_grads": head_grads, "running_mean": heads.layers[1].running_mean}, out_file)
    tdist.destroy_process_group()


def test_gathered_losses_and_gradients_match_single_process(tmp_path):
    out_file = tmp_path / "two_process.pt"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(out_file)), nprocs=WORLD, join=True)
    two = torch.load(out_file)

    x = _inputs()
    moco_q = x["moco_q"].clone().requires_grad_()
    v1 = x["simclr_v1"].clone().requires_grad_()
    v2 = x["simclr_v2"].clone().requires_grad_()
    moco, simclr = _losses(moco_q, x["moco_k"], v1, v2)
    (moco + simclr).backward()

    # The mean of the per-process losses is the full-batch loss (rank-offset labels, gathered keys).
    torch.testing.assert_close(two["losses"], torch.stack([moco, simclr]).detach())
    # Each process's gradient is the gradient of the *sum* of the per-process losses (the
    # gather sums gradients, the loop then averages parameter gradients), i.e. WORLD times
    # the single-process gradient of the mean.
    torch.testing.assert_close(two["moco_q"], WORLD * moco_q.grad)
    torch.testing.assert_close(two["v1"], WORLD * v1.grad)
    torch.testing.assert_close(two["v2"], WORLD * v2.grad)

    # Head BatchNorm uses global-batch statistics (SyncBN): outputs, running statistics and
    # the parameter gradients summed over processes equal those of one process holding the
    # whole batch (the per-process losses sum to the full-batch loss).
    heads = _heads()
    head_out = heads(x["moco_q"][:2].transpose(0, 1).contiguous())
    head_out.square().sum().backward()
    torch.testing.assert_close(two["head_out"], head_out.detach())
    torch.testing.assert_close(two["running_mean"], heads.layers[1].running_mean)
    for got, want in zip(two["head_grads"], heads.parameters()):
        torch.testing.assert_close(got, want.grad, rtol=1e-3, atol=1e-4)  # one-pass vs two-pass variance
