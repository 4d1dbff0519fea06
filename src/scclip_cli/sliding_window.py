"""Sliding-window geometry and overlap averaging (pure functions, no model).

Windows follow the reference: ``n = max(size - crop + stride - 1, 0) // stride + 1`` windows per
axis; window ``r`` spans ``[max(min(r·stride + crop, size) - crop, 0), min(r·stride + crop, size))``,
so the last window is flush with the border and an image smaller than the crop gets one window of
its own size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


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


class WindowCanvas:
    """Accumulates per-window scores into an image-sized canvas and averages the overlaps.

    Scores are ``[Q, h, w]`` for each window; the canvas is ``[Q, H, W]`` float32 on ``device``.
    """

    def __init__(self, channels: int, height: int, width: int, device: torch.device) -> None:
        self.sum = torch.zeros(channels, height, width, dtype=torch.float32, device=device)
        self.count = torch.zeros(height, width, dtype=torch.float32, device=device)

    def add(self, window: Window, scores: torch.Tensor) -> None:
        """Add ``[Q, y2 - y1, x2 - x1]`` scores of one window."""
        y1, y2, x1, x2 = window
        self.sum[:, y1:y2, x1:x2] += scores
        self.count[y1:y2, x1:x2] += 1

    def average(self) -> torch.Tensor:
        """``[Q, H, W]`` mean score over the windows covering each pixel."""
        if bool((self.count == 0).any()):
            raise RuntimeError("windows do not cover the image")  # a bug, never user input
        return self.sum / self.count


def patch_scores_to_pixels(scores: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear (align_corners False) upsampling of ``[B, Q, grid_h, grid_w]`` to ``[B, Q, height, width]``."""
    return F.interpolate(scores, size=(height, width), mode="bilinear", align_corners=False)
