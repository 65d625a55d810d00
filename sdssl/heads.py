"""Projector and predictor MLPs, several independent ones evaluated in one batched pass.

SDSSL gives every distilled block its own projector and predictor.  Running twelve small
MLPs one after another costs twelve kernel launches per layer of the MLP; here ``n``
same-shaped MLPs are one ``StackedMLP`` whose linear layers are a batched matmul and whose
BatchNorm is one ``BatchNorm1d(n * width)`` over a ``[B, n * width]`` view, i.e. per-MLP,
per-channel batch statistics exactly as ``n`` separate ``BatchNorm1d(width)`` would give.

Block structure (official ``byol_pytorch.MLP``): hidden layers ``Linear(bias=False) -> BN ->
ReLU``; output ``Linear(bias=False)`` followed by ``BN(affine=False)`` when ``last_bn``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from common import dist

__all__ = ["StackedLinear", "StackedMLP"]


class StackedLinear(nn.Module):
    """``n`` independent bias-free linear maps: ``[B, n, in] -> [B, n, out]``."""

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features))
        # nn.Linear's default init, per member, so each MLP starts as the reference's would.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bmm wants the member axis first; [n, B, in] @ [n, in, out] -> [n, B, out].
        return torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"n={self.n}, in_features={self.in_features}, out_features={self.out_features}, bias=False"


class _StackedBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over ``[B, n, C]`` with separate statistics for each of the ``n`` members.

    With several processes, training-mode statistics are those of the global batch (the
    official code converts its heads to SyncBatchNorm under DDP); ``nn.SyncBatchNorm`` is
    CUDA-only, so the sums are all-gathered with gradient here, which works on any backend.
    """

    def __init__(self, n: int, channels: int, affine: bool = True) -> None:
        super().__init__(n * channels, affine=affine)
        self.n, self.channels = n, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        flat = x.reshape(batch, self.n * self.channels)
        out = self._global_batch_norm(flat) if self.training and dist.world_size() > 1 else super().forward(flat)
        return out.view(batch, self.n, self.channels)

    def _global_batch_norm(self, flat: torch.Tensor) -> torch.Tensor:
        sums = torch.cat([flat.sum(0), (flat * flat).sum(0), flat.new_full((1,), flat.shape[0])])
        total = dist.all_gather_with_grad(sums[None]).sum(0)
        width, count = flat.shape[1], total[-1]
        mean = total[:width] / count
        var = total[width:2 * width] / count - mean * mean  # biased, as BatchNorm normalises with
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1), self.momentum)
        out = (flat - mean) * torch.rsqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


class StackedMLP(nn.Module):
    """``n`` MLPs with widths ``dims = [in, hidden..., out]``, applied to ``[B, n, in]``.

    Member ``i`` sees only ``x[:, i]``; a unit test checks this against ``n`` separate
    ``nn.Sequential`` MLPs carrying the same weights.
    """

    def __init__(self, n: int, dims: list[int], last_bn: bool) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"StackedMLP needs at least one member, got n={n}")
        if len(dims) < 2:
            raise ValueError(f"an MLP needs [in, ..., out] widths, got {dims}")
        self.n, self.dims, self.last_bn = n, list(dims), last_bn
        layers: list[nn.Module] = []
        for width_in, width_out in zip(dims[:-2], dims[1:-1]):
            layers += [StackedLinear(n, width_in, width_out), _StackedBatchNorm(n, width_out), nn.ReLU(inplace=True)]
        layers.append(StackedLinear(n, dims[-2], dims[-1]))
        if last_bn:
            layers.append(_StackedBatchNorm(n, dims[-1], affine=False))
        self.layers = nn.Sequential(*layers)

    @property
    def in_features(self) -> int:
        return self.dims[0]

    @property
    def hidden_widths(self) -> list[int]:
        return self.dims[1:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.n or x.shape[2] != self.dims[0]:
            raise ValueError(f"StackedMLP expects [B, {self.n}, {self.dims[0]}], got {tuple(x.shape)}")
        return self.layers(x)
