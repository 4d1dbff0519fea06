"""The reference's repair of anomaly tokens: each becomes the mean of its valid 3×3 neighbours.

Grids are ``[B, grid_h, grid_w, C]`` (row-major cells); every crop of a batch is repaired on its own.
:mod:`scclip_cli.model.boundary_repair` is the boundary-aware variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RING_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
"""``(dy, dx)`` of the 8 cells around a cell, row-major."""


def _neighbour_sum(grid: torch.Tensor) -> torch.Tensor:
    """Sum over the 8 neighbours of each cell (zero outside the grid). ``[B, C, H, W] -> same``."""
    channels = grid.shape[1]
    kernel = torch.ones(channels, 1, 3, 3, dtype=grid.dtype, device=grid.device)
    kernel[:, :, 1, 1] = 0
    return F.conv2d(F.pad(grid, (1, 1, 1, 1)), kernel, groups=channels)


def repair_anomalies(grid: torch.Tensor, anomalies: torch.Tensor) -> torch.Tensor:
    """Replace each anomaly by the mean of its valid 3×3 neighbours (inside the grid, not anomalous).

    An anomaly without a valid neighbour keeps its value; every other cell is unchanged. All
    replacements are computed from the values before repair.

    Args:
        grid: ``[B, grid_h, grid_w, C]`` features.
        anomalies: ``[B, grid_h, grid_w]`` bool.
    Returns:
        ``[B, grid_h, grid_w, C]`` repaired features (same dtype).
    """
    valid = (~anomalies).to(grid.dtype)[:, None]  # [B, 1, H, W]
    features = grid.permute(0, 3, 1, 2)  # [B, C, H, W]
    neighbour_sum = _neighbour_sum(features * valid)
    neighbour_count = _neighbour_sum(valid)
    mean = neighbour_sum / neighbour_count.clamp_min(1)
    update = anomalies[:, None] & (neighbour_count > 0)
    return torch.where(update, mean, features).permute(0, 2, 3, 1)
