"""Sliding-window geometry and overlap averaging (pure functions, no model).

Windows follow the reference: ``n = max(size - crop + stride - 1, 0) // stride + 1`` windows per
axis; window ``r`` spans ``[max(min(r·stride + crop, size) - crop, 0), min(r·stride + crop, size))``,
so the last window is flush with the border and an image smaller than the crop gets one window of
its own size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Window(NamedTuple):
    """One crop in resized-image pixels: rows ``y1:y2``, columns ``x1:x2``."""

    y1: int
    y2: int
    x1: int
    x2: int


def axis_spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of every window along one axis of ``size`` pixels."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for r in range(count):
        end = min(r * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def windows(height: int, width: int, crop: int, stride: int) -> list[Window]:
    """All windows of a ``height × width`` image, rows first (the reference's order)."""
    return [
        Window(y1, y2, x1, x2)
        for y1, y2 in axis_spans(height, crop, stride)
        for x1, x2 in axis_spans(width, crop, stride)
    ]


class BilinearTaps(NamedTuple):
    """PyTorch's bilinear taps (``align_corners=False``) along one axis: output position ``i`` reads
    source ``lo[i]`` and ``hi[i]`` with weights ``w_lo[i]`` and ``w_hi[i]``."""

    lo: torch.Tensor  # [out] int64
    hi: torch.Tensor  # [out] int64, lo + 1 clamped to in - 1
    w_lo: torch.Tensor  # [out] float32, 1 - w_hi
    w_hi: torch.Tensor  # [out] float32, in [0, 1]


def bilinear_taps(out_size: int, in_size: int, device: torch.device | None = None) -> BilinearTaps:
    """Source indices and weights of ``interpolate(mode="bilinear", align_corners=False)``.

    Source position ``(i + 0.5) · in / out − 0.5`` clamped at 0, as PyTorch's CPU kernel computes it:
    the scale ``in / out`` in float32, then one fused multiply-add (emulated exactly in float64).
    """
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    dst = torch.arange(out_size, dtype=torch.float64) + 0.5
    src = (scale.double() * dst - 0.5).float().clamp_min(0.0)
    lo = src.to(torch.long)
    hi = torch.clamp(lo + 1, max=in_size - 1)
    w_hi = src - lo.to(torch.float32)
    return BilinearTaps(*(t.to(device) for t in (lo, hi, 1 - w_hi, w_hi)))


class WindowCanvas:
    """Accumulates per-window scores into an image-sized canvas and averages the overlaps.

    Windows are kept as given until the canvas is first read (:meth:`rows`, :meth:`average`); then
    the channels-last ``[H, W, Q]`` float32 sum is built once, window by window in the order they
    were added, and divided by the coverage. So an image waiting for the rest of its crops holds
    only its windows' patch scores (``[grid_h, grid_w, Q]`` each), and at most one canvas at a time
    exists when images are finished one after another.

    Patch scores (:meth:`add_patches`) are upsampled to their window by the kernel of
    ``F.interpolate(mode="bilinear", align_corners=False)`` on a channels-last view, as the
    reference pipeline does, so the sum is the same bit for bit.
    """

    def __init__(self, channels: int, height: int, width: int, device: torch.device) -> None:
        self.channels = channels
        self.height = height
        self.width = width
        self.device = device
        self.count = torch.zeros(height, width, dtype=torch.float32, device=device)
        """``[H, W]`` windows covering each pixel."""
        self._windows: list[tuple[Window, torch.Tensor, bool]] = []  # (window, scores, is_patches)
        self._average: torch.Tensor | None = None  # [H, W, Q] once built

    def add(self, window: Window, scores: torch.Tensor) -> None:
        """Add ``[Q, y2 - y1, x2 - x1]`` pixel scores of one window."""
        self._add(window, scores, is_patches=False)

    def add_patches(self, window: Window, patch_scores: torch.Tensor) -> None:
        """Add ``[grid_h, grid_w, Q]`` patch scores of one window (upsampled to the window)."""
        self._add(window, patch_scores, is_patches=True)

    def _add(self, window: Window, scores: torch.Tensor, is_patches: bool) -> None:
        if self._average is not None:
            raise RuntimeError("the canvas was already read")  # a bug, never user input
        y1, y2, x1, x2 = window
        self._windows.append((window, scores, is_patches))
        self.count[y1:y2, x1:x2] += 1

    def _build(self) -> torch.Tensor:
        if bool((self.count == 0).any()):
            raise RuntimeError("windows do not cover the image")  # a bug, never user input
        total = torch.zeros(
            self.height, self.width, self.channels, dtype=torch.float32, device=self.device
        )
        upsampled: torch.Tensor | None = None  # reused [1, Q, h, w] channels-last buffer
        for (y1, y2, x1, x2), scores, is_patches in self._windows:
            if is_patches:
                size = (y2 - y1, x2 - x1)
                if upsampled is None or tuple(upsampled.shape[-2:]) != size:
                    shape = (1, self.channels, *size)
                    layout = torch.channels_last
                    upsampled = torch.empty(shape, device=self.device, memory_format=layout)
                # F.interpolate's own kernel, written straight into a channels-last buffer (no
                # transposing copies): [grid_h, grid_w, Q] seen as a channels-last [1, Q, gh, gw].
                torch.ops.aten.upsample_bilinear2d.out(
                    scores.permute(2, 0, 1)[None], list(size), False, None, None, out=upsampled
                )
                scores = upsampled[0]  # [Q, y2 - y1, x2 - x1]
            total[y1:y2, x1:x2] += scores.permute(1, 2, 0)
        self._windows.clear()
        return total.div_(self.count[:, :, None])

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Averaged scores of rows ``start:stop``: ``[stop - start, W, Q]`` float32, contiguous."""
        if self._average is None:
            self._average = self._build()
        return self._average[start:stop]

    def average(self) -> torch.Tensor:
        """``[Q, H, W]`` mean score over the windows covering each pixel (a channels-last view)."""
        return self.rows(0, self.height).permute(2, 0, 1)
