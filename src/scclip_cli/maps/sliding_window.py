"""Sliding-window geometry and overlap averaging (pure functions, no model).

Windows follow the reference: ``n = max(size - crop + stride - 1, 0) // stride + 1`` windows per
axis; window ``r`` spans ``[max(min(r·stride + crop, size) - crop, 0), min(r·stride + crop, size))``,
so the last window is flush with the border and an image smaller than the crop gets one window of
its own size.
"""

from __future__ import annotations

from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, NamedTuple

import torch

from scclip_cli.maps.parts import IN_ORDER, split_range
from scclip_cli.maps.workspace import Workspace

if TYPE_CHECKING:
    from scclip_cli.maps.parts import PartRunner


class Window(NamedTuple):
    """One crop in resized-image pixels: rows ``y1:y2``, columns ``x1:x2``."""

    y1: int
    y2: int
    x1: int
    x2: int


def pad_to_size(pixels: torch.Tensor, min_height: int, min_width: int) -> torch.Tensor:
    """``[C, h, w]`` → ``[C, max(h, min_height), max(w, min_width)]``, the image at the top left and
    its last row and column repeated into the new pixels (so the padding looks like its border, not
    like a flat colour the model would take for an object). Returns ``pixels`` itself when it is
    large enough."""
    import torch.nn.functional as F

    _, height, width = pixels.shape
    bottom, right = max(min_height - height, 0), max(min_width - width, 0)
    if not (bottom or right):
        return pixels
    return F.pad(pixels[None], (0, right, 0, bottom), mode="replicate")[0]


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


CHANNEL_GROUP = 128
"""Queries upsampled at once per window (bounds the ``[group, crop, crop]`` float32 buffer)."""


def channel_groups(channels: int, group: int = CHANNEL_GROUP) -> list[tuple[int, int]]:
    """``(start, stop)`` of the channel groups a window is upsampled in.

    Groups start at multiples of 64 and the last one has at least 64 channels (or is the only one):
    PyTorch's channels-last bilinear kernel handles whole SIMD vectors of channels, then a scalar
    tail, and switches kernels below 4 channels; so aligned groups give every channel the same
    arithmetic as one call on all channels.
    """
    if group % 64:
        raise ValueError(f"channel group must be a multiple of 64, got {group}")
    starts = list(range(0, channels, group))
    if len(starts) > 1 and channels - starts[-1] < 64:
        starts.pop()  # a short remainder joins the group before it
    return [(a, b) for a, b in zip(starts, [*starts[1:], channels], strict=True)]


def channel_parts(
    channels: int, parts: int, group: int = CHANNEL_GROUP
) -> list[list[tuple[int, int]]]:
    """The channel groups of each of up to ``parts`` parts of a canvas build.

    The channels are cut into aligned blocks of 64 (:func:`channel_groups` with 64), the blocks
    into contiguous runs of near-equal count, one per part, and each run as
    :func:`channel_groups` cuts all channels: every group starts at a multiple of 64 and the last
    one of all has at least 64 channels, so each part computes its channels exactly as one call
    on all channels would. One part gets the groups of :func:`channel_groups`.
    """
    blocks = channel_groups(channels, 64)
    plan = []
    for b0, b1 in split_range(0, len(blocks), parts):
        start, stop = blocks[b0][0], blocks[b1 - 1][1]
        plan.append([(start + a, start + b) for a, b in channel_groups(stop - start, group)])
    return plan


class WindowCanvas:
    """Accumulates per-window scores into an image-sized canvas and averages the overlaps.

    Windows are kept as given until the canvas is first read (:meth:`rows`, :meth:`average`); then
    the channels-last ``[H, W, Q]`` float32 sum is built once, window by window in the order they
    were added, and divided by the coverage. So an image waiting for the rest of its crops holds
    only its windows' patch scores (``[grid_h, grid_w, Q]`` each), and at most one canvas at a time
    exists when images are finished one after another.

    Patch scores (:meth:`add_patches`) are upsampled to their window by the kernel of
    ``F.interpolate(mode="bilinear", align_corners=False)`` on a channels-last view, as the
    reference pipeline does, in groups of queries (:func:`channel_groups`), so the sum is the same
    bit for bit.
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        device: torch.device,
        workspace: Workspace | None = None,
    ) -> None:
        self.channels = channels
        self.height = height
        self.width = width
        self.device = device
        self.workspace = workspace or Workspace()
        """Where the canvas and upsampling buffers come from: a shared one reuses them from one
        image to the next; by default the canvas's own."""
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

    def added_patches(self) -> tuple[list[Window], list[torch.Tensor]] | None:
        """The windows and their ``[gh, gw, Q]`` patch scores in the order added, or ``None`` when
        the canvas was read already or holds pixel scores (:meth:`add`); see
        :meth:`~scclip_cli.maps.window_resize.WindowPatches.from_canvas`."""
        if self._average is not None or not all(is_patches for _, _, is_patches in self._windows):
            return None
        return [w for w, _, _ in self._windows], [s for _, s, _ in self._windows]

    def build(self, runner: PartRunner | None = None) -> None:
        """Build the averaged canvas now (else on the first read), in parts of channels run by
        ``runner`` (:mod:`scclip_cli.maps.parts`; by default one after another)."""
        if self._average is None:
            self._average = self._build(runner or IN_ORDER)

    def _cells(self) -> tuple[list[list[tuple[Window, bool]]], list[tuple[Window, int]]]:
        """The canvas cut along every window edge into cells that each window covers wholly or
        not at all: for each window, its cells and whether it is the first to cover each; and
        every cell with the number of windows covering it."""
        ys = sorted({y for (y1, y2, _, _), _, _ in self._windows for y in (y1, y2)})
        xs = sorted({x for (_, _, x1, x2), _, _ in self._windows for x in (x1, x2)})
        grid = [Window(ya, yb, xa, xb) for ya, yb in pairwise(ys) for xa, xb in pairwise(xs)]
        seen: set[Window] = set()
        per_window = []
        for (y1, y2, x1, x2), _, _ in self._windows:
            inside = [c for c in grid if y1 <= c.y1 and c.y2 <= y2 and x1 <= c.x1 and c.x2 <= x2]
            per_window.append([(cell, cell not in seen) for cell in inside])
            seen.update(inside)
        counts = self.count[[c.y1 for c in grid], [c.x1 for c in grid]].tolist() if grid else []
        return per_window, [(cell, int(n)) for cell, n in zip(grid, counts, strict=True)]

    def _build(self, runner: PartRunner) -> torch.Tensor:
        if bool((self.count == 0).any()):
            raise RuntimeError("windows do not cover the image")  # a bug, never user input
        shape = (self.height, self.width, self.channels)
        total = self.workspace.empty("canvas", shape, device=self.device)
        window_pixels = max((y2 - y1) * (x2 - x1) for (y1, y2, x1, x2), _, _ in self._windows)
        # Each cell takes its first window's scores as they are (no zeroed canvas to add them to),
        # then adds the others in window order, then is divided by its coverage: the same bits as
        # zeros plus every window, divided by the count (a cell covered once is left as it is;
        # dividing by 2, 4 or 8 is multiplying by 0.5, 0.25 or 0.125, both exact scalings).
        window_cells, cells = self._cells()

        def build_channels(part: int, groups: list[tuple[int, int]]) -> None:
            """Channels ``groups[0][0]:groups[-1][1]`` of the canvas, window after window."""
            c0, c1 = groups[0][0], groups[-1][1]
            widest = max(b - a for a, b in groups)
            buffer = self.workspace.empty(
                f"upsampled:{part}", (widest * window_pixels,), device=self.device
            )
            for ((y1, y2, x1, x2), scores, is_patches), covered in zip(
                self._windows, window_cells, strict=True
            ):
                size = (y2 - y1, x2 - x1)
                for a, b in [(c0, c1)] if not is_patches else groups:
                    if is_patches:
                        # F.interpolate's own kernel on a channels-last [1, Q', gh, gw] input (as
                        # the reference's), written straight into a channels-last buffer
                        out = buffer[: (b - a) * size[0] * size[1]].view(1, *size, b - a)
                        out = out.permute(0, 3, 1, 2)
                        group = scores[:, :, a:b].contiguous().permute(2, 0, 1)[None]
                        torch.ops.aten.upsample_bilinear2d.out(
                            group, list(size), False, None, None, out=out
                        )
                        values = out[0].permute(1, 2, 0)  # [h, w, Q']
                    else:
                        values = scores[a:b].permute(1, 2, 0)
                    for (ya, yb, xa, xb), first in covered:
                        target = total[ya:yb, xa:xb, a:b]
                        source = values[ya - y1 : yb - y1, xa - x1 : xb - x1]
                        if first:
                            target.copy_(source)
                        else:
                            target += source
            for (ya, yb, xa, xb), coverage in cells:
                target = total[ya:yb, xa:xb, c0:c1]
                if coverage in (2, 4, 8):
                    target.mul_(1 / coverage)
                elif coverage != 1:
                    target.div_(self.count[ya:yb, xa:xb, None])

        plan = channel_parts(self.channels, runner.count)
        runner.run([partial(build_channels, i, groups) for i, groups in enumerate(plan)])
        self._windows.clear()
        return total

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Averaged scores of rows ``start:stop``: ``[stop - start, W, Q]`` float32, contiguous."""
        self.build()
        assert self._average is not None
        return self._average[start:stop]

    def average(self) -> torch.Tensor:
        """``[Q, H, W]`` mean score over the windows covering each pixel (a channels-last view)."""
        return self.rows(0, self.height).permute(2, 0, 1)
