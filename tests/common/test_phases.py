"""PhaseTimer: exclusive wall seconds per phase of the training loop (common.phases)."""
from __future__ import annotations

import time

import pytest

from common.phases import PhaseTimer


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_repeated_phases_accumulate_and_nested_ones_count_each_second_once():
    clock = FakeClock()
    timer = PhaseTimer(("data", "step", "ckpt"), clock=clock)
    clock.advance(1)  # outside any phase
    with timer.phase("step"):
        clock.advance(2)
        with timer.phase("ckpt"):  # taken from "step"
            clock.advance(3)
            with timer.phase("ckpt"):  # the same phase nested: still counted once
                clock.advance(4)
        clock.advance(5)
    with timer.phase("step"):
        clock.advance(6)
    assert timer.totals() == {"wall": 21, "data": 0, "step": 13, "ckpt": 7}


def test_a_phase_left_by_an_exception_is_counted():
    clock = FakeClock()
    timer = PhaseTimer(clock=clock)
    with pytest.raises(RuntimeError), timer.phase("step"):
        clock.advance(2)
        raise RuntimeError
    clock.advance(1)
    assert timer.totals() == {"wall": 3, "step": 2}


def test_laps_split_the_totals():
    clock = FakeClock()
    timer = PhaseTimer(("step",), clock=clock)
    with timer.phase("step"):
        clock.advance(2)
    clock.advance(1)
    assert timer.lap() == {"wall": 3, "step": 2}
    with timer.phase("log"):
        clock.advance(4)
        assert timer.lap() == {"wall": 4, "step": 0, "log": 4}  # the open phase up to now
        clock.advance(1)
    assert timer.lap() == {"wall": 1, "step": 0, "log": 1}
    assert timer.totals() == {"wall": 8, "step": 2, "log": 5}


def test_iterate_times_the_start_each_item_and_the_end_even_after_a_break():
    clock = FakeClock()
    timer = PhaseTimer(("data", "step"), clock=clock)
    closed = []

    def loader():
        clock.advance(10)  # worker start-up (the first next() of a generator)
        try:
            for i in range(5):
                clock.advance(1)
                yield i
        finally:
            clock.advance(100)  # worker shut-down
            closed.append(True)

    seen = []
    for item in timer.iterate("data", loader()):
        with timer.phase("step"):
            clock.advance(2)
        seen.append(item)
        if item == 2:
            break
    assert seen == [0, 1, 2] and closed == [True]
    assert timer.totals() == {"wall": 119, "data": 113, "step": 6}


def test_phases_add_up_to_no_more_than_the_wall_time_around_them():
    def work(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    start = time.perf_counter()
    timer = PhaseTimer(("data", "step"))
    for _ in range(3):
        for _ in timer.iterate("data", range(2)):
            with timer.phase("step"):
                work(0.002)
                with timer.phase("ckpt"):
                    work(0.001)
        work(0.001)
    totals = timer.totals()
    wall = time.perf_counter() - start
    phases = sum(v for k, v in totals.items() if k != "wall")
    assert totals["step"] >= 6 * 0.002 and totals["ckpt"] >= 6 * 0.001 and totals["data"] > 0
    assert phases <= totals["wall"] <= wall
