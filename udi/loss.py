"""DINO and UDI losses over head logits (official ``main_udi.py`` ``UDILoss``, ``Centering``).

Notation: ``H(p, q) = -sum p log q``; student probabilities ``softmax(x / tau_s)``; teacher
probabilities ``softmax((x - c) / tau_t)`` with a center ``c`` kept as an exponential moving
average (momentum 0.9) of the *un-centred* teacher logits of each batch.

* DINO: cross-entropy between every teacher global view and every student view except the
  same view, averaged over the pairs (22 pairs for 2 + 10 crops).
* UDI adds, with one shared head and three centers ``[cls, mm, patch]``:
  - ``L_patch``: student SRS outputs of global ``v`` against the teacher's SRS outputs at
    the projected positions in global ``1 - v``, averaged over the valid samples;
  - ``L_cls+``: the extra class token of every student view against a multimodal target
    built in logit space, before centering,
    ``t* = alpha * mean_valid(teacher patch logits in view u) + (1 - alpha) * teacher cls(u)``,
    for each teacher global ``u`` other than the view itself (22 pairs);
  - ``L = w_cls L_cls + w_cls+ L_cls+ + w_patch L_patch`` with ``w = 1/3`` each.
* ``local_patch`` (``method.local_patch_loss``; off in the official run): ``L_patch`` also
  pairs every student local SRS sample with the teacher's SRS output at its projection in
  each global that contains it; one mean over all valid (student sample, teacher view) slots,
  globals and locals pooled [inferred: the official code builds the local outputs but never
  uses them].
* ``info_nce`` (Table 15, "InfoNCE + DINO"): SimCLR's NT-Xent between the two global views,
  mixed as ``(1 - lambda) L + lambda L_InfoNCE`` by ``udi.model``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import dist
from common.dist import all_reduce_mean

CENTER_NAMES = ("cls", "mm", "patch")
BLEND_SPACES = ("logit", "prob")
MASKED_MEAN_EPS = 1e-5  # official denominator guard of the patch mean in the target


def cross_entropy(target: torch.Tensor, student_logits: torch.Tensor, student_temp: float) -> torch.Tensor:
    """``H(target, softmax(student / tau_s))`` per row (sum over the last dim)."""
    return -(target * F.log_softmax(student_logits / student_temp, dim=-1)).sum(-1)


@torch.no_grad()
def target_entropies(probs: torch.Tensor) -> dict:
    """Collapse monitors of the teacher's centred, sharpened targets ``probs [R, K]`` (the two
    collapses of DINO's "avoiding collapse" study), logged by the training loop:
    ``teacher_entropy``, the mean per-row entropy, and ``teacher_batch_entropy``, the entropy
    of the batch-mean target.  Uniform collapse (the ln K plateau): both near ``ln K``.  One-dimension collapse:
    both small and close to each other (every image gets the same target).  Learning: the
    row entropy falls well below the batch entropy; their difference is the mutual
    information between image and target class.  Per process and micro-batch (the batch
    entropy grows with the batch size)."""
    probs = probs.detach().float()
    row = -torch.special.xlogy(probs, probs).sum(-1).mean()
    mean = probs.mean(0)
    return {"teacher_entropy": row, "teacher_batch_entropy": -torch.special.xlogy(mean, mean).sum()}


def check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"udi.blend_alpha must lie in [0, 1] (weight of the patch mean in the "
                         f"multimodal target), got {alpha}")
    return float(alpha)


class Centers(nn.Module):
    """Named EMA centers ``[len(names), K]`` of teacher logits. ``stage`` pools the logits of a
    step (every micro-batch under gradient accumulation), ``update`` (after the optimiser step)
    moves each center towards their mean, averaged over processes."""

    def __init__(self, names: tuple[str, ...], out_dim: int, momentum: float = 0.9):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"center momentum must lie in [0, 1] (1 keeps the center fixed), got {momentum}")
        self.names, self.momentum = tuple(names), float(momentum)
        self.register_buffer("center", torch.zeros(len(names), out_dim))
        self._staged: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (sum, count)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.center[self.names.index(name)]

    @torch.no_grad()
    def stage(self, name: str, total: torch.Tensor, count) -> None:
        """Add ``total``, the sum of ``count`` logit vectors, to this step's pool of ``name``."""
        total = total.detach().float()
        count = torch.as_tensor(count, dtype=total.dtype, device=total.device)
        if name in self._staged:
            total, count = total + self._staged[name][0], count + self._staged[name][1]
        self._staged[name] = (total, count)

    @torch.no_grad()
    def update(self) -> None:
        for name, (total, count) in self._staged.items():
            i = self.names.index(name)
            batch_mean = total / count.clamp(min=1.0)
            self.center[i].mul_(self.momentum).add_(all_reduce_mean(batch_mean), alpha=1 - self.momentum)
        self._staged = {}


def pairwise_view_loss(student: torch.Tensor, targets: torch.Tensor, student_temp: float,
                       skip_same_view: bool = True) -> torch.Tensor:
    """Mean over (teacher view u, student view v != u) pairs of the batch-mean cross-entropy.

    ``student`` ``[V, B, K]`` logits, globals first in the teacher's order; ``targets``
    ``[U, B, K]`` teacher probabilities.
    """
    terms = []
    for u in range(targets.shape[0]):
        for v in range(student.shape[0]):
            if skip_same_view and u == v:
                continue
            terms.append(cross_entropy(targets[u], student[v], student_temp).mean())
    return torch.stack(terms).mean()


def info_nce(view0: torch.Tensor, view1: torch.Tensor, temperature: float, world=dist) -> torch.Tensor:
    """SimCLR's NT-Xent over the ``2N`` embeddings of both views gathered from every process.

    ``view0`` / ``view1`` ``[B, d]`` are this process's embeddings of the same B images.  Each
    embedding is scored (cosine / ``temperature``) against every gathered embedding but itself;
    the positive is the other view of its image.  Mean over the ``2B`` local rows.
    """
    if view0.shape != view1.shape:
        raise ValueError(f"InfoNCE views differ in shape: {tuple(view0.shape)} vs {tuple(view1.shape)}")
    B = view0.shape[0]
    local = F.normalize(torch.cat([view0, view1]), dim=-1)  # [2B, d], view-major
    # every process contributes [view0; view1]: key row r * 2B + v * B + b
    keys = F.normalize(world.all_gather_with_grad(torch.cat([view0, view1])), dim=-1)
    logits = local @ keys.t() / temperature  # [2B, 2WB]
    offset = world.rank() * 2 * B
    rows = torch.arange(2 * B, device=logits.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, rows + offset] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, (rows + B) % (2 * B) + offset)


@dataclass
class TeacherPatchLogits:
    """Teacher SRS logits the UDI loss needs (see ``udi.model``).

    ``global_logits`` ``[2, B, Mg, K]``: at the projections of student global ``v``'s samples
    into global ``1 - v``; ``global_valid`` ``[2, B, Mg]``.  Locals are reduced on the fly
    (the per-sample logits would not fit in memory at paper scale): ``local_sum``
    ``[n, 2, B, K]`` is the sum over the valid samples of local ``k`` projected into global
    ``v`` and ``local_count`` ``[n, 2, B]`` their number; ``local_prob_sum`` the same sum of the
    sharpened, centred probabilities (only for ``blend_space="prob"``).  For the local patch
    loss, ``local_targets`` ``[n, B, Ml, K]`` sums over the two globals the sharpened, centred
    probabilities of each local sample's valid projections, and ``local_target_count``
    ``[n, B, Ml]`` counts them (0, 1 or 2).
    """

    global_logits: torch.Tensor
    global_valid: torch.Tensor
    local_sum: torch.Tensor | None = None
    local_count: torch.Tensor | None = None
    local_prob_sum: torch.Tensor | None = None
    local_targets: torch.Tensor | None = None
    local_target_count: torch.Tensor | None = None


class UDILoss(nn.Module):
    """UDI's three-term loss; ``num_cls_tokens=1`` drops ``L_cls+`` and ``include_patch=False``
    drops ``L_patch`` (weights ``1 / number of terms`` unless given).  With one class token and
    no patch term it is DINO's loss."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 alpha: float = 0.5, num_cls_tokens: int = 2, include_patch: bool = True,
                 loss_weights: list[float] | None = None, blend_space: str = "logit",
                 local_patch: bool = False):
        super().__init__()
        if local_patch and not include_patch:
            raise ValueError("udi.local_patch_loss=true extends the patch term: set udi.include_patch=true")
        self.local_patch = bool(local_patch)
        if blend_space not in BLEND_SPACES:
            raise ValueError(f"udi.blend_space must be one of {BLEND_SPACES}, got {blend_space!r}")
        self.blend_space = blend_space
        if num_cls_tokens not in (1, 2):
            raise ValueError(f"udi.num_cls_tokens must be 1 or 2, got {num_cls_tokens}")
        if num_cls_tokens == 2 and not include_patch:
            raise ValueError("the multimodal target of [CLS+] needs the patch predictions: "
                             "set udi.include_patch=true or udi.num_cls_tokens=1")
        self.alpha = check_alpha(alpha)
        self.student_temp = student_temp
        self.terms = ["cls"] + (["cls_plus"] if num_cls_tokens == 2 else []) + (["patch"] if include_patch else [])
        if loss_weights is None:
            loss_weights = [1.0 / len(self.terms)] * len(self.terms)
        if len(loss_weights) != len(self.terms):
            raise ValueError(f"udi.loss_weights needs {len(self.terms)} values for the terms {self.terms}, "
                             f"got {list(loss_weights)}")
        self.weights = dict(zip(self.terms, (float(w) for w in loss_weights)))
        self.centers = Centers(CENTER_NAMES, out_dim, center_momentum)

    def multimodal_targets(self, teacher_cls: torch.Tensor, patches: TeacherPatchLogits,
                           teacher_temp: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multimodal targets: globals ``[2, B, K]`` (student global v, teacher 1-v), locals
        ``[n, 2, B, K]`` (student local k, teacher v).

        ``logit`` (official): un-centred logits ``alpha * mean_valid(patch) + (1 - alpha) * cls``,
        sharpened afterwards with the ``mm`` center.  ``prob`` [inferred alternative]: the same
        blend of the already centred and sharpened probabilities (patch center, cls center),
        renormalised (it matters only when no sample is valid).
        """
        a = self.alpha
        valid = patches.global_valid.unsqueeze(-1).to(patches.global_logits.dtype)
        count = valid.sum(2) + MASKED_MEAN_EPS
        if self.blend_space == "logit":
            g_patch, cls, l_patch_sum = patches.global_logits, teacher_cls, patches.local_sum
        else:
            g_patch = F.softmax((patches.global_logits - self.centers["patch"]) / teacher_temp, dim=-1)
            cls = F.softmax((teacher_cls - self.centers["cls"]) / teacher_temp, dim=-1)
            l_patch_sum = patches.local_prob_sum
        g_target = a * (g_patch * valid).sum(2) / count + (1 - a) * cls.flip(0)
        l_target = None
        if patches.local_sum is not None:
            l_mean = l_patch_sum / (patches.local_count.unsqueeze(-1) + MASKED_MEAN_EPS)
            l_target = a * l_mean + (1 - a) * cls.unsqueeze(0)
        if self.blend_space == "prob":
            g_target = g_target / g_target.sum(-1, keepdim=True)
            l_target = None if l_target is None else l_target / l_target.sum(-1, keepdim=True)
        return g_target, l_target

    def patch_loss(self, student_patch: torch.Tensor, teacher_probs: torch.Tensor, teacher_patch: TeacherPatchLogits,
                   student_local_patch: torch.Tensor | None) -> torch.Tensor:
        """Mean cross-entropy over the valid (student sample, teacher view) slots."""
        valid = teacher_patch.global_valid.to(student_patch.dtype)
        total = (cross_entropy(teacher_probs, student_patch, self.student_temp) * valid).sum()
        count = valid.sum()
        if self.local_patch and teacher_patch.local_targets is not None:
            # the target sums both teacher views' probabilities, so one cross-entropy per
            # student sample counts each of its valid (sample, view) slots
            total = total + cross_entropy(teacher_patch.local_targets, student_local_patch, self.student_temp).sum()
            count = count + teacher_patch.local_target_count.sum()
        return total / count.clamp(min=1.0)

    def forward(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor, teacher_temp: float,
                student_cls_plus: torch.Tensor | None = None, student_patch: torch.Tensor | None = None,
                teacher_patch: TeacherPatchLogits | None = None,
                student_local_patch: torch.Tensor | None = None) -> dict:
        """``student_cls`` / ``student_cls_plus`` ``[2 + n, B, K]``; ``teacher_cls [2, B, K]``;
        ``student_patch [2, B, Mg, K]`` (student global v's samples); ``student_local_patch
        [n, B, Ml, K]`` (local k's samples, with ``local_patch``)."""
        tau_s = self.student_temp

        def sharpen(logits: torch.Tensor, center: str) -> torch.Tensor:
            return F.softmax((logits - self.centers[center]) / teacher_temp, dim=-1)

        out = {}
        cls_targets = sharpen(teacher_cls, "cls")
        out.update(target_entropies(cls_targets.flatten(0, 1)))
        losses = {"cls": pairwise_view_loss(student_cls, cls_targets, tau_s)}
        cls_vectors = teacher_cls.flatten(0, 1)
        self.centers.stage("cls", cls_vectors.sum(0), len(cls_vectors))
        if "patch" in self.terms:
            valid = teacher_patch.global_valid.to(student_patch.dtype)
            losses["patch"] = self.patch_loss(student_patch, sharpen(teacher_patch.global_logits, "patch"),
                                              teacher_patch, student_local_patch)
            out["patch_valid_frac"] = float(valid.mean())
            patch_sum = (teacher_patch.global_logits * valid.unsqueeze(-1)).sum((0, 1, 2))
            patch_count = valid.sum()
            if teacher_patch.local_sum is not None:
                patch_sum = patch_sum + teacher_patch.local_sum.sum((0, 1, 2))
                patch_count = patch_count + teacher_patch.local_count.sum()
            self.centers.stage("patch", patch_sum, patch_count)
        if "cls_plus" in self.terms:
            g_target, l_target = self.multimodal_targets(teacher_cls, teacher_patch, teacher_temp)
            in_logits = self.blend_space == "logit"
            g_probs = sharpen(g_target, "mm") if in_logits else g_target
            # pair student global v with its target (teacher 1-v); each local with both teachers
            terms = [cross_entropy(g_probs[v], student_cls_plus[v], tau_s).mean() for v in (0, 1)]
            mm_vectors = [g_target]
            if l_target is not None:
                l_probs = sharpen(l_target, "mm") if in_logits else l_target
                for k in range(l_target.shape[0]):
                    terms += [cross_entropy(l_probs[k, u], student_cls_plus[2 + k], tau_s).mean() for u in (0, 1)]
                mm_vectors.append(l_target.flatten(0, 1))
            losses["cls_plus"] = torch.stack(terms).mean()
            if in_logits:
                mm_vectors = torch.cat(mm_vectors).flatten(0, 1)
                self.centers.stage("mm", mm_vectors.sum(0), len(mm_vectors))
        out["loss"] = sum(self.weights[name] * value for name, value in losses.items())
        out.update({f"loss_{name}": value.detach() for name, value in losses.items()})
        return out
