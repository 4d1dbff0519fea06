"""From averaged window scores to labels, tile by tile at the original image size.

The reference upsamples the whole ``[Q, H, W]`` score tensor to the original size and then takes the
argmax. Here each tile of output pixels is upsampled, turned into class probabilities and reduced to
a label and a confidence before the next, so memory grows with ``Q × tile`` rather than ``Q × H × W``.

Tiles come from a :class:`Resizer`: the windows' patch scores go straight to the original size when
they form a full grid (:mod:`scclip_cli.maps.window_resize`, the segmenter's usual case, several times
cheaper); scores at the resized size (a built :class:`~scclip_cli.maps.sliding_window.WindowCanvas`,
PAMR's output, any ``[Q, h, w]`` tensor) are read a band of rows at a time by
:class:`BilinearResizer`. The notes below are about the latter; the steps after the tiles are shared.

The bilinear taps are PyTorch's ``interpolate(mode="bilinear", align_corners=False)``: source
position ``(dst + 0.5) · in / out − 0.5`` clamped at 0, and each output is
``w_y0 · (w_x0 · a + w_x1 · b) + w_y1 · (w_x0 · c + w_x1 · d)`` (columns first, then rows).

Post-processing rules (the reference's): scores × logit scale, softmax over queries, max over each
class's synonyms; the area rule zeroes classes 1.. whose predicted area is at most
``area_threshold`` × the foreground area, before the argmax; pixels whose best class probability is
below ``prob_threshold`` become class 0.

How it is made fast (the result is the reference's up to float rounding):

* Scores are channels-last (``[h, w, Q]``, queries contiguous), so every gather moves whole query
  vectors and the softmax runs along contiguous memory.
* The column pass runs once per chunk of source rows (``h × W × Q`` work, not ``H × W × Q``), with
  PyTorch's own channels-last bilinear kernel; only the row blend, the softmax and the reductions
  run at the output size, on tiles small enough to stay near the CPU's caches
  (:data:`CPU_TILE_ELEMENTS`), in reused buffers.
* The confidence needs no full softmax: with the best query known, it is
  ``1 / sum_q 2^(l_q − l_best)`` for logits ``l`` in base 2 (``2^x`` costs about half of ``e^x``).
* Where every score's magnitude is known to be small enough (window patch scores), the
  confidence is ``2^l_best / sum_q 2^l_q`` with no shift by ``l_best`` (nothing can overflow):
  one pass less.
* Each step runs in parts (bands of rows, runs of whole chunks) given to a
  :class:`~scclip_cli.maps.parts.PartRunner`; chunks and tiles are the same however the work is split,
  so the parts change no bit of the result (at the same intra-op thread count: PyTorch's
  element-wise ``exp2`` rounds the last elements of each thread's share differently).
* Queries are put in class order first: the first best query of a pixel then lies in the
  reference's best class (the smallest index among equal maxima), so the max over synonyms needs no
  per-class reduction.
* The best query is decided at the source resolution wherever it can be: an output pixel whose
  four bilinear source pixels share their first best query ``q`` has ``q`` too (its score for ``q``
  blends the largest source scores with non-negative weights, and rounding keeps that order), so
  only pixels in source cells that straddle a boundary search all queries (with vectorised
  max-reductions rather than ``torch.max(dim)``, several times slower on the CPU). Ties between
  queries equal to the last bit may resolve differently there than in the reference.
* The interpolation is ``F.interpolate``'s arithmetic (``fma(a, w_lo, b · w_hi)`` per axis, as its
  CPU kernel computes a contiguous map), except that the logit scale (and ``log2 e``) is folded
  into the row weights; the softmax sums in another order. Both differ from the reference in the
  last float bits only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch

from scclip_cli.config import ProtocolConfig
from scclip_cli.files.mask_io import ClassTotals, statistics_grid, statistics_step
from scclip_cli.maps.parts import IN_ORDER, PartRunner, split_range
from scclip_cli.maps.sliding_window import BilinearTaps, WindowCanvas, bilinear_taps
from scclip_cli.maps.window_resize import (
    WindowPatches,
    WindowResizer,
    fits,
    shared_cell_best,
    tile_boxes,
)
from scclip_cli.maps.workspace import Workspace

TILE_ELEMENTS = 1 << 24
"""Upper bound on ``Q × tile pixels`` materialised at once on a GPU (64 MiB of float32)."""
CPU_TILE_ELEMENTS = 1 << 20
"""The bound on the CPU (4 MiB of float32): small enough for a tile to stay in the CPU's caches,
large enough that the per-operation overhead (and the wait for every OpenMP thread) stays small;
the optimum is broad (docs/performance.md)."""
LOG2_E = math.log2(math.e)
"""Logits are scaled by this too and exponentiated in base 2 (``torch.exp2`` is cheaper than
``torch.exp`` on the CPU); ``softmax(x) = 2^(x·log2 e) / sum``."""
FLOOR_MARGIN = 1e-3
"""Without the confidence map, a pixel's label skips the probability threshold's test only where
its confidence floor is at least ``threshold × (1 + FLOOR_MARGIN)``: the computed probabilities
differ from the exact ones by a few units in the last place, far less than this."""
CHUNK_TILES = 2
"""Column-interpolated source rows kept at once: about this many tiles' worth (at least 2 rows).
Parts take whole chunks, so small chunks balance them better (larger chunks gained nothing on
one thread)."""


def default_tile_elements(device: torch.device) -> int:
    """:data:`CPU_TILE_ELEMENTS` on the CPU, :data:`TILE_ELEMENTS` elsewhere (fewer kernel launches)."""
    return CPU_TILE_ELEMENTS if device.type == "cpu" else TILE_ELEMENTS


class ScoreRows(Protocol):
    """Scores at the resized size, ``Q × height × width``, read a band of rows at a time."""

    channels: int
    height: int
    width: int
    device: torch.device

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a contiguous ``[stop - start, width, channels]`` float32 tensor."""
        ...


class TensorRows:
    """A ``[Q, h, w]`` tensor as :class:`ScoreRows` (one channels-last copy unless it is a
    channels-last view already)."""

    def __init__(self, scores: torch.Tensor) -> None:
        self.source = scores.permute(1, 2, 0).contiguous()  # [h, w, Q]
        self.height, self.width, self.channels = self.source.shape
        self.device = scores.device

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.source[start:stop]


class _Reordered:
    """:class:`ScoreRows` with the channels in the given order."""

    def __init__(self, source: ScoreRows, order: torch.Tensor) -> None:
        self.source, self.order = source, order
        self.channels, self.height, self.width = source.channels, source.height, source.width
        self.device = source.device

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.source.rows(start, stop).index_select(2, self.order)


@dataclass(frozen=True)
class _Taps:
    """:class:`~scclip_cli.maps.sliding_window.BilinearTaps` with the indices also as Python lists."""

    taps: BilinearTaps
    lo_list: list[int]
    hi_list: list[int]


def _taps(out_size: int, in_size: int, device: torch.device) -> _Taps:
    taps = bilinear_taps(out_size, in_size)  # on the CPU for the lists, then moved
    return _Taps(BilinearTaps(*(t.to(device) for t in taps)), taps.lo.tolist(), taps.hi.tolist())


class BilinearResizer:
    """Bilinear upsampling of :class:`ScoreRows` (``[h, w, C]``) to ``[H, W, C]``, tile by tile.

    :meth:`tiles` yields the output in tiles, each row-blended from a chunk of column-interpolated
    source rows that is computed once and shared by the tiles below it.
    """

    def __init__(
        self,
        source: ScoreRows,
        out_height: int,
        out_width: int,
        tile_elements: int,
        workspace: Workspace | None = None,
    ) -> None:
        self.source = source
        self.workspace = workspace or Workspace()
        self.out_height, self.out_width = out_height, out_width
        self._rows = _taps(out_height, source.height, source.device)
        self._cols = _taps(out_width, source.width, source.device)
        self.row_taps, self.col_taps = self._rows.taps, self._cols.taps
        """The source rows and columns each output row and column is blended from."""
        row = out_width * source.channels
        if row <= tile_elements:  # whole output rows per tile
            self.tile_h, self.tile_w = max(1, tile_elements // row), out_width
        else:
            self.tile_h, self.tile_w = 1, max(1, tile_elements // source.channels)
        self.chunk_rows = min(source.height, max(2, CHUNK_TILES * tile_elements // row))
        self.channels, self.device = source.channels, source.device
        self.tile_elements = tile_elements
        self.bound: float | None = None
        """Unknown (finding it would take a pass over the scores)."""
        self._cell_best: torch.Tensor | None = None

    def prepare(self, runner: PartRunner = IN_ORDER) -> None:
        """Find each source pixel's first best query (:func:`source_best_query`, in parts run by
        ``runner``) for :meth:`known_best`."""
        best = source_best_query(self.source, self.tile_elements, runner)
        self._cell_best = shared_cell_best(best)

    def known_best(self, rows: slice, cols: slice) -> torch.Tensor:
        """``[n]`` int64: the best query of each pixel of the tile ``[rows, cols]`` (row-major)
        where the four source pixels it is blended from share their first best query, else -1
        (:meth:`prepare` first).

        Such a pixel's score for that query blends the largest source scores with non-negative
        weights, and rounding keeps that order, so it is the pixel's first best query too.
        """
        if self._cell_best is None:
            self.prepare()
        assert self._cell_best is not None
        index = self._cell_best.index_select(0, self.row_taps.lo[rows])
        return index.index_select(1, self.col_taps.lo[cols]).reshape(-1)

    def _column_pass(self, r0: int, r1: int, out: torch.Tensor) -> torch.Tensor:
        """Source rows ``r0:r1`` interpolated to the output width: ``[r1 - r0, W · C]``, written
        into ``out``.

        PyTorch's own channels-last bilinear kernel with the row axis left as it is (scale 1: each
        row is its own, with weight 1), which is the arithmetic of ``F.interpolate`` along the
        columns and about twice as fast as gathering the two source columns with index ops.
        """
        band = self.source.rows(r0, r1)  # [k, w, C]
        k, _, c = band.shape
        size = k * self.out_width * c
        result = out[:size].view(1, k, self.out_width, c).permute(0, 3, 1, 2)  # channels-last
        torch.ops.aten.upsample_bilinear2d.out(
            band.permute(2, 0, 1)[None], [k, self.out_width], False, None, None, out=result
        )
        return out[:size].view(k, -1)

    def chunks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each run of output rows blended from one chunk of
        column-interpolated source rows (the rows whose two source rows both lie in it), in order.

        The chunks, and the tiles cut from each, do not depend on how the work is split, so
        every output value is computed with the same operations on the same tile layout.
        """
        ry, h = self._rows, self.source.height
        plan, y = [], 0
        while y < self.out_height:
            r1 = min(h, ry.lo_list[y] + self.chunk_rows)
            y_end = self.out_height if r1 == h else bisect.bisect_left(ry.hi_list, r1, lo=y)
            plan.append((y, y_end))
            y = y_end
        return plan

    def tiles(
        self,
        scale: float = 1.0,
        rows_wanted: list[bool] | None = None,
        chunks: list[tuple[int, int]] | None = None,
        part: int = 0,
    ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """Yield ``(rows, cols, values)``: output pixels ``[rows, cols]`` times ``scale``, as a
        contiguous ``[len(rows), len(cols), C]`` float32 tensor, in row-major tile order.

        ``values`` is a buffer that the next tile overwrites. ``rows_wanted``: one flag per output
        row; tiles without a wanted row are skipped. ``chunks``: only these of :meth:`chunks`
        (default all). ``part``: which set of scratch buffers to use (parts that run at once need
        different ones).
        """
        ry = self._rows
        h, c, width = self.source.height, self.source.channels, self.out_width
        device = self.source.device
        tile_size = self.tile_h * self.tile_w * c
        scratch = self.workspace.empty(f"tile:{part}", (tile_size,), device=device)
        spare = self.workspace.empty(f"tile spare:{part}", (tile_size,), device=device)
        chunk_size = self.chunk_rows * width * c
        chunk_buffer = self.workspace.empty(f"chunk:{part}", (chunk_size,), device=device)
        for y, y_end in self.chunks() if chunks is None else chunks:
            if rows_wanted is not None and not any(rows_wanted[y:y_end]):
                continue
            r0 = ry.lo_list[y]
            chunk = self._column_pass(r0, min(h, r0 + self.chunk_rows), chunk_buffer)  # [k, W·C]
            # the logit scale folded into the row weights (float32, as a tensor op would round)
            w_lo_all = ry.taps.w_lo[y:y_end] * scale
            w_hi_all = ry.taps.w_hi[y:y_end] * scale
            w_lo, w_hi = w_lo_all.tolist(), w_hi_all.tolist()
            for t0 in range(y, y_end, self.tile_h):
                t1 = min(t0 + self.tile_h, y_end)
                if rows_wanted is not None and not any(rows_wanted[t0:t1]):
                    continue
                if self.tile_w == width and t1 - t0 > 1:
                    # whole rows: gather the two source rows of every output row, blend at once
                    n = (t1 - t0) * width * c
                    values = torch.index_select(
                        chunk, 0, ry.taps.hi[t0:t1] - r0, out=scratch[:n].view(t1 - t0, -1)
                    )
                    tops = torch.index_select(
                        chunk, 0, ry.taps.lo[t0:t1] - r0, out=spare[:n].view(t1 - t0, -1)
                    )
                    # fma(top, w_lo, bottom · w_hi): addcmul_ is fused on the CPU
                    values.mul_(w_hi_all[t0 - y : t1 - y, None])
                    values.addcmul_(tops, w_lo_all[t0 - y : t1 - y, None])
                    yield slice(t0, t1), slice(0, width), values.view(t1 - t0, width, c)
                    continue
                for c0 in range(0, width, self.tile_w):
                    c1 = min(c0 + self.tile_w, width)
                    values = scratch[: (t1 - t0) * (c1 - c0) * c].view(t1 - t0, -1)
                    for i in range(t1 - t0):
                        row = t0 + i
                        top = chunk[ry.lo_list[row] - r0, c0 * c : c1 * c]
                        bottom = chunk[ry.hi_list[row] - r0, c0 * c : c1 * c]
                        # the same arithmetic: add_ with alpha is fused on the CPU
                        torch.mul(bottom, w_hi[row - y], out=values[i])
                        values[i].add_(top, alpha=w_lo[row - y])
                    yield slice(t0, t1), slice(c0, c1), values.view(t1 - t0, c1 - c0, c)


@dataclass(frozen=True)
class LabelMap:
    """What :func:`labels_from_scores` made of one image."""

    labels: torch.Tensor
    """``[H, W]`` int32 class per pixel."""
    confidence: torch.Tensor | None
    """``[H, W]`` float32 winning-class probability, when asked for."""
    totals: ClassTotals | None = None
    """Per-class pixel counts and confidence statistics, when asked for."""


def _first_best(values: torch.Tensor) -> torch.Tensor:
    """The *first* index of the maximum along the last axis: ``[..., Q] -> [...]`` int64.

    ``torch.max`` along a dimension is documented to return the first of equal maxima, on the CPU
    and on CUDA, which is the reference's ``argmax`` tie rule.
    """
    return values.max(dim=-1).indices


def _best_of_rows(
    logits: torch.Tensor, rows: torch.Tensor, buffer: torch.Tensor | None = None
) -> torch.Tensor:
    """``[u]`` int64: :func:`_first_best` of the rows ``rows`` (``[u]`` int64) of ``logits``
    (``[n, Q]``), gathered into ``buffer``'s storage when one is given."""
    q = logits.shape[-1]
    out = None if buffer is None else buffer[: rows.numel() * q].view(-1, q)
    return _first_best(torch.index_select(logits, 0, rows, out=out))


def _best_query(logits: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last axis (in base 2), then each pixel's best kept query.

    Args:
        logits: ``[..., Q]`` float32 (scores × logit scale × log2 e); overwritten.
        keep: ``[Q]`` float32 0/1 multiplier of the probabilities.
    Returns:
        The best probability ``[...]`` float32 and the first query reaching it ``[...]`` int64.
    """
    e = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp2_()  # 2^(x - max)
    inverse_sum = e.sum(dim=-1).reciprocal_()
    best, index = e.mul_(keep).max(dim=-1)  # the first of equal maxima, as _first_best
    return best.mul_(inverse_sum), index


def source_best_query(
    source: ScoreRows, band_elements: int, runner: PartRunner = IN_ORDER
) -> torch.Tensor:
    """Each source pixel's first best query: ``[h, w]`` int64, read a band of rows at a time (as
    many as fit in ``band_elements`` values, at least one), the rows split into parts."""
    best = torch.empty(source.height, source.width, dtype=torch.long, device=source.device)
    row = source.width * source.channels
    band_rows = max(1, band_elements // row)

    def best_of_rows(start: int, stop: int) -> None:
        for r0 in range(start, stop, band_rows):
            r1 = min(stop, r0 + band_rows)
            best[r0:r1] = _first_best(source.rows(r0, r1))

    ranges = split_range(0, source.height, runner.count)
    runner.run([partial(best_of_rows, *rows) for rows in ranges])
    return best


class Resizer(Protocol):
    """Upsampled scores at the original size, tile by tile: :class:`BilinearResizer` (from scores
    at the resized size) or :class:`~scclip_cli.maps.window_resize.WindowResizer` (from window patch
    scores)."""

    channels: int
    device: torch.device
    out_height: int
    out_width: int
    tile_h: int
    tile_w: int
    bound: float | None
    """A bound on the magnitude of every value (before the scale), or ``None`` if unknown."""

    def prepare(self, runner: PartRunner = IN_ORDER) -> None:
        """Work shared by all tiles, in parts run by ``runner``."""
        ...

    def chunks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of runs of whole tile rows, in order, the same however the work is
        split; parts take contiguous runs of them."""
        ...

    def tiles(
        self,
        scale: float = 1.0,
        rows_wanted: list[bool] | None = None,
        chunks: list[tuple[int, int]] | None = None,
        part: int = 0,
    ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """``(rows, cols, values)`` tiles of ``[rows, cols, Q]`` values × ``scale``."""
        ...

    def known_best(self, rows: slice, cols: slice) -> torch.Tensor:
        """``[n]`` int64 first best query of each pixel of a tile where it is known without
        comparing queries, else -1."""
        ...


def make_resizer(
    scores: torch.Tensor | ScoreRows | WindowPatches,
    out_height: int,
    out_width: int,
    order: torch.Tensor | None,
    tile_elements: int,
    workspace: Workspace,
    runner: PartRunner = IN_ORDER,
) -> Resizer:
    """The resizer for ``scores``, with the queries in ``order`` (``[Q]`` int64; ``None``: as
    they are).

    A :class:`~scclip_cli.maps.sliding_window.WindowCanvas` that holds a full grid of window patch
    scores goes straight from the patches (:class:`~scclip_cli.maps.window_resize.WindowResizer`)
    unless its patch rows would not :func:`~scclip_cli.maps.window_resize.fits`; otherwise the canvas
    is built (in parts run by ``runner``) and read by rows.
    """
    if isinstance(scores, WindowCanvas):
        patches = WindowPatches.from_canvas(scores)
        if patches is not None and fits(patches, out_width):
            scores = patches
        else:
            scores.build(runner)
    if isinstance(scores, WindowPatches):
        if order is not None:
            scores = scores.with_channels(order)
        return WindowResizer(scores, out_height, out_width, tile_elements, workspace)
    source: ScoreRows = TensorRows(scores) if isinstance(scores, torch.Tensor) else scores
    if order is not None:
        source = _Reordered(source, order)
    return BilinearResizer(source, out_height, out_width, tile_elements, workspace)


def labels_from_scores(
    scores: torch.Tensor | ScoreRows | WindowPatches,
    out_height: int,
    out_width: int,
    query_class: torch.Tensor,
    num_classes: int,
    protocol: ProtocolConfig,
    tile_elements: int | None = None,
    workspace: Workspace | None = None,
    runner: PartRunner = IN_ORDER,
    *,
    confidence: bool = True,
    statistics: bool = False,
) -> LabelMap:
    """Upsample averaged window scores to the original size and post-process, tile by tile.

    Args:
        scores: ``[Q, h, w]`` float32 cosine scores at the resized size, or the same served by
            rows (:class:`ScoreRows`, e.g. a :class:`~scclip_cli.maps.sliding_window.WindowCanvas`),
            or window patch scores (:class:`~scclip_cli.maps.window_resize.WindowPatches`; see
            :func:`make_resizer`).
        query_class: ``[Q]`` int64 class of each query.
        tile_elements: bound on ``Q × tile pixels``; default :func:`default_tile_elements`.
        workspace: where the scratch buffers come from (reused across images); default fresh.
        runner: runs the parts (bands of rows, runs of chunks, groups of queries) of each step,
            on the CPU at once on several threads (:class:`~scclip_cli.maps.parts.PartThreads`); by
            default one after another. The result does not depend on it (see the module notes).
        confidence: compute the ``[H, W]`` confidence map. Without it, scores that go straight
            from window patches compute no softmax where the labels do not need one (see
            :class:`_TileFill`); the labels are the same bits either way.
        statistics: the per-class statistics will be wanted. Where the confidence map is not
            computed (``confidence=False``, window patches, more pixels than the statistics grid
            of :func:`~scclip_cli.files.mask_io.statistics_grid` holds), the
            :class:`~scclip_cli.files.mask_io.ClassTotals` are computed here at the grid's pixels;
            otherwise the confidence map is computed and returned for
            :meth:`~scclip_cli.files.mask_io.ClassTotals.from_maps`. Either way the totals are the
            same bits with or without ``confidence``.
    Returns:
        labels ``[H, W]`` int32, the confidence ``[H, W]`` float32 where it was computed, and the
        totals where they were, on the scores' device.
    """
    device = scores.device
    if tile_elements is None:
        tile_elements = default_tile_elements(device)
    q = int(scores.shape[0]) if isinstance(scores, torch.Tensor) else scores.channels
    resizer_order, query_class = _class_order(query_class.to(device))
    identity = torch.arange(q, device=device)
    to_class = None if torch.equal(query_class, identity) else query_class  # query → class
    workspace = workspace or Workspace()
    resizer = make_resizer(
        scores, out_height, out_width, resizer_order, tile_elements, workspace, runner
    )
    resizer.prepare(runner)
    sampled = isinstance(resizer, WindowResizer) and statistics_step(out_height, out_width) > 1
    full = confidence or not isinstance(resizer, WindowResizer) or (statistics and not sampled)
    fill = _TileFill.start(resizer, q, out_height, out_width, to_class, protocol, workspace, full)
    chunk_parts = _chunk_parts(resizer, runner.count, out_height)
    grid = None
    if statistics and sampled:
        assert isinstance(resizer, WindowResizer)
        grid = _GridConfidence(resizer, fill)
    grid_done = False
    if grid is not None and fill.confidence is None and runner.count > 1:
        # Labels without the map are bound by Python's per-box work (more parts only wait for
        # each other); the grid's probabilities are long tensor operations: run them side by side,
        # one job per run of grid rows, so that the labels' thread takes the runs left when done.
        every_chunk = [chunk for part in chunk_parts for chunk in part]
        labels_job: Callable[[], None] = partial(fill.run_labels, 0, every_chunk)
        runner.run([labels_job, *grid.jobs(grid.runs, None)])
        grid_done = True
    else:
        fill.run(runner, chunk_parts, None, None)
    keep_query = None
    if protocol.area_threshold is not None and num_classes > 1:
        keep_class = _classes_kept_by_area(fill.labels, num_classes, protocol.area_threshold)
        if keep_class is not None:
            keep_query = keep_class[query_class].to(torch.float32)
            fill.run(runner, chunk_parts, keep_query, ~keep_class)
            grid_done = False  # the probabilities of the kept queries
    fill.threshold()
    totals = None
    if grid is not None:
        if not grid_done:
            runner.run(grid.jobs(runner.count, keep_query))
        totals = grid.totals(num_classes, keep_query, runner)
    return LabelMap(fill.labels, fill.confidence, totals)


def _class_order(query_class: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The queries in class order (stable), and each query's class in that order.

    The first best query then lies in the smallest best class, the reference's argmax over the
    synonym maxima. Returns ``(order, query_class[order])``, ``order`` ``None`` when the queries
    are in class order already.
    """
    order = torch.argsort(query_class, stable=True)
    if torch.equal(order, torch.arange(len(order), device=order.device)):
        return None, query_class
    return order, query_class[order]


def _chunk_parts(resizer: Resizer, parts: int, out_height: int) -> list[list[tuple[int, int]]]:
    """Contiguous runs of whole chunks, of about equal numbers of output rows, one per part (empty
    parts dropped)."""
    chunk_parts: list[list[tuple[int, int]]] = [[] for _ in range(parts)]
    for chunk in resizer.chunks():
        chunk_parts[chunk[0] * parts // out_height].append(chunk)
    return [chunks for chunks in chunk_parts if chunks]


def _classes_kept_by_area(
    labels: torch.Tensor, num_classes: int, area_threshold: float
) -> torch.Tensor | None:
    """``[K]`` bool: the classes the area threshold keeps (background always), or ``None`` when
    no class that some pixel chose is removed (then no pixel can change)."""
    area = torch.bincount(labels.flatten(), minlength=num_classes)[1:].to(torch.float64)
    keep_fg = area > area_threshold * area.sum()
    if not bool((~keep_fg & (area > 0)).any()):
        return None
    return torch.cat([keep_fg.new_ones(1), keep_fg])


@dataclass
class _TileFill:
    """Labels (and confidence) of one :func:`labels_from_scores` call, filled tile by tile.

    Without the confidence map (``confidence`` ``None``; only from a
    :class:`~scclip_cli.maps.window_resize.WindowResizer`), values are computed only where the
    labels need them: a pixel with a known best query (:meth:`WindowResizer.known_best`) and, with
    a probability threshold, a winning probability known to clear it
    (:meth:`WindowResizer.confidence_floor` at least :data:`FLOOR_MARGIN` above it) takes its class
    from :attr:`direct`; only the tiles holding other pixels are computed, with the same operations
    as with the confidence map, so the labels are the same bits.
    """

    resizer: Resizer
    q: int
    labels: torch.Tensor
    """``[H, W]`` int32 (``K < 2^31``)."""
    confidence: torch.Tensor | None
    """``[H, W]`` float32, or ``None`` when not computed."""
    below: torch.Tensor | None
    """``[H, W]`` bool: confidence under the probability threshold (only without
    :attr:`confidence`, with a threshold)."""
    sure: torch.Tensor | None
    """``[row groups, column groups]`` bool: known best query and a floor that clears the
    threshold (see the class notes); ``None`` without a threshold or with :attr:`confidence`."""
    direct: torch.Tensor | None
    """``[row groups, column groups]`` int32: the class of the known best query where the labels
    take it without computing (known, and :attr:`sure` with a threshold), else -1; ``None`` with
    :attr:`confidence`."""
    to_class: torch.Tensor | None
    """``[Q]`` class of each (reordered) query, or ``None`` when query = class."""
    scale: float
    """Logit scale × ``log2 e``: logits in base 2, as ``2^x`` is cheaper than ``e^x``."""
    unshifted: bool
    """Whether ``2^l`` needs no shift by the best logit (see :meth:`start`)."""
    prob_threshold: float
    workspace: Workspace

    @classmethod
    def start(
        cls,
        resizer: Resizer,
        q: int,
        out_height: int,
        out_width: int,
        to_class: torch.Tensor | None,
        protocol: ProtocolConfig,
        workspace: Workspace,
        full: bool = True,
    ) -> _TileFill:
        """``full``: compute the confidence map (required unless ``resizer`` is a
        :class:`~scclip_cli.maps.window_resize.WindowResizer`)."""
        device = resizer.device
        scale = protocol.logit_scale * LOG2_E
        # Where every |score| <= bound is known, 2^l needs no shift by the best logit when neither
        # 2^(bound × scale) × Q overflows nor 2^(-bound × scale) leaves the normal floats (the
        # margins cover rounding): one pass less over each tile.
        scaled_bound = None if resizer.bound is None else resizer.bound * scale
        assert full or isinstance(resizer, WindowResizer), "only window patches go without the map"
        threshold = protocol.prob_threshold
        below = sure = direct = None
        if not full:
            assert isinstance(resizer, WindowResizer)
            known = resizer.known_table()
            if to_class is not None:
                known = torch.where(known >= 0, to_class[known.clamp(min=0)], -1)
            if threshold > 0:
                below = torch.zeros(out_height, out_width, dtype=torch.bool, device=device)
                floor = resizer.confidence_floor(protocol.logit_scale)
                sure = floor >= threshold * (1 + FLOOR_MARGIN)  # only where known: floor 0 else
                known = torch.where(sure, known, -1)
            direct = known.to(torch.int32)
        return cls(
            resizer=resizer,
            q=q,
            labels=torch.empty(out_height, out_width, dtype=torch.int32, device=device),
            confidence=(
                torch.empty(out_height, out_width, dtype=torch.float32, device=device)
                if full
                else None
            ),
            below=below,
            sure=sure,
            direct=direct,
            to_class=to_class,
            scale=scale,
            unshifted=scaled_bound is not None and scaled_bound * 1.001 + math.log2(q) + 2 < 125,
            prob_threshold=threshold,
            workspace=workspace,
        )

    def run(
        self,
        runner: PartRunner,
        chunk_parts: list[list[tuple[int, int]]],
        keep: torch.Tensor | None,
        redo: torch.Tensor | None,
    ) -> None:
        """Fill labels and confidence. With ``keep`` (``[Q]`` 0/1), only where some label is a
        class of ``redo`` (``[K]`` bool, the removed classes): elsewhere nothing can change."""
        rows_wanted = None if redo is None else redo[self.labels].any(dim=1).tolist()
        labels_only = self.confidence is None and keep is None
        runner.run(
            [
                partial(self.run_labels, i, chunks)
                if labels_only
                else partial(self.run_rows, i, chunks, keep, redo, rows_wanted)
                for i, chunks in enumerate(chunk_parts)
            ]
        )

    def threshold(self) -> None:
        """Class 0 where the winning probability is under the threshold (after the area rule)."""
        if self.prob_threshold <= 0:
            return
        if self.confidence is not None:
            self.labels[self.confidence < self.prob_threshold] = 0
        else:
            assert self.below is not None
            self.labels[self.below] = 0

    def run_rows(
        self,
        part: int,
        chunks: list[tuple[int, int]],
        keep: torch.Tensor | None,
        redo: torch.Tensor | None,
        rows_wanted: list[bool] | None,
    ) -> None:
        """Labels and confidence of the output rows of ``chunks`` (see :meth:`run`)."""
        q, labels, device = self.q, self.labels, self.labels.device
        tile_size = self.resizer.tile_h * self.resizer.tile_w * q
        straddling = self.workspace.empty(f"straddling:{part}", (tile_size,), device=device)
        for rows, cols, logits in self.resizer.tiles(self.scale, rows_wanted, chunks, part):
            if redo is not None and not bool(redo[labels[rows, cols]].any()):
                continue
            shape = logits.shape[:2]
            if keep is None:
                flat = logits.view(-1, q)
                index = self.best_queries(rows, cols, flat, straddling, part)
                best = self.tile_confidence(flat, index)
            else:
                best, index = _best_query(logits, keep)
            to_class = self.to_class
            labels[rows, cols] = (index if to_class is None else to_class[index]).view(shape)
            if self.confidence is not None:
                self.confidence[rows, cols] = best.view(shape)
            elif self.below is not None:  # labels only, tiles redone by the area rule
                self.below[rows, cols] = best.view(shape) < self.prob_threshold

    def run_labels(self, part: int, chunks: list[tuple[int, int]]) -> None:
        """Labels of the output rows of ``chunks`` (consecutive) without the confidence map (see
        the class notes): every pixel's :attr:`direct` class at once, then only the tiles holding
        pixels it leaves at -1."""
        resizer, direct = self.resizer, self.direct
        assert isinstance(resizer, WindowResizer) and direct is not None
        if not chunks:
            return
        start, stop = chunks[0][0], chunks[-1][1]  # chunks start at multiples of tile_h
        band = resizer.group_rows(direct, slice(start, stop), out=self.labels[start:stop])
        boxes = tile_boxes(band < 0, resizer.tile_h, resizer.tile_w)
        if self.sure is None and resizer.canvas_cells:
            # the pixels left are those with no known best query: compare them in their box
            for box in boxes:
                self.fill_box(resizer, band, start, box, part)
            return
        q, labels, device = self.q, self.labels, self.labels.device
        straddling = self.workspace.empty(
            f"straddling:{part}", (resizer.tile_h * resizer.tile_w * q,), device=device
        )
        to_class = self.to_class
        tile_h, tile_w, width = resizer.tile_h, resizer.tile_w, resizer.out_width
        for r0, _, c0, _ in boxes:  # each box's tile, with the same operations as with the map
            y0, x0 = start + r0 // tile_h * tile_h, c0 // tile_w * tile_w
            rows, cols = slice(y0, min(y0 + tile_h, stop)), slice(x0, min(x0 + tile_w, width))
            shape = (rows.stop - rows.start, cols.stop - cols.start)
            sure = None if self.sure is None else resizer.group_values(self.sure, rows, cols)
            all_sure = sure is None or bool(sure.all())
            flat = None if all_sure else resizer.values(rows, cols, self.scale, part).view(-1, q)
            index = self.best_queries(rows, cols, flat, straddling, part)
            labels[rows, cols] = (index if to_class is None else to_class[index]).view(shape)
            if flat is not None:
                assert self.below is not None
                best = self.tile_confidence(flat, index)
                self.below[rows, cols] = best.view(shape) < self.prob_threshold

    def fill_box(
        self,
        resizer: WindowResizer,
        band: torch.Tensor,
        start: int,
        box: tuple[int, int, int, int],
        part: int,
    ) -> None:
        """The labels of the pixels at -1 in ``box`` (``(r0, r1, c0, c1)`` of ``band``, the output
        rows from ``start``, within one tile), whose best queries are not known: the same
        comparison as :meth:`box_best` over the same box, so the same bits as with the map."""
        r0, r1, c0, c1 = box
        target = band[r0:r1, c0:c1]
        unknown = target < 0
        in_box = torch.nonzero(unknown.view(-1))[:, 0]
        rows, cols = slice(start + r0, start + r1), slice(c0, c1)
        index = self.box_queries(resizer, rows, cols, in_box, part)
        to_class = self.to_class
        target[unknown] = (index if to_class is None else to_class[index]).to(target.dtype)

    def tile_confidence(self, flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``[n]`` winning probability of each pixel of a tile, from its logits ``flat``
        (``[n, Q]``, base 2, overwritten) and best queries ``index`` (``[n]`` int64)."""
        if self.unshifted:
            # p_best = 2^l_best / sum_q 2^l_q: no term can overflow or underflow
            return flat.exp2_().gather(1, index[:, None])[:, 0].div_(flat.sum(1))
        # p_best = 1 / sum_q 2^(l_q - l_best): the best term is exactly 1, and no max over the
        # queries is needed (the best query is known)
        flat.sub_(flat.gather(1, index[:, None])).exp2_()
        return flat.sum(1).reciprocal_()

    def box_best(
        self,
        resizer: WindowResizer,
        rows: slice,
        cols: slice,
        index: torch.Tensor,
        where: torch.Tensor,
        part: int,
    ) -> None:
        """Fill the unknown entries ``where`` (``[u]`` int64 positions, row-major) of a tile's
        ``index`` (``[t · c]`` int64) with their first best queries, compared among values
        computed for the smallest box of the tile's pixels that holds them (whether or not the
        tile's values are computed too: the labels are then the same bits with or without the
        confidence map)."""
        c = cols.stop - cols.start
        ys, xs = where.div(c, rounding_mode="floor"), where.remainder(c)
        low, high = torch.stack([ys, xs]).aminmax(dim=1)
        (r0, c0), (r1, c1) = low.tolist(), (high + 1).tolist()
        box_rows = slice(rows.start + r0, rows.start + r1)
        box_cols = slice(cols.start + c0, cols.start + c1)
        in_box = (ys - r0) * (c1 - c0) + (xs - c0)
        index[where] = self.box_queries(resizer, box_rows, box_cols, in_box, part)

    def box_queries(
        self, resizer: WindowResizer, rows: slice, cols: slice, in_box: torch.Tensor, part: int
    ) -> torch.Tensor:
        """``[u]`` int64 first best query of the pixels ``in_box`` (``[u]`` int64, row-major
        positions in the box ``[rows, cols]``, part of one tile), compared among the box's
        values."""
        values = resizer.values(rows, cols, self.scale, part, buffer="box")
        return _best_of_rows(values.view(-1, self.q), in_box)

    def best_queries(
        self,
        rows: slice,
        cols: slice,
        logits: torch.Tensor | None,
        straddling: torch.Tensor,
        part: int = 0,
    ) -> torch.Tensor:
        """``[n]`` int64 first best query of each pixel of a tile: known where the resizer knows
        it, else compared: by :meth:`box_best` where a
        :class:`~scclip_cli.maps.window_resize.WindowResizer` knows best queries by canvas cells;
        otherwise among the tile's ``logits`` (``[n, Q]``, left as they are; ``None``: computed
        here from a :class:`~scclip_cli.maps.window_resize.WindowResizer`, as with the confidence
        map; ``straddling``: a buffer of a tile's size). Either way the same bits with or without
        the confidence map."""
        index = self.resizer.known_best(rows, cols)
        others = torch.nonzero(index < 0)[:, 0]
        if not others.numel():
            return index
        resizer = self.resizer
        if isinstance(resizer, WindowResizer) and resizer.canvas_cells:
            # few pixels to compare, in few places: the box around them, with or without the map
            self.box_best(resizer, rows, cols, index, others, part)
            return index
        if logits is None:  # labels only: the tile's values, as with the confidence map
            assert isinstance(resizer, WindowResizer)
            logits = resizer.values(rows, cols, self.scale, part).view(-1, self.q)
        index[others] = _best_of_rows(logits, others, straddling)
        return index


SAMPLE_ROWS = 32
"""Grid rows of the confidence statistics computed at once (per part): one matrix product over
the patch rows they reach, about 20 MB of values for a 4000-pixel-wide image."""
EXTRA_PIXELS = 4096
"""Pixels of the classes the grid misses computed at once: each gathers the ``Q`` values of the
few patch rows it reaches (about 25 MB for 4,096 pixels, 150 queries)."""


class _GridConfidence:
    """The winning probability at the pixels of the statistics grid
    (:func:`~scclip_cli.files.mask_io.statistics_grid`), computed there only, and the
    :class:`~scclip_cli.files.mask_io.ClassTotals` made of it.

    The probability is that of the best query kept by the area rule, as the confidence map holds
    it. The grid's rows go in runs of :data:`SAMPLE_ROWS`, the same however they are split into
    parts, and a pixel's value does not depend on the labels: the runs can go while the labels
    are being filled.
    """

    def __init__(self, resizer: WindowResizer, fill: _TileFill) -> None:
        height, width = fill.labels.shape
        self.resizer, self.fill = resizer, fill
        self.row_slice, self.col_slice = statistics_grid(height, width)
        self.ys = torch.arange(height)[self.row_slice]
        self.xs = torch.arange(width)[self.col_slice]
        self.values = torch.empty(
            len(self.ys), len(self.xs), dtype=torch.float32, device=fill.labels.device
        )
        """``[n, m]`` float32: the probability at each grid pixel."""

    @property
    def runs(self) -> int:
        """The number of runs of :data:`SAMPLE_ROWS` grid rows (the most parts :meth:`jobs`
        makes)."""
        return -(-len(self.ys) // SAMPLE_ROWS)

    def jobs(self, parts: int, keep: torch.Tensor | None) -> list[Callable[[], None]]:
        """The computation of :attr:`values` in at most ``parts`` parts (``keep``: ``[Q]`` 0/1
        queries the area rule keeps, ``None`` for all)."""
        runs = split_range(0, self.runs, parts)  # whole runs per part
        end = len(self.ys)
        return [
            partial(self.fill_rows, a * SAMPLE_ROWS, min(end, b * SAMPLE_ROWS), keep)
            for a, b in runs
        ]

    def fill_rows(self, start: int, stop: int, keep: torch.Tensor | None) -> None:
        resizer, fill, ys, xs = self.resizer, self.fill, self.ys, self.xs
        known = resizer.known_best_at(ys[start:stop], xs) if keep is None else None
        for which, values in resizer.grid_values(ys[start:stop], xs, fill.scale, SAMPLE_ROWS):
            rows = slice(start + which.start, start + which.stop)
            # (the known rows are used once: writing into them is fine)
            index = None if known is None else known[which].reshape(-1)
            flat = values.view(-1, fill.q)
            self.values[rows] = self.winning(flat, keep, index).view(-1, len(xs))

    def winning(
        self, flat: torch.Tensor, keep: torch.Tensor | None, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[n]`` float32 probability of each pixel's best query (the best kept one with
        ``keep``), from its values ``flat`` (``[n, Q]``, overwritten); ``index``: the known best
        queries, -1 where not known (overwritten; ``None``: none known)."""
        if keep is not None:  # the area rule: the best kept query
            return _best_query(flat, keep)[0]
        if index is None:
            index = _first_best(flat)
        else:
            others = torch.nonzero(index < 0)[:, 0]
            if others.numel():
                index[others] = _best_of_rows(flat, others)
        return self.fill.tile_confidence(flat, index)

    def totals(
        self, num_classes: int, keep: torch.Tensor | None, runner: PartRunner = IN_ORDER
    ) -> ClassTotals:
        """The totals of the final labels: counts over every pixel (in bands of rows run by
        ``runner``), confidence over the grid's pixels, and over every pixel of a class that has
        none there."""
        labels, resizer, fill = self.fill.labels, self.resizer, self.fill

        def band_counts(start: int, stop: int) -> torch.Tensor:
            return torch.bincount(labels[start:stop].flatten(), minlength=num_classes)

        bands = split_range(0, labels.shape[0], runner.count)
        pixels = torch.stack(runner.run([partial(band_counts, a, b) for a, b in bands])).sum(0)
        grid_labels = labels[self.row_slice, self.col_slice]
        counts = torch.bincount(grid_labels.flatten(), minlength=num_classes)
        missing = (pixels > 0) & (counts == 0)
        extra_labels = extra_confidence = None
        if bool(missing.any()):  # classes no grid pixel shows: all their pixels
            where = torch.nonzero(missing[labels])
            extra_labels = labels[where[:, 0], where[:, 1]]
            extra = []
            for start in range(0, len(where), EXTRA_PIXELS):
                part = where[start : start + EXTRA_PIXELS]
                values = resizer.pixel_values(part[:, 0], part[:, 1], fill.scale)
                extra.append(self.winning(values, keep))
            extra_confidence = torch.cat(extra)
        return ClassTotals.from_samples(
            pixels.cpu().numpy(),
            grid_labels.cpu().numpy(),
            self.values.cpu().numpy(),
            None if extra_labels is None else extra_labels.cpu().numpy(),
            None if extra_confidence is None else extra_confidence.cpu().numpy(),
        )


def upsample_scores(
    scores: torch.Tensor | ScoreRows, out_height: int, out_width: int
) -> torch.Tensor:
    """The full ``[Q, H, W]`` upsampled scores (memory-heavy; for tests and diagnostics).

    Returned as a channels-last view of ``[H, W, Q]`` storage.
    """
    source: ScoreRows = TensorRows(scores) if isinstance(scores, torch.Tensor) else scores
    full = torch.empty(
        out_height, out_width, source.channels, dtype=torch.float32, device=source.device
    )
    for rows, cols, values in BilinearResizer(source, out_height, out_width, 1 << 24).tiles():
        full[rows, cols] = values
    return full.permute(2, 0, 1)
