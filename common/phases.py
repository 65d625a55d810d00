"""Wall time per phase of a loop: where a training step's seconds go (`common.train`).

``PhaseTimer`` measures with ``time.perf_counter`` only. On CPU that is the work itself. On
CUDA, kernels run asynchronously: a phase ends once its Python code has queued its kernels,
and their time lands in whichever later phase first waits for them (a ``.item()``, a
``float()``, a copy to the host). No device synchronisation is added here, as it would slow
every step; an exact CUDA breakdown needs a ``torch.cuda.synchronize()`` at each phase end.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


class PhaseTimer:
    """Exclusive wall seconds per named phase.

    ``with timer.phase("step"): ...`` adds the block's seconds to ``"step"``; repeated blocks
    accumulate. A phase opened inside another takes its seconds from the outer one (each
    second counts once, in the innermost open phase), so the phases never add up to more
    than the wall time since the timer was made. ``timer.iterate("data", loader)`` times the
    start of an iteration, each ``next`` and its end (for a DataLoader: worker start-up, the
    waits for batches, worker shut-down).
    """

    def __init__(self, phases: Iterable[str] = (), clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds: dict[str, float] = {name: 0.0 for name in phases}
        self.started = self._since = clock()
        self._open: list[str] = []
        self._lap = (self.started, dict(self.seconds))

    def _charge(self) -> float:
        """Give the seconds since the last change to the innermost open phase; returns now."""
        now = self.clock()
        if self._open:
            name = self._open[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._since
        self._since = now
        return now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._charge()
        self._open.append(name)
        try:
            yield
        finally:
            self._charge()
            self._open.pop()

    def iterate(self, name: str, iterable: Iterable[T]) -> Iterator[T]:
        """The items of ``iterable``; getting each one (and starting and ending) is ``name``."""
        with self.phase(name):
            iterator = iter(iterable)
        del iterable  # `iterator` holds the only reference here (it may be `iterable` itself)
        try:
            while True:
                with self.phase(name):
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                yield item
        finally:  # also when the caller breaks out of its loop, which closes this generator
            with self.phase(name):
                del iterator  # a DataLoader's iterator shuts its workers down here

    def totals(self) -> dict[str, float]:
        """Seconds per phase so far, and ``wall``: the seconds since the timer was made."""
        now = self._charge()
        return {"wall": now - self.started, **self.seconds}

    def lap(self) -> dict[str, float]:
        """As ``totals``, but since the previous ``lap`` (or since the timer was made)."""
        now = self._charge()
        before_time, before = self._lap
        self._lap = (now, dict(self.seconds))
        return {"wall": now - before_time, **{k: v - before.get(k, 0.0) for k, v in self.seconds.items()}}
