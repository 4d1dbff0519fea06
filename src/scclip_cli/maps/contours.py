"""Connected components of a binary mask and their outlines as polygons (for YOLO and COCO).

Components are 8-connected (two pixels touching at a corner belong together), as OpenCV's
``findContours`` and the Ultralytics converters see them.

Outlines are traced on the pixel *edges* (cracks), which is exact: every boundary is a closed
loop of unit edges between a foreground and a background pixel, oriented with the foreground on the
right (clockwise on screen for an outer boundary, anticlockwise around a hole). The edges are found
with array operations and each edge's successor is looked up in one pass; only the final walk
along the loops is a Python loop over their turning points. At a corner where two foreground pixels
touch diagonally the walk turns towards the foreground, so such pixels stay in one loop
(8-connectivity).

Each loop is then moved half a pixel inwards, onto the centres of the component's boundary pixels:
``(x, y)`` are pixel indices (column, row). That is the convention of polygon rasterisers that fill
the polygon *with* its outline (PIL's ``ImageDraw.polygon(fill=..., outline=...)``,
OpenCV's ``fillPoly``, which Ultralytics uses to turn labels back into masks): filling the outline
of a component gives back exactly that component, one-pixel-wide parts included.

A component with holes becomes one polygon (YOLO has no holes): each hole's loop, which runs the
other way round, is joined to the outer loop by a zero-width cut (from the hole's topmost vertex to
the nearest outer vertex), so
both even-odd and non-zero filling leave the hole empty; only the pixels along the cut are drawn.
"""

from __future__ import annotations

import numpy as np

_DIRECTIONS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int64)
"""Unit steps ``(dx, dy)`` of edge directions 0 right, 1 down, 2 left, 3 up (y grows downwards)."""
_INWARD = np.array([[0, 1], [-1, 0], [0, -1], [1, 0]], dtype=np.int64)
"""For each direction, the unit normal pointing to the foreground (its right-hand side)."""


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a binary mask.

    Args:
        mask: ``[H, W]`` bool (or anything truthy).

    Returns:
        ``([H, W] int32 labels, count)``: 0 outside, ``1..count`` for the components.
    """
    from scipy import ndimage  # comes with scikit-learn

    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), bool))
    return labels.astype(np.int32, copy=False), int(count)


def component_boxes(labels: np.ndarray) -> list[tuple[slice, slice]]:
    """The bounding box (row slice, column slice) of each component ``1..count`` of a
    :func:`connected_components` map, in order."""
    from scipy import ndimage

    return [box for box in ndimage.find_objects(labels) if box is not None]


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``min_area`` pixels.

    Args:
        mask: ``[H, W]`` bool.
        min_area: smallest component kept, in pixels (``<= 1`` keeps everything).

    Returns:
        ``[H, W]`` bool.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_area <= 1 or not mask.any():
        return mask
    labels, count = connected_components(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


def boundary_loops(mask: np.ndarray) -> list[np.ndarray]:
    """Every boundary of a binary mask as a closed loop through boundary-pixel centres.

    Args:
        mask: ``[H, W]`` bool.

    Returns:
        One ``[N, 2]`` int64 array of ``(x, y)`` pixel indices per loop (first vertex not
        repeated at the end), only the vertices where the outline turns. Outer loops are
        clockwise on screen and holes anticlockwise (see the module docstring); a single pixel
        is a loop of 4 equal vertices.
    """
    mask = np.asarray(mask, dtype=bool)
    start, direction = _boundary_edges(mask)
    if start.size == 0:
        return []
    successor, pinch = _edge_successors(start, direction, stride=mask.shape[1] + 3)
    return _walk_loops(start, direction, successor, pinch)


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit edges between foreground and background: ``[E, 2]`` start corners ``(x, y)`` in
    the grid of corners of the mask padded by one pixel, and ``[E]`` directions (0 right, 1 down,
    2 left, 3 up), each edge oriented with the foreground on its right."""
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    inside = padded[1:-1, 1:-1]
    # Corner (x, y) of the padded grid: pixel (row r, col c) of ``mask`` spans corners x in
    # [c + 1, c + 2], y in [r + 1, r + 2]. An edge starts at its corner and runs in its direction.
    starts: list[np.ndarray] = []
    dirs: list[np.ndarray] = []
    for side, (neighbour, corner) in enumerate(
        (
            (padded[:-2, 1:-1], (1, 1)),  # top side exposed: runs right from the top-left corner
            (padded[1:-1, 2:], (2, 1)),  # right side: runs down from the top-right corner
            (padded[2:, 1:-1], (2, 2)),  # bottom side: runs left from the bottom-right corner
            (padded[1:-1, :-2], (1, 2)),  # left side: runs up from the bottom-left corner
        )
    ):
        rows, cols = np.nonzero(inside & ~neighbour)
        starts.append(np.stack([cols + corner[0], rows + corner[1]], axis=1))
        dirs.append(np.full(rows.size, side, dtype=np.int64))
    return np.concatenate(starts), np.concatenate(dirs)


def _edge_successors(
    start: np.ndarray, direction: np.ndarray, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[E]`` the index of the edge that follows each edge along its loop, and ``[E]`` whether
    the edge starts at a pinch (a corner where foreground pixels touch only diagonally)."""
    end = start + _DIRECTIONS[direction]
    start_id = start[:, 1] * stride + start[:, 0]
    end_id = end[:, 1] * stride + end[:, 0]
    # The edge leaving each corner in each direction, looked up among the edges' own keys (sorted),
    # so the cost follows the boundary's length, not the box's area.
    keys = start_id * 4 + direction
    by_key = np.argsort(keys)
    sorted_keys = keys[by_key]

    def edge_at(query: np.ndarray) -> np.ndarray:
        position = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
        return np.where(sorted_keys[position] == query, by_key[position], -1)

    successor = np.full(start.shape[0], -1, dtype=np.int64)
    # At a corner with two ways on (a pinch: foreground touching diagonally) turning left keeps
    # the two pixels in one loop; elsewhere there is exactly one way on.
    for turn in (3, 0, 1):  # left, straight, right
        candidate = edge_at(end_id * 4 + (direction + turn) % 4)
        successor = np.where(successor < 0, candidate, successor)
    assert (successor >= 0).all(), "every boundary edge continues"
    _, corner_index, leaving = np.unique(start_id, return_inverse=True, return_counts=True)
    return successor, leaving[corner_index] > 1


def _walk_loops(
    start: np.ndarray, direction: np.ndarray, successor: np.ndarray, pinch: np.ndarray
) -> list[np.ndarray]:
    """Walk the edges' loops, keeping the vertices where the outline turns (and both pixels of a
    pinch), moved onto the boundary pixels' centres."""
    incoming = direction[_predecessor(successor)]
    turning = direction != incoming
    # Vertices in doubled coordinates, then halved: a turn gives the centre of the pixel in its
    # corner (the corner moved half a pixel along both inward normals). A pinch gives two: the
    # centres of the pixel the walk leaves and of the pixel it enters, so a chain of pixels that
    # touch only at corners is walked through every one of them.
    corner2 = 2 * start - 3  # doubled, minus the padding and the half pixel
    vertex = (corner2 + _INWARD[incoming] + _INWARD[direction]) // 2
    leave = (corner2 + _INWARD[incoming] - _DIRECTIONS[incoming]) // 2
    enter = (corner2 + _INWARD[direction] + _DIRECTIONS[direction]) // 2
    keep = turning | pinch
    # The next kept edge after each edge, by pointer doubling (runs between turns can be long).
    jump = np.where(keep, np.arange(keep.size), successor)
    for _ in range(int(keep.size).bit_length() + 1):
        doubled = jump[jump]
        if np.array_equal(doubled, jump):
            break
        jump = doubled
    next_kept = jump[successor].tolist()
    seen = bytearray(start.shape[0])
    loops: list[np.ndarray] = []
    for first in np.flatnonzero(keep).tolist():
        if seen[first]:
            continue
        order = []
        edge = first
        while not seen[edge]:
            seen[edge] = 1
            order.append(edge)
            edge = next_kept[edge]
        chosen = np.asarray(order)
        at_pinch = pinch[chosen]
        points = np.where(at_pinch[:, None], leave[chosen], vertex[chosen])
        if at_pinch.any():  # add each pinch's second vertex right after its first
            slots = np.arange(chosen.size) + np.cumsum(at_pinch) - at_pinch
            merged = np.empty((chosen.size + int(at_pinch.sum()), 2), dtype=np.int64)
            merged[slots] = points
            merged[slots[at_pinch] + 1] = enter[chosen[at_pinch]]
            points = merged
        loops.append(points)
    return loops


def _predecessor(successor: np.ndarray) -> np.ndarray:
    previous = np.empty_like(successor)
    previous[successor] = np.arange(successor.size)
    return previous


def is_clockwise(loop: np.ndarray) -> bool:
    """Whether a loop runs clockwise on screen (y down): an outer boundary. Degenerate loops
    (zero area: a pixel, a line) count as outer."""
    x, y = loop[:, 0].astype(np.float64), loop[:, 1].astype(np.float64)
    area2 = float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])
    return area2 >= 0


def component_polygons(mask: np.ndarray, min_area: int = 1) -> list[np.ndarray]:
    """One polygon per 8-connected component of ``mask``, holes joined in (module docstring).

    Args:
        mask: ``[H, W]`` bool.
        min_area: components with fewer pixels are left out.

    Returns:
        ``[N, 2]`` int64 ``(x, y)`` pixel-index polygons, components in the order of their first
        pixel (row-major).
    """
    labels, count = connected_components(mask)
    if count == 0:
        return []
    from scipy import ndimage

    polygons: list[np.ndarray] = []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or sizes[index] < max(min_area, 1):
            continue
        rows, cols = box
        component = labels[box] == index
        loops = boundary_loops(component)
        outer = [loop for loop in loops if is_clockwise(loop)]
        holes = [loop for loop in loops if not is_clockwise(loop)]
        # One component has one outer loop; the rest of the loops are its holes.
        outer.sort(key=len, reverse=True)
        polygon = outer[0]
        for hole in holes:
            polygon = _join_hole(polygon, hole)
        polygons.append(polygon + np.array([cols.start, rows.start], dtype=np.int64))
    return polygons


def _join_hole(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``outer`` with ``hole`` spliced in through a cut from the hole's topmost vertex to the
    outer vertex nearest to it (linear in the vertex counts)."""
    j = int(np.lexsort((hole[:, 0], hole[:, 1]))[0])
    diff = outer - hole[j]
    i = int(np.argmin((diff * diff).sum(axis=1)))
    return np.concatenate([outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]])
