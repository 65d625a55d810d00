"""DINO and UDI losses against formulas written here from the spec's equations."""
from __future__ import annotations

import math

import pytest
import torch

from udi.loss import TeacherPatchLogits, UDILoss, check_alpha

K, B, N_LOCAL, MG, ML = 12, 3, 4, 5, 3
TAU_S, TAU_T = 0.1, 0.05


def softmax(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum(dim, keepdim=True)


def log_softmax(x, dim=-1):
    shifted = x - x.max(dim, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim, keepdim=True))


def h(p, q_logits, tau):
    """H(p, softmax(q / tau)) per row, written as -sum p log q."""
    return -(p * log_softmax(q_logits / tau)).sum(-1)


def random_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 3  # noqa: E731
    inputs = dict(
        s_cls=r(2 + N_LOCAL, B, K), s_plus=r(2 + N_LOCAL, B, K), s_patch=r(2, B, MG, K),
        t_cls=r(2, B, K), t_patch=r(2, B, MG, K), t_local=r(N_LOCAL, 2, B, ML, K),
        g_valid=torch.rand(2, B, MG, generator=g) < 0.6, l_valid=torch.rand(N_LOCAL, 2, B, ML, generator=g) < 0.6,
    )
    inputs["l_valid"][0, 1, 0] = False  # a (local, global) pair without any valid sample
    return inputs


def teacher_patch(x) -> TeacherPatchLogits:
    v = x["l_valid"].unsqueeze(-1).float()
    return TeacherPatchLogits(x["t_patch"], x["g_valid"], (x["t_local"] * v).sum(3), x["l_valid"].sum(-1).float())


def reference_dino(s_cls, t_cls, c_cls):
    """DINO: sum over teacher globals iq and student views v != iq of the batch mean, / #pairs."""
    total, pairs = 0.0, 0
    for iq in range(2):
        q = softmax((t_cls[iq] - c_cls) / TAU_T)
        for v in range(s_cls.shape[0]):
            if v == iq:
                continue
            total = total + h(q, s_cls[v], TAU_S).mean()
            pairs += 1
    return total / pairs


def reference_udi(x, c_cls, c_mm, c_patch, alpha):
    l_cls = reference_dino(x["s_cls"], x["t_cls"], c_cls)
    # patch: student global v's samples vs the teacher at their projection into global 1 - v
    num = den = 0.0
    for v in range(2):
        for b in range(B):
            for m in range(MG):
                if x["g_valid"][v, b, m]:
                    num = num + h(softmax((x["t_patch"][v, b, m] - c_patch) / TAU_T), x["s_patch"][v, b, m], TAU_S)
                    den += 1
    l_patch = num / den
    # cls+: target = alpha * mean of valid teacher patch logits + (1 - alpha) * teacher cls, in logit space
    terms = []
    for v in range(2):
        per_image = []
        for b in range(B):
            valid = x["g_valid"][v, b]
            mean = x["t_patch"][v, b][valid].sum(0) / (valid.sum() + 1e-5)
            target = alpha * mean + (1 - alpha) * x["t_cls"][1 - v, b]
            per_image.append(h(softmax((target - c_mm) / TAU_T), x["s_plus"][v, b], TAU_S))
        terms.append(torch.stack(per_image).mean())
    for k in range(N_LOCAL):
        for u in range(2):
            per_image = []
            for b in range(B):
                valid = x["l_valid"][k, u, b]
                mean = x["t_local"][k, u, b][valid].sum(0) / (valid.sum() + 1e-5)
                target = alpha * mean + (1 - alpha) * x["t_cls"][u, b]
                per_image.append(h(softmax((target - c_mm) / TAU_T), x["s_plus"][2 + k, b], TAU_S))
            terms.append(torch.stack(per_image).mean())
    assert len(terms) == 2 + 2 * N_LOCAL  # the 22 pairs of 2 + 10 crops, here 2 + 2n
    l_plus = sum(terms) / len(terms)
    return l_cls, l_plus, l_patch


def test_dino_loss_matches_the_pairwise_formula():
    x = random_inputs()
    loss = UDILoss(K, TAU_S, num_cls_tokens=1, include_patch=False)
    loss.centers.center[0] = torch.randn(K)
    out = loss(x["s_cls"], x["t_cls"], TAU_T)
    expected = reference_dino(x["s_cls"], x["t_cls"], loss.centers["cls"])
    assert torch.allclose(out["loss"], expected, rtol=1e-5)
    assert set(out) == {"loss", "loss_cls", "teacher_entropy", "teacher_batch_entropy"}


def test_dino_loss_with_12_crops_averages_22_pairs():
    """(2 L_g + 20 L_l) / 22 of the spec equals the mean over the 22 pairs."""
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(12, 2, K, generator=g), torch.randn(2, 2, K, generator=g)
    loss = UDILoss(K, TAU_S, num_cls_tokens=1, include_patch=False)(s, t, TAU_T)["loss"]
    q = [softmax(t[u] / TAU_T) for u in range(2)]
    l_g = (h(q[0], s[1], TAU_S).mean() + h(q[1], s[0], TAU_S).mean()) / 2
    l_l = sum(h(q[u], s[v], TAU_S).mean() for u in range(2) for v in range(2, 12)) / 20
    assert torch.allclose(loss, (2 * l_g + 20 * l_l) / 22, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_udi_loss_three_centers_matches_the_reference(alpha):
    x = random_inputs()
    loss = UDILoss(K, TAU_S, alpha=alpha)
    centers = torch.randn(3, K)
    loss.centers.center.copy_(centers)
    out = loss(x["s_cls"], x["t_cls"], TAU_T, x["s_plus"], x["s_patch"], teacher_patch(x))
    l_cls, l_plus, l_patch = reference_udi(x, centers[0], centers[1], centers[2], alpha)
    assert torch.allclose(out["loss_cls"], l_cls, rtol=1e-5)
    assert torch.allclose(out["loss_cls_plus"], l_plus, rtol=1e-5)
    assert torch.allclose(out["loss_patch"], l_patch, rtol=1e-5)
    assert torch.allclose(out["loss"], (l_cls + l_plus + l_patch) / 3, rtol=1e-5)


def test_ablations_drop_terms_and_renormalise_weights():
    x = random_inputs()
    one_token = UDILoss(K, TAU_S, num_cls_tokens=1)(x["s_cls"], x["t_cls"], TAU_T, None, x["s_patch"], teacher_patch(x))
    assert "loss_cls_plus" not in one_token
    assert torch.allclose(one_token["loss"], (one_token["loss_cls"] + one_token["loss_patch"]) / 2)
    weighted = UDILoss(K, TAU_S, loss_weights=[1.0, 0.0, 2.0])(x["s_cls"], x["t_cls"], TAU_T, x["s_plus"],
                                                               x["s_patch"], teacher_patch(x))
    assert torch.allclose(weighted["loss"], weighted["loss_cls"] + 2 * weighted["loss_patch"])


def test_centers_update_with_momentum_09_from_uncentred_teacher_logits():
    x = random_inputs()
    loss = UDILoss(K, TAU_S, alpha=0.5)
    old = torch.randn(3, K)
    loss.centers.center.copy_(old)
    loss(x["s_cls"], x["t_cls"], TAU_T, x["s_plus"], x["s_patch"], teacher_patch(x))
    assert torch.equal(loss.centers.center, old)  # staged, applied after the optimiser step
    loss.centers.update()
    batch_cls = x["t_cls"].reshape(-1, K).mean(0)
    g_mean = [(x["t_patch"][v] * x["g_valid"][v, ..., None]).sum(1) / (x["g_valid"][v].sum(-1, keepdim=True) + 1e-5)
              for v in range(2)]
    mm = [0.5 * g_mean[v] + 0.5 * x["t_cls"][1 - v] for v in range(2)]
    l_mean = (x["t_local"] * x["l_valid"][..., None]).sum(3) / (x["l_valid"].sum(-1)[..., None] + 1e-5)
    mm += [0.5 * l_mean[k, u] + 0.5 * x["t_cls"][u] for k in range(N_LOCAL) for u in range(2)]
    batch_mm = torch.cat(mm).mean(0)  # (2 + 2n) B vectors: the 22b of the spec
    all_valid = torch.cat([x["t_patch"][x["g_valid"]], x["t_local"][x["l_valid"]]])
    batch_patch = all_valid.mean(0)
    for i, batch_mean in enumerate([batch_cls, batch_mm, batch_patch]):
        assert torch.allclose(loss.centers.center[i], 0.9 * old[i] + 0.1 * batch_mean, atol=1e-5)


def test_multimodal_target_is_the_documented_logit_blend():
    x = random_inputs(2)
    alpha = 0.3
    g_target, l_target = UDILoss(K, TAU_S, alpha=alpha).multimodal_targets(x["t_cls"], teacher_patch(x))
    v, b = 1, 2
    valid = x["g_valid"][v, b]
    expected = alpha * x["t_patch"][v, b][valid].sum(0) / (valid.sum() + 1e-5) + (1 - alpha) * x["t_cls"][0, b]
    assert torch.allclose(g_target[v, b], expected, atol=1e-6)
    # no valid sample: the target is (1 - alpha) times the teacher's cls logit
    assert torch.allclose(l_target[0, 1, 0], (1 - alpha) * x["t_cls"][1, 0])


def test_probability_space_blend_is_the_documented_formula():
    """blend_space=prob: alpha * mean_valid softmax((patch - c_patch)/tau) + (1 - alpha) *
    softmax((cls - c_cls)/tau), renormalised; the cls+ loss uses it as the target directly."""
    x = random_inputs(4)
    alpha = 0.25
    loss = UDILoss(K, TAU_S, alpha=alpha, blend_space="prob")
    centers = torch.randn(3, K)
    loss.centers.center.copy_(centers)
    patch = teacher_patch(x)
    probs = softmax((x["t_local"] - centers[2]) / TAU_T)
    patch.local_prob_sum = (probs * x["l_valid"].unsqueeze(-1)).sum(3)
    g_target, l_target = loss.multimodal_targets(x["t_cls"], patch, TAU_T)
    v, b = 0, 1
    valid = x["g_valid"][v, b]
    mean = softmax((x["t_patch"][v, b][valid] - centers[2]) / TAU_T).sum(0) / (valid.sum() + 1e-5)
    expected = alpha * mean + (1 - alpha) * softmax((x["t_cls"][1, b] - centers[0]) / TAU_T)
    assert torch.allclose(g_target[v, b], expected / expected.sum(), atol=1e-6)
    # no valid sample: the target is the teacher's cls distribution
    assert torch.allclose(l_target[0, 1, 0], softmax((x["t_cls"][1, 0] - centers[0]) / TAU_T), atol=1e-6)
    out = loss(x["s_cls"], x["t_cls"], TAU_T, x["s_plus"], x["s_patch"], patch)
    terms = [h(g_target[u], x["s_plus"][u], TAU_S).mean() for u in (0, 1)]
    terms += [h(l_target[k, u], x["s_plus"][2 + k], TAU_S).mean() for k in range(N_LOCAL) for u in (0, 1)]
    assert torch.allclose(out["loss_cls_plus"], sum(terms) / len(terms), rtol=1e-5)


def test_student_gets_gradient_and_loss_is_finite_with_no_valid_patch():
    x = random_inputs()
    x["g_valid"][:] = False
    s_patch = x["s_patch"].requires_grad_()
    out = UDILoss(K, TAU_S)(x["s_cls"], x["t_cls"], TAU_T, x["s_plus"].requires_grad_(), s_patch, teacher_patch(x))
    assert math.isfinite(out["loss"].item()) and out["loss_patch"].item() == 0.0
    out["loss"].backward()
    assert x["s_plus"].grad.abs().sum() > 0


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_fails(alpha):
    with pytest.raises(ValueError, match=r"udi.blend_alpha must lie in \[0, 1\]"):
        check_alpha(alpha)
    with pytest.raises(ValueError, match="blend_alpha"):
        UDILoss(K, alpha=alpha)


def test_inconsistent_loss_settings_fail_with_the_fix():
    with pytest.raises(ValueError, match="set udi.include_patch=true or udi.num_cls_tokens=1"):
        UDILoss(K, num_cls_tokens=2, include_patch=False)
    with pytest.raises(ValueError, match="needs 3 values"):
        UDILoss(K, loss_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="udi.blend_space must be one of"):
        UDILoss(K, blend_space="probability")


def test_teacher_target_entropies_are_logged_for_both_collapses():
    """Row entropy and entropy of the batch-mean target of softmax((t - c) / tau_t), written
    here as -sum p log p over the teacher globals' rows."""
    x = random_inputs()
    loss = UDILoss(K, TAU_S, num_cls_tokens=1, include_patch=False)
    loss.centers.center[0] = torch.randn(K)
    tau_t = 2.0  # a soft target, so that no probability underflows to 0 in the reference's log
    out = loss(x["s_cls"], x["t_cls"], tau_t)
    p = softmax((x["t_cls"].reshape(-1, K) - loss.centers["cls"]) / tau_t)
    ent = lambda q: -(q * torch.log(q)).sum(-1)  # noqa: E731
    assert torch.allclose(out["teacher_entropy"], ent(p).mean(), rtol=1e-5)
    assert torch.allclose(out["teacher_batch_entropy"], ent(p.mean(0)), rtol=1e-5)
    # uniform collapse: teacher logits equal to the center give ln K for both
    flat = loss(x["s_cls"], loss.centers["cls"].expand(2, B, K), TAU_T)
    assert math.isclose(float(flat["teacher_entropy"]), math.log(K), rel_tol=1e-6)
    assert math.isclose(float(flat["teacher_batch_entropy"]), math.log(K), rel_tol=1e-6)
    # one-dimension collapse: every row one-hot on the same class gives 0 for both
    peaked = torch.zeros(2, B, K)
    peaked[..., 3] = 100.0
    one_dim = loss(x["s_cls"], peaked + loss.centers["cls"], TAU_T)
    assert float(one_dim["teacher_entropy"]) < 1e-6 and float(one_dim["teacher_batch_entropy"]) < 1e-6
