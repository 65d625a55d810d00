"""Per-iteration schedules against the reference formulas (DINO arrays, I-JEPA schedulers)."""
import math

import numpy as np
import pytest

from common.schedules import (
    constant_schedule, cosine_schedule, get_schedule, ijepa_cosine_wd, ijepa_warmup_cosine, linear_schedule,
)


def dino_cosine_array(base, final, total, warmup, start):
    """DINO utils.cosine_scheduler, written from its definition."""
    warm = np.linspace(start, base, warmup)
    iters = np.arange(total - warmup)
    decay = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate([warm, decay])


@pytest.mark.parametrize("total,warmup,start", [(100, 10, 0.0), (57, 0, 0.0), (40, 1, 1e-4), (30, 30, 0.2)])
def test_cosine_equals_dino_array(total, warmup, start):
    expected = dino_cosine_array(1e-3, 1e-6, total, warmup, start)
    got = [cosine_schedule(s, total, 1e-3, 1e-6, warmup, start) for s in range(total)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_cosine_end_points_monotone_and_holds_after_end():
    total, warmup = 200, 20
    values = [cosine_schedule(s, total, 2.0, 0.1, warmup, 0.0) for s in range(total + 5)]
    assert values[0] == 0.0 and values[warmup - 1] == pytest.approx(2.0) and values[warmup] == 2.0
    warm, decay = np.diff(values[:warmup]), np.diff(values[warmup:total])
    assert (warm > 0).all() and np.allclose(warm, warm[0])  # linear warmup
    assert (decay < 0).all()
    assert values[total - 1] == pytest.approx(0.1, abs=1e-3) and values[total:] == [0.1] * 5
    # the midpoint of the decay sits halfway between base and final
    assert cosine_schedule(warmup + (total - warmup) // 2, total, 2.0, 0.1, warmup) == pytest.approx(1.05)


def test_increasing_cosine_for_weight_decay():
    values = [cosine_schedule(s, 50, 0.04, 0.4) for s in range(50)]
    assert values[0] == pytest.approx(0.04) and (np.diff(values) > 0).all() and values[-1] < 0.4


def test_linear_and_constant():
    assert [linear_schedule(s, 4, 0.996, 1.0) for s in range(6)] == pytest.approx(
        [0.996, 0.997, 0.998, 0.999, 1.0, 1.0])
    assert linear_schedule(5, 10, 1.0, 0.0, warmup_steps=5, start_warmup_value=0.0) == 1.0
    assert [constant_schedule(s, 10, 0.5, None, 2, 0.1) for s in range(4)] == [0.1, 0.5, 0.5, 0.5]
    assert get_schedule("linear") is linear_schedule


def test_ijepa_warmup_cosine_matches_the_stateful_scheduler():
    """I-JEPA increments its step before computing, so iteration i sees step i + 1."""
    start, ref, final, warmup, total = 2e-4, 1e-3, 1e-6, 40, 300
    stepped = 0
    for i in range(total):
        stepped += 1
        if stepped < warmup:
            expected = start + stepped / warmup * (ref - start)
        else:
            progress = (stepped - warmup) / (total - warmup)
            expected = max(final, final + (ref - final) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert ijepa_warmup_cosine(i, total, start, ref, final, warmup) == pytest.approx(expected, rel=1e-12)
    assert ijepa_warmup_cosine(total + 10, total, start, ref, final, warmup) == final


def test_ijepa_cosine_wd_ramp():
    total = 120
    values = [ijepa_cosine_wd(i, total, 0.04, 0.4) for i in range(total)]
    expected = [0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * (i + 1) / total)) for i in range(total)]
    assert values == pytest.approx(expected, rel=1e-12)
    assert (np.diff(values) > 0).all() and values[-1] == pytest.approx(0.4)


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="warmup_steps must be in 0..total_steps=10"):
        cosine_schedule(0, 10, 1.0, 0.0, warmup_steps=11)
    with pytest.raises(ValueError, match="total_steps must be positive"):
        linear_schedule(0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"\['constant', 'cosine', 'linear'\]"):
        get_schedule("step")
