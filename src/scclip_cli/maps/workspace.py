"""Scratch tensors reused from one image to the next.

Post-processing an image needs a few large temporary tensors (the ``[h, w, Q]`` window canvas: 86
MiB for 150 queries at 336 × 448; upsampling and interpolation buffers of tens of MiB). Allocated
afresh per image, each is returned to the operating system when freed and faulted in again, page by
page, the next time, which costs a noticeable share of the post-processing time on the CPU
(docs/performance.md). A :class:`Workspace`
keeps them, one set per thread (two threads never share a buffer) or, for a ``Segmenter``, one set
for all its threads (an image at a time, behind a lock; the parts of an image that run at once ask
for buffers of their own names), and replaces a buffer when the shape it is asked for changes, so
it holds at most one image's worth.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import torch

MAX_BUFFERS = 64
"""Buffers kept per set; the least recently used one goes first. Post-processing from window
patches uses one and five per part (:mod:`scclip_cli.maps.parts`), the canvas route one and seven per
part, so every buffer of either is reused with up to eight parts."""


class Workspace:
    """Named scratch tensors, reused while the name, shape, dtype, device and layout stay the
    same. Their content is undefined when handed out.

    ``per_thread=False``: one set for all threads; threads that use it at the same time must ask
    for different names.
    """

    def __init__(self, per_thread: bool = True) -> None:
        self._local: Any = threading.local() if per_thread else SimpleNamespace()
        self._lock = threading.Lock()

    def empty(
        self,
        name: str,
        shape: tuple[int, ...],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> torch.Tensor:
        """An uninitialised tensor for ``name``: the one handed out last time when it fits.

        The caller must be done with the previous tensor of that name (buffers of one thread are
        used one image at a time).
        """
        device = torch.device(device)
        key = (name, tuple(shape), dtype, device, channels_last)
        with self._lock:
            buffers: dict[tuple[object, ...], torch.Tensor] = self._local.__dict__.setdefault(
                "buffers", {}
            )
            tensor = buffers.pop(key, None)
            if tensor is None:
                for old in [k for k in buffers if k[0] == name]:
                    del buffers[old]  # another shape of the same buffer: free it first
        if tensor is None:
            layout = torch.channels_last if channels_last else torch.contiguous_format
            tensor = torch.empty(shape, dtype=dtype, device=device, memory_format=layout)
        with self._lock:
            buffers[key] = tensor  # most recently used last
            while len(buffers) > MAX_BUFFERS:
                del buffers[next(iter(buffers))]
        return tensor

    def held(self) -> list[torch.Tensor]:
        """This thread's buffers (all of them when shared), least recently used first."""
        with self._lock:
            return list(self._local.__dict__.get("buffers", {}).values())

    def clear(self) -> None:
        """Free this thread's buffers (all of them when shared)."""
        with self._lock:
            self._local.__dict__.pop("buffers", None)
