"""Boundary-aware repair: an anomaly on a semantic boundary is repaired from its own side only.

:func:`boundary_sides` splits each anomaly's 3×3 ring by a guide layer's similarities;
:func:`repair_with_sides` averages the chosen cells. With :func:`ring_neighbours` (every valid ring
cell) the result equals :func:`scclip_cli.model.anomaly_repair.repair_anomalies`. Grids are
``[B, grid_h, grid_w, C]``; all anomalies of a batch are handled at once, each within its crop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from scclip_cli.model.anomaly_repair import RING_OFFSETS


class RepairSides(NamedTuple):
    """Which ring cells each anomaly is repaired from (``A`` anomalies over the whole batch)."""

    batch: torch.Tensor
    """``[A]`` int64 crop of each anomaly."""
    cell: torch.Tensor
    """``[A]`` int64 row-major cell of each anomaly."""
    neighbours: torch.Tensor
    """``[A, 8]`` int64 row-major cell of each ring position (clamped into the grid; see weights)."""
    weights: torch.Tensor
    """``[A, 8]`` bool: ring cells averaged into the anomaly (inside the grid, not anomalous, and on
    the anomaly's side when ``boundary``)."""
    boundary: torch.Tensor
    """``[A]`` bool: whether the ring was split into two sides."""


def ring_neighbours(anomalies: torch.Tensor) -> RepairSides:
    """The plain repair as :class:`RepairSides`: every valid ring cell of every anomaly.

    Args:
        anomalies: ``[B, grid_h, grid_w]`` bool.
    Returns:
        :class:`RepairSides` with ``weights`` = valid (inside the grid and not anomalous) and
        ``boundary`` all False; :func:`repair_with_sides` then equals
        :func:`scclip_cli.model.anomaly_repair.repair_anomalies`.
    """
    _, height, width = anomalies.shape
    batch, rows, cols = torch.nonzero(anomalies, as_tuple=True)  # [A] each, row-major per crop
    offsets = torch.tensor(RING_OFFSETS, device=anomalies.device)  # [8, 2]
    n_rows = rows[:, None] + offsets[:, 0]  # [A, 8]
    n_cols = cols[:, None] + offsets[:, 1]
    inside = (n_rows >= 0) & (n_rows < height) & (n_cols >= 0) & (n_cols < width)
    n_rows, n_cols = n_rows.clamp(0, height - 1), n_cols.clamp(0, width - 1)
    valid = inside & ~anomalies[batch[:, None], n_rows, n_cols]
    return RepairSides(
        batch=batch,
        cell=rows * width + cols,
        neighbours=n_rows * width + n_cols,
        weights=valid,
        boundary=torch.zeros_like(batch, dtype=torch.bool),
    )


def boundary_sides(guide: torch.Tensor, anomalies: torch.Tensor, threshold: float) -> RepairSides:
    """Split each anomaly's valid ring into two sides by a guide layer; keep the anomaly's side.

    Per anomaly ``a`` with valid ring cells ``V`` (inside the grid, not anomalous), using the cosine
    similarity ``s`` of the *guide* features (a middle layer, where anomalies are not yet
    anomalous and which is never repaired):

    1. seed ``n1`` = the cell of ``V`` most similar to ``a``; seed ``n2`` = the cell of ``V`` least
       similar to ``n1``;
    2. each cell of ``V`` joins ``n1``'s side if ``s(v, n1) >= s(v, n2)``, else ``n2``'s side;
    3. the ring is a *boundary* when ``n2``'s side is not empty and the mean of ``s(u, w)`` over
       the cross pairs (``u`` on one side, ``w`` on the other) is below ``threshold``: the two sides
       are different regions. The mean cross similarity does not depend on how many cells fall on
       each side, unlike the mean over all pairs;
    4. a boundary anomaly is repaired from ``n1``'s side (the side of the anomaly's most similar
       neighbour); any other from all of ``V``, as the reference.

    Vectorised over all anomalies of the batch; each uses only its own crop.

    Args:
        guide: ``[B, grid_h, grid_w, G]`` guide features.
        anomalies: ``[B, grid_h, grid_w]`` bool.
        threshold: cosine below which the two sides count as different regions.
    Returns:
        :class:`RepairSides` for :func:`repair_with_sides`.
    """
    plain = ring_neighbours(anomalies)
    batch_size, height, width, channels = guide.shape
    unit = F.normalize(guide.float(), dim=-1).reshape(batch_size, height * width, channels)
    valid = plain.weights  # [A, 8]
    if valid.shape[0] == 0:
        return plain
    centre = unit[plain.batch, plain.cell]  # [A, G]
    ring = unit[plain.batch[:, None], plain.neighbours]  # [A, 8, G]
    to_anomaly = (ring @ centre[:, :, None]).squeeze(-1)  # [A, 8]
    pair = ring @ ring.transpose(1, 2)  # [A, 8, 8]
    seed1 = to_anomaly.masked_fill(~valid, float("-inf")).argmax(-1)  # [A]
    rows = torch.arange(valid.shape[0], device=valid.device)
    to_seed1 = pair[rows, seed1]  # [A, 8]
    seed2 = to_seed1.masked_fill(~valid, float("inf")).argmin(-1)
    to_seed2 = pair[rows, seed2]
    side1 = valid & (to_seed1 >= to_seed2)
    side2 = valid & ~side1
    cross_pairs = (side1[:, :, None] & side2[:, None, :]).float()  # [A, 8, 8]
    cross = (pair * cross_pairs).sum((1, 2)) / cross_pairs.sum((1, 2)).clamp_min(1.0)
    boundary = side2.any(-1) & (cross < threshold)
    weights = torch.where(boundary[:, None], side1, valid)
    return plain._replace(weights=weights, boundary=boundary)


def repair_with_sides(grid: torch.Tensor, sides: RepairSides) -> torch.Tensor:
    """Replace each anomaly by the mean of its selected ring cells (values before repair).

    An anomaly without a selected cell keeps its value; every other cell is unchanged.

    Args:
        grid: ``[B, grid_h, grid_w, C]`` features.
        sides: from :func:`ring_neighbours` or :func:`boundary_sides` (same grid shape).
    Returns:
        ``[B, grid_h, grid_w, C]`` repaired features (same dtype; the mean is taken in float32).
    """
    batch, height, width, channels = grid.shape
    flat = grid.reshape(batch, height * width, channels)
    if sides.batch.numel() == 0:
        return grid.clone()
    ring = flat[sides.batch[:, None], sides.neighbours].float()  # [A, 8, C]
    weights = sides.weights.float()[:, :, None]  # [A, 8, 1]
    count = weights.sum(1)  # [A, 1]
    mean = (ring * weights).sum(1) / count.clamp_min(1.0)  # [A, C]
    update = count[:, 0] > 0
    out = flat.clone()
    out[sides.batch[update], sides.cell[update]] = mean[update].to(grid.dtype)
    return out.reshape(batch, height, width, channels)
