"""UDI's objective switches: the local patch loss and Table 15's InfoNCE + DINO."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.config import load_config
from udi.loss import info_nce
from udi.model import build_method, build_train_data


def smoke_cfg(method: str = "udi", *overrides: str):
    return load_config("udi", ["scale=smoke", f"method={method}", *overrides])


@pytest.fixture(scope="module")
def batch():
    dataset, collate = build_train_data(smoke_cfg("udi"))
    torch.manual_seed(0)
    return collate([dataset[i] for i in range(4)])


def _ce(teacher_logits, student_logits, center, tau_t, tau_s):
    p = F.softmax((teacher_logits - center) / tau_t, dim=-1)
    return -(p * F.log_softmax(student_logits / tau_s, dim=-1)).sum()


def reference_patch_loss(method, batch, tau_t):
    """Slot by slot: each student sample (global and local) against the teacher's SRS output
    at every valid projection, one query at a time, averaged over the valid slots."""
    s, t = method.student, method.teacher
    center, tau_s = method.loss.centers["patch"], method.loss.student_temp
    B = batch["global_crops"].shape[0]
    n = batch["local_crops"].shape[1]
    with torch.no_grad():
        t_patches = [t.encode(batch["global_crops"][:, v], raw_patches=True)[1] for v in (0, 1)]
    s_global = [s.encode(batch["global_crops"][:, v], raw_patches=True)[1] for v in (0, 1)]
    s_local = [s.encode(batch["local_crops"][:, k], raw_patches=True)[1] for k in range(n)]
    head_s, head_t = s.head("patch"), t.head("patch")
    one = torch.ones(1, 1, 1)

    def student_logits(patches, b, index):
        return head_s(s.srs(patches[b:b + 1], index.view(1, 1, 1), one))[0, 0]

    def teacher_logits(u, b, index, weight):
        with torch.no_grad():
            return head_t(t.srs(t_patches[u][b:b + 1], index.view(1, 1, 4), weight.view(1, 1, 4)))[0, 0]

    total, count, local_slots = 0.0, 0, 0
    for b in range(B):
        for v in (0, 1):  # student global v against teacher global 1 - v
            for m in range(batch["global_src"].shape[2]):
                if batch["global_valid"][b, v, m]:
                    total = total + _ce(teacher_logits(1 - v, b, batch["global_tgt_index"][b, v, m],
                                                       batch["global_tgt_weight"][b, v, m]),
                                        student_logits(s_global[v], b, batch["global_src"][b, v, m]),
                                        center, tau_t, tau_s)
                    count += 1
        for k in range(n):  # student local k against both teacher globals
            for u in (0, 1):
                for m in range(batch["local_src"].shape[2]):
                    if batch["local_valid"][b, k, u, m]:
                        total = total + _ce(teacher_logits(u, b, batch["local_tgt_index"][b, k, u, m],
                                                           batch["local_tgt_weight"][b, k, u, m]),
                                            student_logits(s_local[k], b, batch["local_src"][b, k, m]),
                                            center, tau_t, tau_s)
                        count += 1
                        local_slots += 1
    assert local_slots > 0  # the batch exercises the local term
    return total / count


def test_local_patch_loss_is_the_mean_over_every_valid_student_teacher_slot(batch):
    torch.manual_seed(0)
    # one teacher sample per chunk: the per-sample targets are accumulated across chunks
    method = build_method(smoke_cfg("udi", "method.local_patch_loss=true", "method.teacher_chunk_rows=1"), 10)
    method.eval()  # no drop path: the reference recomputes the student
    with torch.no_grad():
        method.loss.centers.center.normal_()  # a non-zero patch center must be subtracted
    out = method.training_step(batch, 0)
    expected = reference_patch_loss(method, batch, method.teacher_temp(0))
    assert torch.allclose(out["loss_patch"], expected, rtol=1e-4)
    out["loss"].backward()
    assert method.student.srs.qkv.weight.grad.abs().sum() > 0


def test_local_patch_targets_do_not_depend_on_the_chunk_size(batch):
    losses = []
    for rows in (1, 7, 100000):
        torch.manual_seed(0)
        method = build_method(smoke_cfg("udi", "method.local_patch_loss=true", f"method.teacher_chunk_rows={rows}"), 10)
        losses.append(method.training_step(batch, 0)["loss_patch"])
    assert torch.allclose(losses[0], losses[1], rtol=1e-5) and torch.allclose(losses[0], losses[2], rtol=1e-5)


def test_local_patch_loss_off_is_the_official_global_only_term(batch):
    losses = {}
    for flag in ("false", "true"):
        torch.manual_seed(0)
        method = build_method(smoke_cfg("udi", f"method.local_patch_loss={flag}"), 10)
        losses[flag] = method.training_step(batch, 0)
    for key in ("loss_cls", "loss_cls_plus"):
        assert torch.allclose(losses["false"][key], losses["true"][key])
    assert not torch.allclose(losses["false"]["loss_patch"], losses["true"]["loss_patch"])


def test_local_patch_loss_needs_the_patch_term():
    with pytest.raises(ValueError, match="set udi.include_patch=true"):
        build_method(smoke_cfg("dino", "method.local_patch_loss=true"), 10)


# ------------------------------------------------------------------ InfoNCE
def reference_nt_xent(rows: torch.Tensor, keys: torch.Tensor, positives: list[int], selves: list[int], tau: float):
    total = 0.0
    for i, (pos, own) in enumerate(zip(positives, selves)):
        sims = [F.cosine_similarity(rows[i], keys[j], dim=0) / tau for j in range(len(keys)) if j != own]
        pos_sim = F.cosine_similarity(rows[i], keys[pos], dim=0) / tau
        total = total - (pos_sim - torch.logsumexp(torch.stack(sims), 0))
    return total / len(rows)


def test_info_nce_matches_simclr_nt_xent_written_as_a_loop():
    torch.manual_seed(0)
    v0, v1 = torch.randn(5, 8), torch.randn(5, 8)
    rows = torch.cat([v0, v1])
    expected = reference_nt_xent(rows, rows, [(i + 5) % 10 for i in range(10)], list(range(10)), 0.2)
    assert torch.allclose(info_nce(v0, v1, 0.2), expected, atol=1e-5)


class FakeWorld:
    """Rank 1 of 2: rank 0's embeddings come first in the gather."""

    def __init__(self, other: torch.Tensor):
        self.other = other

    def rank(self) -> int:
        return 1

    def all_gather_with_grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.other, x])


def test_info_nce_uses_every_process_as_negatives_with_rank_offset_positives():
    torch.manual_seed(1)
    v0, v1, other = torch.randn(3, 4), torch.randn(3, 4), torch.randn(6, 4)
    keys = torch.cat([other, v0, v1])
    expected = reference_nt_xent(torch.cat([v0, v1]), keys, [6 + (i + 3) % 6 for i in range(6)],
                                 [6 + i for i in range(6)], 0.1)
    assert torch.allclose(info_nce(v0, v1, 0.1, world=FakeWorld(other)), expected, atol=1e-5)


def test_info_nce_ratio_mixes_the_two_objectives(batch):
    torch.manual_seed(0)
    method = build_method(smoke_cfg("dino", "method.infonce_weight=0.25"), 10)
    out = method.training_step(batch, 0)
    assert torch.allclose(out["loss"], 0.75 * out["loss_self_distillation"] + 0.25 * out["loss_infonce"])
    assert torch.allclose(out["loss_self_distillation"], out["loss_cls"])
    out["loss"].backward()
    assert method.student.heads[0].mlp[0].weight.grad.abs().sum() > 0
    # lambda = 1: InfoNCE only, the DINO output layer gets no gradient
    torch.manual_seed(0)
    method = build_method(smoke_cfg("dino", "method.infonce_weight=1.0"), 10)
    method.training_step(batch, 0)["loss"].backward()
    assert method.student.heads[0].last_layer.parametrizations.weight.original1.grad.abs().sum() == 0
    assert method.student.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("override, match", [("method.infonce_weight=1.5", "method.infonce_weight=1.5"),
                                             ("method.infonce_temp=0", "method.infonce_temp=0")])
def test_bad_infonce_settings_fail_with_the_fix(override, match):
    with pytest.raises(ValueError, match=match):
        build_method(smoke_cfg("dino", override), 10)
