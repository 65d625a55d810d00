"""One optimisation step's gradients taken as `common.train` takes them: the batch cut by
`split_batch` (with the collator's `batch_dims`), `loss / accum_steps` backpropagated per
micro-batch. Shared by each paper's gradient-accumulation tests."""
from __future__ import annotations

import torch

from common.train import split_batch


def step_gradients(method: torch.nn.Module, batch, batch_size: int, accum_steps: int = 1,
                   batch_dims=None) -> dict[str, torch.Tensor]:
    method.zero_grad(set_to_none=True)
    for micro in split_batch(batch, accum_steps, batch_size, batch_dims):
        torch.manual_seed(0)  # the same model randomness (if any) for every call
        (method.training_step(micro, 0)["loss"] / accum_steps).backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    method.zero_grad(set_to_none=True)
    return grads


def mean_gradients(method: torch.nn.Module, batches: list, batch_size: int) -> dict[str, torch.Tensor]:
    """The mean of the gradients of each batch taken whole: what accumulation over those
    micro-batches must give, whatever statistics the loss shares inside a batch."""
    per_batch = [step_gradients(method, b, batch_size) for b in batches]
    return {n: torch.stack([g[n] for g in per_batch]).mean(0) for n in per_batch[0]}


def assert_same_gradients(got: dict, want: dict, rtol: float = 1e-4, scale_tol: float = 1e-5) -> None:
    """Equal up to float summation order: each tensor to ``scale_tol`` of its largest entry."""
    assert want and got.keys() == want.keys()
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=rtol, atol=scale_tol * float(g.abs().max()) + 1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")
