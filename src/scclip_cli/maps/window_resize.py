"""Window patch scores straight to the original image size, with no resized canvas in between.

The reference upsamples each window's patch scores to the window (bilinear), averages the windows
where they overlap (sum / coverage) on a canvas at the resized size, then resizes that canvas to
the original size (bilinear). Every step is linear, the windows form a full grid (so the coverage
of a pixel is its row's coverage times its column's), and bilinear resizing is separable; so each
output value is one weighted sum of patch scores:

    out[y, x, q] = sum_(i,a) R[y, (i,a)] · sum_(j,b) C[x, (j,b)] · P_ij[a, b, q]

with ``P_ij`` the ``[grid_h, grid_w, Q]`` patch scores of the window in window row ``i`` and
column ``j``, ``(i, a)`` patch row ``a`` of window row ``i``, and non-negative weights ``R`` (output
row taps × window row taps / row coverage) and ``C`` (the same for columns). A few patch rows
(five or six with the default protocol) reach any output row, so:

* :meth:`WindowResizer.prepare` first computes, for every patch row ``(i, a)``, the inner sum at
  every output column: the windows of row ``i`` upsampled along their columns, averaged where they
  overlap and resized to the output width (PyTorch's bilinear kernels, as the reference), ``[G,
  W·Q]`` for the ``G`` patch rows of the image (28 for a 4:3 photo);
* each tile of output pixels is then **one** matrix product of its rows' weights ``[t, k]`` with
  the ``k`` patch rows they reach (:class:`AxisMap` numbers the patch rows in the order of their
  centres, so those are adjacent): one pass writing the tile, where the canvas route needs a canvas
  build, a column pass over every resized row, two gathers and two blends at the output size.

This takes well over half the post-processing time off a photo-sized image
(docs/performance.md).

The arithmetic differs from the reference's only in float rounding (the weights are combined in
float64 and rounded once). The best query is known without comparing queries wherever every cell
that reaches an output pixel (with a non-zero weight) has the same first best query ``q``: the
pixel's scores blend those cells' scores with non-negative weights, so ``q`` is its best too, up to
float rounding (queries within a few units in the last place of ``q`` could come out ahead). The
cells are patch cells (free), or, for outputs :data:`CANVAS_CELLS_RATIO` times the resized canvas
or larger, the four canvas pixels around the output pixel (one pass over the canvas, several times
more pixels known). Only the other pixels, near boundaries of the labels, compare all queries.

Memory: ``G × W × Q`` float32 for the patch rows (``G`` about an eighth of the resized height), about
the canvas's size for a 12-megapixel photo; :func:`fits` sends larger images to the canvas route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import pairwise

import torch

from scclip_cli.maps.parts import IN_ORDER, PartRunner, split_range
from scclip_cli.maps.sliding_window import Window, WindowCanvas, bilinear_taps
from scclip_cli.maps.workspace import Workspace

MAX_CANVAS_RATIO = 2.0
"""The patch rows may take at most this many times the memory of the resized canvas
(``h × w × Q``) they replace; larger (very wide) outputs take the canvas route."""

CANVAS_CELLS_RATIO = 4.0
"""Best queries are known by cells of the resized canvas (one extra pass over the canvas's
``h × w × Q`` values) where the output has at least this many times the canvas's pixels, else by
groups of patch cells (free, coarser). Measured in docs/performance-cache.md ("Big photos")."""

MIN_TILE_ROWS = 8
"""Output rows per tile at least: a tile reads about six patch rows (of its columns), so tiles of
one wide row would read six times what they write (4 to 32 rows are alike,
docs/performance.md)."""


@dataclass(frozen=True)
class WindowPatches:
    """Patch scores of a full grid of windows over a resized image.

    ``grid[i][j]``: ``[grid_h_i, grid_w_j, Q]`` float32 patch scores of the window over resized rows
    ``row_spans[i]`` and columns ``col_spans[j]``.
    """

    height: int
    width: int
    row_spans: tuple[tuple[int, int], ...]
    col_spans: tuple[tuple[int, int], ...]
    grid: tuple[tuple[torch.Tensor, ...], ...]

    @property
    def channels(self) -> int:
        return int(self.grid[0][0].shape[-1])

    @property
    def device(self) -> torch.device:
        return self.grid[0][0].device

    @staticmethod
    def from_windows(
        height: int, width: int, windows: Sequence[Window], patch_scores: Sequence[torch.Tensor]
    ) -> WindowPatches | None:
        """The grid of ``windows`` (any order) and their ``[gh, gw, Q]`` patch scores, or ``None``
        when the windows are not one full grid (each row span with each column span, once) or the
        patch grids of a row (column) of windows differ in height (width)."""
        rows = sorted({(w.y1, w.y2) for w in windows})
        cols = sorted({(w.x1, w.x2) for w in windows})
        where = {(w.y1, w.y2, w.x1, w.x2): s for w, s in zip(windows, patch_scores, strict=True)}
        if len(where) != len(windows) or len(where) != len(rows) * len(cols):
            return None
        if not (_covers(rows, height) and _covers(cols, width)):
            return None
        grid = tuple(tuple(where[(*r, *c)] for c in cols) for r in rows)
        if any(len({int(s.shape[0]) for s in row}) != 1 for row in grid) or any(
            len({int(row[j].shape[1]) for row in grid}) != 1 for j in range(len(cols))
        ):
            return None
        return WindowPatches(height, width, tuple(rows), tuple(cols), grid)

    @staticmethod
    def from_canvas(canvas: WindowCanvas) -> WindowPatches | None:
        """The patch scores added to ``canvas`` as a grid, for post-processing straight from them,
        or ``None`` when the canvas was read already, holds pixel scores or its windows are not a
        full grid."""
        added = canvas.added_patches()
        if added is None:
            return None
        return WindowPatches.from_windows(canvas.height, canvas.width, *added)

    def with_channels(self, order: torch.Tensor) -> WindowPatches:
        """The same with the queries in the given order (``[Q]`` int64), each grid contiguous."""
        grid = tuple(tuple(s.index_select(2, order) for s in row) for row in self.grid)
        return WindowPatches(self.height, self.width, self.row_spans, self.col_spans, grid)


def fits(patches: WindowPatches, out_width: int) -> bool:
    """Whether the patch rows of an output ``out_width`` wide stay within
    :data:`MAX_CANVAS_RATIO` × the canvas."""
    patch_rows = sum(int(row[0].shape[0]) for row in patches.grid)
    return patch_rows * out_width <= MAX_CANVAS_RATIO * patches.height * patches.width


@dataclass(frozen=True)
class AxisMap:
    """How output positions along one axis blend patch positions (rows or columns of patches).

    Patch positions are numbered in the order of their centres in the resized image (ties: window,
    then patch), so the patches that reach one output position are a short run of numbers.
    """

    patches: list[tuple[int, int]]
    """``(window, patch)`` of each patch position, in that order."""
    start: torch.Tensor
    """``[out]`` int64: the first patch position each output position reads."""
    weights: torch.Tensor
    """``[out, m]`` float64: the weights of patch positions ``start .. start + m - 1``, zero past
    the last one read."""
    reached: torch.Tensor
    """``[out, m]`` int64: the patch positions read with a non-zero weight, the last of them
    repeated to fill the row."""
    reached_sets: torch.Tensor
    """``[n, m]`` int64: the distinct rows of :attr:`reached`."""
    reached_set: torch.Tensor
    """``[out]`` int64: which of :attr:`reached_sets` each output position reads."""


@lru_cache(maxsize=16)
def axis_map(
    out_size: int, resized_size: int, spans: tuple[tuple[int, int], ...], grids: tuple[int, ...]
) -> AxisMap:
    """The :class:`AxisMap` of an axis: ``out_size`` output positions resized (bilinear) from
    ``resized_size``, covered by windows ``spans`` whose ``grids`` patches are upsampled to them
    (bilinear) and averaged where windows overlap.

    Kept for the last few geometries (images of a folder often share their size); treat the
    tensors as read-only."""
    centres = [
        ((s + (a + 0.5) * (e - s) / g), k, a)
        for k, ((s, e), g) in enumerate(zip(spans, grids, strict=True))
        for a in range(g)
    ]
    centres.sort()
    patches = [(k, a) for _, k, a in centres]
    position = {p: n for n, p in enumerate(patches)}
    coverage = torch.zeros(resized_size, dtype=torch.float64)
    for s, e in spans:
        coverage[s:e] += 1
    # [resized, G]: each resized position's weights on the patch positions (window taps / coverage)
    blend = torch.zeros(resized_size, len(patches), dtype=torch.float64)
    for k, ((s, e), g) in enumerate(zip(spans, grids, strict=True)):
        taps = bilinear_taps(e - s, g)
        local = torch.arange(s, e)
        to_position = torch.tensor([position[(k, a)] for a in range(g)])
        for index, weight in ((taps.lo, taps.w_lo), (taps.hi, taps.w_hi)):
            blend.index_put_((local, to_position[index]), weight.double(), accumulate=True)
    blend /= coverage[:, None]
    out = bilinear_taps(out_size, resized_size)
    nonzero = blend != 0
    first = torch.where(nonzero.any(1), nonzero.to(torch.int8).argmax(1), 0)
    last = len(patches) - 1 - nonzero.flip(1).to(torch.int8).argmax(1)
    start = torch.minimum(first[out.lo], first[out.hi])
    stop = torch.maximum(last[out.lo], last[out.hi]) + 1
    m = int((stop - start).max())
    columns = (start[:, None] + torch.arange(m)).clamp(max=len(patches) - 1)
    weights = out.w_lo.double()[:, None] * blend[out.lo[:, None], columns]
    weights += out.w_hi.double()[:, None] * blend[out.hi[:, None], columns]
    weights[torch.arange(m) >= (stop - start)[:, None]] = 0  # past the last patch read
    # positions with a non-zero weight; the others repeat the last of them (there is at least one)
    reached = torch.where(weights != 0, columns, -1)
    reached = torch.cummax(reached, dim=1).values
    reached = torch.where(reached < 0, reached.max(1, keepdim=True).values, reached)
    sets, which = torch.unique(reached, dim=0, return_inverse=True)
    return AxisMap(patches, start, weights, reached, sets, which)


class WindowResizer:
    """Window patch scores → ``[H, W, Q]`` output values at the original size, tile by tile (see
    the module notes). The same interface as
    :class:`~scclip_cli.maps.postprocess.BilinearResizer`."""

    def __init__(
        self,
        patches: WindowPatches,
        out_height: int,
        out_width: int,
        tile_elements: int,
        workspace: Workspace | None = None,
        *,
        cells: bool = True,
    ) -> None:
        """``cells``: know best queries by canvas cells where it pays (see
        :meth:`_canvas_known_best`); ``False``: by patch cells only."""
        self.patches = patches
        self.workspace = workspace or Workspace()
        self.out_height, self.out_width = out_height, out_width
        self.channels, self.device = patches.channels, patches.device
        grid = patches.grid
        self.rows = axis_map(
            out_height,
            patches.height,
            patches.row_spans,
            tuple(int(row[0].shape[0]) for row in grid),
        )
        self.cols = axis_map(
            out_width, patches.width, patches.col_spans, tuple(int(s.shape[1]) for s in grid[0])
        )
        # Whole output rows when enough fit in a tile; else blocks of MIN_TILE_ROWS rows.
        self.tile_h = min(
            out_height, max(MIN_TILE_ROWS, tile_elements // (out_width * self.channels))
        )
        self.tile_w = min(out_width, max(1, tile_elements // (self.tile_h * self.channels)))
        self.tile_elements = tile_elements
        self.canvas_cells = cells and (
            out_height * out_width >= CANVAS_CELLS_RATIO * patches.height * patches.width
        )
        """Whether the best queries are known by cells of the resized canvas (see
        :meth:`_canvas_known_best`) rather than by groups of patch cells."""
        self._known_best: torch.Tensor | None = None
        self._row_group = self._col_group = torch.empty(0, dtype=torch.long)
        if not self.canvas_cells:
            self._known_best, self._row_group, self._col_group = self._known_best_table()
        self.bound: float | None = max(float(s.abs().max()) for row in grid for s in row)
        """The largest patch score magnitude: every output value blends patch scores with
        non-negative weights that sum to one."""
        self._values: torch.Tensor | None = None
        self._weights: dict[float, tuple[list[tuple[int, int]], torch.Tensor]] = {}
        self._canvas: WindowResizer | None = None

    def _known_best_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(table, row_group, col_group)``: output rows (columns) that reach the same patch rows
        (columns) form a group, ``[H]`` (``[W]``) int64; ``table[row_group, col_group]`` is the
        first best query shared by every patch cell the pixels of those groups reach, or -1."""
        best = self._patch_best()
        rows, cols = self.rows, self.cols
        cells = best[rows.reached_sets.to(self.device)][:, :, cols.reached_sets.to(self.device)]
        high, low = cells.amax(dim=(1, 3)), cells.amin(dim=(1, 3))  # cells: [r, m, c, n]
        table = torch.where(high == low, high, -1)
        return table, rows.reached_set.to(self.device), cols.reached_set.to(self.device)

    def _patch_best(self) -> torch.Tensor:
        """``[G_rows, G_cols]`` int64: the first best query of every patch cell, by patch positions
        (:class:`AxisMap`)."""
        return self._patch_scores().argmax(-1)  # the first of equal maxima

    def _canvas_resizer(self, runner: PartRunner) -> WindowResizer:
        """The same patches to the resized canvas's own size (with patch-cell groups), prepared
        once (the known best queries and the confidence floor both pass over it)."""
        if self._canvas is None:
            p = self.patches
            small = WindowResizer(
                p, p.height, p.width, self.tile_elements, Workspace(), cells=False
            )
            small.prepare(runner)
            self._canvas = small
        return self._canvas

    def _canvas_pass(
        self, runner: PartRunner, reduce: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype
    ) -> torch.Tensor:
        """``reduce`` (``[n, Q]`` values → ``[n]``) of the canvas's values at every pixel of the
        resized canvas: ``[h, w]`` of ``dtype``, in parts run by ``runner``."""
        small = self._canvas_resizer(runner)
        out = torch.empty(self.patches.height, self.patches.width, dtype=dtype, device=self.device)
        chunks = small.chunks()

        def part(index: int, start: int, stop: int) -> None:
            for rows, cols, values in small.tiles(1.0, None, chunks[start:stop], index):
                out[rows, cols] = reduce(values.view(-1, self.channels)).view(
                    rows.stop - rows.start, cols.stop - cols.start
                )

        ranges = split_range(0, len(chunks), runner.count)
        runner.run([partial(part, i, a, b) for i, (a, b) in enumerate(ranges)])
        return out

    def _canvas_known_best(self, runner: PartRunner = IN_ORDER) -> None:
        """The known best queries by cells of the resized canvas: each output pixel is a bilinear
        blend (non-negative weights) of the four canvas pixels around it, so where those share
        their first best query ``q``, ``q`` is the pixel's too (up to float rounding: queries
        within a few units in the last place of ``q`` could come out ahead). Near an image's
        class boundaries this knows several times more pixels than the patch cells do, for one
        pass over the canvas (``h × w × Q``), which pays where the output is
        :data:`CANVAS_CELLS_RATIO` times larger or more."""
        best = self._canvas_pass(runner, lambda values: values.max(dim=-1).indices, torch.long)
        self._known_best = shared_cell_best(best)
        self._row_group = bilinear_taps(self.out_height, self.patches.height).lo.to(self.device)
        self._col_group = bilinear_taps(self.out_width, self.patches.width).lo.to(self.device)

    def prepare(self, runner: PartRunner = IN_ORDER) -> None:
        """Compute the known best queries (by canvas cells, :attr:`canvas_cells`) and the patch
        rows (``[G, W · Q]``), in parts run by ``runner``."""
        if self._known_best is None:
            self._canvas_known_best(runner)
        q, width = self.channels, self.out_width
        self._values = self.workspace.empty(
            "patch rows", (len(self.rows.patches), width * q), device=self.device
        )
        order = [(i, a) for i, row in enumerate(self.patches.grid) for a in range(row[0].shape[0])]
        row_of = _positions(self.rows.patches, len(self.patches.grid))
        jobs = []
        for part, (p0, p1) in enumerate(split_range(0, len(order), runner.count)):
            runs: dict[int, list[int]] = {}
            for i, a in order[p0:p1]:
                runs.setdefault(i, []).append(a)
            jobs.append(partial(self._fill, part, runs, row_of))
        runner.run(jobs)

    def _fill(self, part: int, runs: dict[int, list[int]], row_of: list[torch.Tensor]) -> None:
        """Patch rows ``runs[i]`` (consecutive) of each window row ``i`` into :attr:`_values`:
        each window of the row upsampled along its columns, the windows averaged where they
        overlap, each row resized to the output width."""
        assert self._values is not None
        p, q = self.patches, self.channels
        xs = sorted({x for span in p.col_spans for x in span})
        cells = list(pairwise(xs))
        coverage = [sum(x1 <= xa and xb <= x2 for x1, x2 in p.col_spans) for xa, xb in cells]
        rows_most = max(len(patch_rows) for patch_rows in runs.values()) if runs else 0
        widest = max(x2 - x1 for x1, x2 in p.col_spans)
        averaged = self.workspace.empty(
            f"patch rows averaged:{part}", (rows_most * p.width * q,), device=self.device
        )
        upsampled = self.workspace.empty(
            f"patch rows window:{part}", (rows_most * widest * q,), device=self.device
        )
        for i, patch_rows in runs.items():
            a0, n = patch_rows[0], len(patch_rows)
            resized = averaged[: n * p.width * q].view(n, p.width, q)
            seen: set[int] = set()
            for (x1, x2), scores in zip(p.col_spans, p.grid[i], strict=True):
                window = _resize_width(scores[a0 : a0 + n], x2 - x1, upsampled)
                for c, (xa, xb) in enumerate(cells):
                    if x1 <= xa and xb <= x2:
                        target = resized[:, xa:xb]
                        source = window[:, xa - x1 : xb - x1]
                        if c in seen:
                            target += source
                        else:
                            target.copy_(source)
                            seen.add(c)
            for (xa, xb), count in zip(cells, coverage, strict=True):
                if count > 1:
                    resized[:, xa:xb].div_(count)
            for a in range(n):  # each straight into its row (the rows are in centre order)
                row = self._values[int(row_of[i][a0 + a])]
                _resize_width(resized[a : a + 1], self.out_width, row)

    def chunks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each run of :attr:`tile_h` output rows (one row of tiles)."""
        h = self.out_height
        return [(y, min(y + self.tile_h, h)) for y in range(0, h, self.tile_h)]

    def _chunk_weights(self, scale: float) -> tuple[list[tuple[int, int]], torch.Tensor]:
        """For each chunk of :meth:`chunks`, the patch positions ``(k0, k1)`` its rows read, and
        ``[H, k]`` float32: each output row's weights on ``k0, k0 + 1, ...`` of its chunk, times
        ``scale`` (rounded once from float64), zero past ``k1``."""
        start, weights = self.rows.start, self.rows.weights
        chunk = torch.arange(self.out_height) // self.tile_h
        count = int(chunk[-1]) + 1
        k0 = torch.full((count,), len(self.rows.patches)).scatter_reduce(0, chunk, start, "amin")
        k1 = torch.zeros(count, dtype=torch.long).scatter_reduce(
            0, chunk, self.rows.reached.amax(1) + 1, "amax"
        )
        width = int((k1 - k0).max())
        table = _placed_weights(start, weights, k0[chunk], width, scale, self.device)
        ranges = list(zip(k0.tolist(), k1.tolist(), strict=True))
        return ranges, table

    def _scaled_weights(self, scale: float) -> tuple[list[tuple[int, int]], torch.Tensor]:
        """:meth:`_chunk_weights` of ``scale``, kept for the next tiles of the same scale."""
        found = self._weights.get(scale)
        if found is None:  # two threads may both compute it: the same values
            found = self._weights[scale] = self._chunk_weights(scale)
        return found

    def tile_slices(
        self, chunks: list[tuple[int, int]] | None = None
    ) -> Iterator[tuple[slice, slice]]:
        """``(rows, cols)`` of each tile of ``chunks`` (default all), in row-major order."""
        width = self.out_width
        for y0, y1 in self.chunks() if chunks is None else chunks:
            for c0 in range(0, width, self.tile_w):
                yield slice(y0, y1), slice(c0, min(c0 + self.tile_w, width))

    def values(
        self, rows: slice, cols: slice, scale: float, part: int = 0, buffer: str = "tile"
    ) -> torch.Tensor:
        """The pixels ``[rows, cols]`` (a tile of :meth:`tile_slices` or part of one) times
        ``scale``: ``[t, c, Q]`` float32 in the workspace buffer ``buffer`` of ``part``, which the
        next call with the same two overwrites; :meth:`prepare` first.

        One matrix product of the rows' weights with the patch rows they reach.
        """
        assert self._values is not None, "prepare() first"
        q = self.channels
        ranges, table = self._scaled_weights(scale)
        k0, k1 = ranges[rows.start // self.tile_h]
        t, c = rows.stop - rows.start, cols.stop - cols.start
        scratch = self.workspace.empty(
            f"{buffer}:{part}", (self.tile_h * self.tile_w * q,), device=self.device
        )
        out = scratch[: t * c * q].view(t, -1)
        patch_rows = self._values[k0:k1, cols.start * q : cols.stop * q]
        torch.mm(table[rows, : k1 - k0], patch_rows, out=out)
        return out.view(t, c, q)

    def tiles(
        self,
        scale: float = 1.0,
        rows_wanted: list[bool] | None = None,
        chunks: list[tuple[int, int]] | None = None,
        part: int = 0,
    ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """As :meth:`~scclip_cli.maps.postprocess.BilinearResizer.tiles`; :meth:`prepare` first."""
        if self._values is None:
            self.prepare()
        for rows, cols in self.tile_slices(chunks):
            if rows_wanted is not None and not any(rows_wanted[rows]):
                continue
            yield rows, cols, self.values(rows, cols, scale, part)

    def grid_values(
        self, ys: torch.Tensor, xs: torch.Tensor, scale: float, rows_at_once: int
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Values at the pixels ``ys × xs`` (``[n]`` and ``[m]`` int64 on the CPU, ``ys`` sorted)
        times ``scale``: yields ``(which, values)``, ``values`` ``[len(ys[which]), m, Q]`` float32
        of the rows ``ys[which]``, ``rows_at_once`` rows at a time, in order; :meth:`prepare`
        first.

        The arithmetic of :meth:`values` (the rows' weights, rounded once from float64, times the
        patch rows they reach), on the columns ``xs`` only and with other matrix shapes, so the
        rounding may differ from a tile's in the last bits.
        """
        assert self._values is not None, "prepare() first"
        q, g = self.channels, len(self.rows.patches)
        patch_rows = self._values.view(g, self.out_width, q)
        xs = xs.to(self.device)
        for r0 in range(0, len(ys), rows_at_once):
            rows = ys[r0 : r0 + rows_at_once]
            start, weights = self.rows.start[rows], self.rows.weights[rows]  # [n], [n, m] float64
            k0 = int(start.min())
            k1 = min(g, int(start.max()) + weights.shape[1])
            base = torch.full_like(start, k0)
            table = _placed_weights(start, weights, base, k1 - k0, scale, self.device)
            # the columns xs of the patch rows these rows reach (not of all: runs go in parallel)
            columns = patch_rows[k0:k1].index_select(1, xs).view(k1 - k0, -1)
            values = torch.mm(table, columns).view(len(rows), len(xs), q)
            yield slice(r0, r0 + len(rows)), values

    def pixel_values(self, ys: torch.Tensor, xs: torch.Tensor, scale: float) -> torch.Tensor:
        """``[n, Q]`` float32 values at the pixels ``(ys[i], xs[i])`` (``[n]`` int64) times
        ``scale``, as :meth:`grid_values` computes them; :meth:`prepare` first."""
        assert self._values is not None, "prepare() first"
        q, g = self.channels, len(self.rows.patches)
        ranges, table = self._scaled_weights(scale)
        k0 = torch.tensor([k for k, _ in ranges], device=self.device)
        ys, xs = ys.to(self.device), xs.to(self.device)
        weights = table.index_select(0, ys)  # [n, k]: zero past each row's last patch row
        reached = k0[ys // self.tile_h][:, None] + torch.arange(
            weights.shape[1], device=self.device
        )
        reached = reached.clamp_(max=g - 1)
        patch_values = self._values.view(g, self.out_width, q)[reached, xs[:, None]]  # [n, k, Q]
        return torch.bmm(weights[:, None, :], patch_values)[:, 0]

    def confidence_floor(self, logit_scale: float, runner: PartRunner = IN_ORDER) -> torch.Tensor:
        """A table like :meth:`known_best`'s (by canvas cells or patch-cell groups) of float64:
        where the cells reaching a pixel share their first best query ``q``, the smallest of
        their probabilities of ``q`` (softmax of ``logit_scale`` × scores), else 0.

        A pixel's scores are a convex combination of those cells' scores and log-sum-exp is
        convex, so ``log p_q(pixel) >= sum_k w_k log p_q(cell_k) >= min_k log p_q(cell_k)``: its
        winning probability is at least this floor (up to float rounding).
        """
        known = self._ensure_known()

        def top_probability(values: torch.Tensor) -> torch.Tensor:
            logits = values.double() * logit_scale
            return 1 / (logits - logits.amax(-1, keepdim=True)).exp().sum(-1)

        if self.canvas_cells:
            probability = self._canvas_pass(runner, top_probability, torch.float64)
            down = torch.cat([probability[1:], probability[-1:]])
            floor = torch.minimum(probability, down)
            floor[:, :-1] = torch.minimum(floor[:, :-1], floor[:, 1:])
        else:
            probability = top_probability(self._patch_scores())
            cells = probability[self.rows.reached_sets.to(self.device)]
            cells = cells[:, :, self.cols.reached_sets.to(self.device)]
            floor = cells.amin(dim=(1, 3))
        return torch.where(known >= 0, floor, 0.0)

    def _patch_scores(self) -> torch.Tensor:
        """``[G_rows, G_cols, Q]`` float32: every patch cell's scores, by patch positions
        (:class:`AxisMap`)."""
        grid = self.patches.grid
        scores = torch.empty(
            len(self.rows.patches), len(self.cols.patches), self.channels, device=self.device
        )
        row_of = _positions(self.rows.patches, len(grid))
        col_of = _positions(self.cols.patches, len(grid[0]))
        for i, window_row in enumerate(grid):
            for j, cell_scores in enumerate(window_row):
                rows, cols = row_of[i].to(self.device), col_of[j].to(self.device)
                scores[rows[:, None], cols[None, :]] = cell_scores
        return scores

    def _ensure_known(self) -> torch.Tensor:
        if self._known_best is None:
            self._canvas_known_best()
        assert self._known_best is not None
        return self._known_best

    def known_best_at(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """``[n, m]`` int64: :meth:`known_best` at the pixels ``ys × xs`` (``[n]``, ``[m]``
        int64)."""
        table = self._ensure_known()
        rows = table.index_select(0, self._row_group[ys.to(self.device)])
        return rows.index_select(1, self._col_group[xs.to(self.device)])

    def known_table(self) -> torch.Tensor:
        """``[row groups, column groups]`` int64: the table behind :meth:`known_best` (canvas cells
        or groups of patch cells, see :meth:`group_values`); read-only."""
        return self._ensure_known()

    def group_rows(
        self, table: torch.Tensor, rows: slice, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[t, W]``: ``table`` (as :meth:`group_values`) at every pixel of the output rows
        ``rows``, written into ``out`` (contiguous, of ``table``'s dtype) when given."""
        index = table.index_select(0, self._row_group[rows])
        return torch.index_select(index, 1, self._col_group, out=out)

    def group_values(self, table: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """``[n]``: ``table`` (``[row groups, column groups]``, as :meth:`confidence_floor`) at each
        pixel of the tile ``[rows, cols]``, row-major."""
        index = table.index_select(0, self._row_group[rows])
        return index.index_select(1, self._col_group[cols]).reshape(-1)

    def known_best(self, rows: slice, cols: slice) -> torch.Tensor:
        """``[n]`` int64: the best query of each pixel of the tile ``[rows, cols]`` (row-major)
        where every patch cell reaching it has the same first best query, else -1."""
        return self.group_values(self._ensure_known(), rows, cols)


def _placed_weights(
    start: torch.Tensor,
    weights: torch.Tensor,
    base: torch.Tensor,
    width: int,
    scale: float,
    device: torch.device,
) -> torch.Tensor:
    """``[n, width]`` float32: row ``i`` of an :class:`AxisMap`'s ``weights`` (``[n, m]`` float64,
    on patch positions ``start[i], start[i] + 1, ...``) placed at columns ``start[i] - base[i]``
    onwards, times ``scale`` and rounded once. Columns from ``width`` on are dropped: the callers
    take ``width`` past the last patch position any row reads, where the weights are zero."""
    columns = start[:, None] - base[:, None] + torch.arange(weights.shape[1])
    inside = columns < width
    rows = torch.arange(len(start))[:, None].expand_as(columns)
    table = torch.zeros(len(start), width, dtype=torch.float64)
    table[rows[inside], columns[inside]] = weights[inside]
    return (table * scale).to(device=device, dtype=torch.float32)


def _covers(spans: list[tuple[int, int]], size: int) -> bool:
    """Whether sorted ``spans`` cover ``0:size`` and nothing outside it."""
    reach = 0
    for start, stop in spans:
        if start > reach or start < 0:
            return False
        reach = max(reach, stop)
    return reach == size


def _positions(patches: list[tuple[int, int]], windows: int) -> list[torch.Tensor]:
    """For each window, ``[grid]`` int64: the position of each of its patches in ``patches``."""
    found: list[dict[int, int]] = [{} for _ in range(windows)]
    for n, (k, a) in enumerate(patches):
        found[k][a] = n
    return [torch.tensor([where[a] for a in range(len(where))]) for where in found]


def _resize_width(rows: torch.Tensor, width: int, out: torch.Tensor) -> torch.Tensor:
    """``[n, w, Q]`` float32 (contiguous) resized along ``w`` to ``width`` with PyTorch's
    bilinear kernel (``align_corners=False``; each row is its own) into ``out``'s storage:
    ``[n, width, Q]``."""
    n, _, q = rows.shape
    result = out.view(-1)[: n * width * q].view(1, n, width, q)
    torch.ops.aten.upsample_bilinear2d.out(
        rows.permute(2, 0, 1)[None], [n, width], False, None, None, out=result.permute(0, 3, 1, 2)
    )
    return result[0]


def tile_boxes(mask: torch.Tensor, tile_h: int, tile_w: int) -> list[tuple[int, int, int, int]]:
    """The smallest box ``(r0, r1, c0, c1)`` (rows ``r0:r1``, columns ``c0:c1``) holding the
    ``True`` pixels of each ``tile_h × tile_w`` tile of ``mask`` (``[R, W]`` bool, tiles counted
    from its corner, the last ones cut short) that holds any, tiles in row-major order.

    A handful of whole-mask operations, where a loop over the tiles would pay Python's overhead
    for each of them (thousands on a 12-megapixel image, most of them holding no pixel)."""
    height, width = mask.shape
    tile_rows, tile_cols = -(-height // tile_h), -(-width // tile_w)
    padded = mask.new_zeros(tile_rows * tile_h, tile_cols * tile_w)
    padded[:height, :width] = mask
    blocks = padded.view(tile_rows, tile_h, tile_cols, tile_w)
    row_any = blocks.any(dim=3).transpose(1, 2)  # [tile rows, tile cols, tile_h]
    col_any = blocks.any(dim=1)  # [tile rows, tile cols, tile_w]
    ty, tx = torch.nonzero(row_any.any(dim=2), as_tuple=True)
    if not len(ty):
        return []
    in_rows, in_cols = row_any[ty, tx].to(torch.uint8), col_any[ty, tx].to(torch.uint8)
    # argmax gives the first of equal maxima: the first (and, flipped, the last) True
    y0, x0 = ty * tile_h, tx * tile_w
    boxes = torch.stack(
        [
            y0 + in_rows.argmax(1),
            y0 + tile_h - in_rows.flip(1).argmax(1),
            x0 + in_cols.argmax(1),
            x0 + tile_w - in_cols.flip(1).argmax(1),
        ],
        dim=1,
    )
    return [(r0, r1, c0, c1) for r0, r1, c0, c1 in boxes.tolist()]


def shared_cell_best(best: torch.Tensor) -> torch.Tensor:
    """``[h, w]`` int64 best query of each source pixel → the same where the pixel, its right and
    lower neighbours and the one diagonally below share it (the last row and column count as
    their own neighbours, as bilinear taps clamp there), else -1."""
    down = torch.cat([best[1:], best[-1:]])
    shared = best == down
    shared[:, :-1] &= (best[:, :-1] == best[:, 1:]) & (best[:, :-1] == down[:, 1:])
    return torch.where(shared, best, -1)
