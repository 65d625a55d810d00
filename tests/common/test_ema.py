"""EMA teacher update and momentum schedules."""
import copy
import math

import pytest
import torch
from torch import nn

from common.ema import ema_update, momentum_schedule


def _pair():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.data.normal_()
    student(torch.randn(16, 4))  # moves the student's BatchNorm running statistics
    return teacher, student


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_momentum_one_keeps_teacher_parameters_and_copies_buffers():
    teacher, student = _pair()
    before = dict(teacher.named_parameters())
    before = {k: v.clone() for k, v in before.items()}
    ema_update(teacher, student, 1.0)
    for name, p in teacher.named_parameters():
        assert torch.equal(p, before[name])
    for (name, t), s in zip(teacher.named_buffers(), student.buffers()):
        assert torch.equal(t, s), name


def test_momentum_zero_copies_the_student():
    teacher, student = _pair()
    ema_update(teacher, student, 0.0)
    for (name, t), s in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert torch.equal(t, s), name


def test_ema_formula_and_no_gradient_to_student():
    teacher, student = _pair()
    t0, s0 = _state(teacher), _state(student)
    ema_update(teacher, student, 0.9)
    for name, p in teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * t0[name] + 0.1 * s0[name])
        assert p.grad is None
    assert all(torch.equal(v, s0[k]) for k, v in student.state_dict().items())


def test_mismatched_modules_and_bad_momentum_are_rejected():
    teacher, student = _pair()
    with pytest.raises(ValueError, match="only in student"):
        ema_update(nn.Sequential(nn.Linear(4, 8)), student, 0.5)
    with pytest.raises(ValueError, match="teacher shape"):
        ema_update(nn.Linear(4, 3), nn.Linear(4, 2), 0.5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        ema_update(teacher, student, 1.5)


def test_momentum_schedules():
    total, m0 = 100, 0.996
    cosine = [momentum_schedule(s, total, m0) for s in range(total + 1)]
    # MoCo v3 / BYOL: m = 1 - (1 - m0) (1 + cos(pi k / K)) / 2
    assert cosine == pytest.approx([1 - (1 - m0) * (1 + math.cos(math.pi * s / total)) / 2 for s in range(total)] + [1.0])
    assert cosine[0] == m0 and all(b >= a for a, b in zip(cosine, cosine[1:]))
    linear = [momentum_schedule(s, total, m0, kind="linear") for s in range(total + 1)]
    assert linear == pytest.approx([m0 + s * (1 - m0) / total for s in range(total + 1)])
    with pytest.raises(ValueError, match="'cosine' or 'linear'"):
        momentum_schedule(0, total, m0, kind="step")
