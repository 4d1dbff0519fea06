"""Test helper: run a block with a given number of torch intra-op threads."""

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """The calling thread's torch intra-op threads set to ``count`` for the block, then restored.

    Some element-wise kernels (``exp2``) round the last elements of each thread's share
    differently, so bit-for-bit comparisons run both sides with the same count; a Ray worker with
    one CPU reserved has one.
    """
    callers = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(callers)
