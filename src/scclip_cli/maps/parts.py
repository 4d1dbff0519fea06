"""Running the independent parts of one image's post-processing at once, on the CPU's cores.

Post-processing is many small element-wise operations over an image's scores. Given several
intra-op threads, PyTorch splits every one of them and waits for all its threads at the end of
each: on two cores that wastes about a third of the CPU time. Splitting the work itself instead
(rows of the output, groups of queries) into one part per core, each run on a thread of its own
with one intra-op thread, keeps both cores busy with almost no waiting. The model's own threads
sleep meanwhile (post-processing runs between forward passes), so no core is asked to do two
things at once.

Parts write disjoint slices of shared tensors and use scratch buffers of their own (named by part
index), so the results do not depend on the number of parts or on which thread runs which part
(:mod:`scclip_cli.maps.postprocess` says how it keeps every bit). The canvas build gains little
from parts: its passes over the canvas are bound by memory bandwidth. docs/performance.md has the
measurements.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import pairwise
from typing import Protocol, TypeVar

T = TypeVar("T")

MAX_PARTS = 8
"""At most this many parts (and threads): each part holds its own scratch buffers (tens of MiB at
150 queries, see :mod:`scclip_cli.maps.postprocess`)."""
START_TIMEOUT = 60.0
"""Seconds to wait for the part threads to start before giving up (a bug, never user input)."""


class PartRunner(Protocol):
    """Runs ``count`` (or any number of) independent callables and returns their results in order."""

    count: int

    def run(self, parts: Sequence[Callable[[], T]]) -> list[T]: ...


class InOrder:
    """One part at a time, on the calling thread (GPUs, tests, single-threaded use)."""

    count = 1

    def run(self, parts: Sequence[Callable[[], T]]) -> list[T]:
        return [part() for part in parts]


IN_ORDER = InOrder()


def split_range(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into at most ``parts`` non-empty contiguous ranges of near-equal size."""
    size = stop - start
    parts = max(1, min(parts, size))
    bounds = [start + size * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in pairwise(bounds) if b > a]


class PartThreads:
    """``count`` threads, each with one intra-op thread, started on first use and kept.

    :meth:`run` hands each part to a free thread (under ``torch.inference_mode``, which is per
    thread), waits for all of them, and re-raises the first failure only once none is running, so a
    failed part never leaves another writing into buffers that the next image reuses.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.count = count
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0  # the process that started the pool: a forked child has none of its threads
        self._lock = threading.Lock()

    def _started(self) -> ThreadPoolExecutor:
        import torch

        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                callers_threads = torch.get_num_threads()
                pool = ThreadPoolExecutor(self.count, "scclip-part", initializer=_one_thread)
                # Start every thread now (each waits at the barrier until all are up), then give
                # threads that start later the caller's count again: torch.set_num_threads, called
                # on any thread, also sets the default of every thread started after it.
                barrier = threading.Barrier(self.count)
                started = [pool.submit(barrier.wait, START_TIMEOUT) for _ in range(self.count)]
                for future in started:
                    future.result()
                torch.set_num_threads(callers_threads)
                self._pool, self._pid = pool, os.getpid()
            return self._pool

    def run(self, parts: Sequence[Callable[[], T]]) -> list[T]:
        if len(parts) <= 1:
            return [part() for part in parts]
        pool = self._started()
        futures: list[Future[T]] = [pool.submit(_in_inference_mode, part) for part in parts]
        wait(futures)
        return [future.result() for future in futures]

    def close(self) -> None:
        """Stop the threads (they also stop with the process); :meth:`run` starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _one_thread() -> None:
    """Give the calling thread one intra-op thread, for good."""
    import torch

    # A thread takes torch's default thread count the first time it asks for it (or runs a
    # parallel operation), which would undo a set_num_threads made before: ask first.
    torch.get_num_threads()
    torch.set_num_threads(1)


def _in_inference_mode(part: Callable[[], T]) -> T:
    import torch

    with torch.inference_mode():
        return part()
