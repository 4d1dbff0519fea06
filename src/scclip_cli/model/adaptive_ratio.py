"""Adaptive anomaly ratio: the share of anomaly tokens follows each crop's complexity.

A flat crop keeps the calibration's ratio; a cluttered one (many distinct regions, many boundaries)
gets more, up to a maximum (:func:`adaptive_anomaly_ratio`, from :func:`crop_complexity`).
Grids are ``[B, grid_h, grid_w, C]``; every statistic is per crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scclip_cli.model.anomaly_repair import RING_OFFSETS

COMPLEXITY_TEMPERATURE = 0.05
"""Temperature of the softmax over each token's cosine similarities in :func:`spatial_entropy`.

Small enough that a token's distribution concentrates on the tokens of its own region (a cosine
gap of 0.3 is a weight ratio of e^6), large enough that a flat crop stays uniform."""
COMPLEXITY_ENTROPY_WEIGHT = 0.5
"""Weight of the entropy term in :func:`crop_complexity` (the local-contrast term gets the rest)."""


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Float32 copy of ``x`` scaled to unit L2 norm along the last axis (zero vectors stay zero)."""
    return F.normalize(x.float(), dim=-1)


def spatial_entropy(
    grid: torch.Tensor, temperature: float = COMPLEXITY_TEMPERATURE
) -> torch.Tensor:
    """Mean normalised entropy of each token's similarity distribution over the crop's grid.

    Token ``i``'s distribution is ``softmax_j(cos(t_i, t_j) / temperature)`` over all ``N`` cells
    (itself included); its entropy divided by ``log N`` is 1 when ``i`` resembles every cell equally
    (a flat crop) and near 0 when it resembles only itself. The mean over ``i`` is
    ``log(N / n_eff) / log N``-like: it falls as the crop splits into more distinct regions.

    Args:
        grid: ``[B, grid_h, grid_w, C]`` features.
    Returns:
        ``[B]`` float32 in [0, 1] (1 for a grid of one cell).
    """
    tokens = _unit(grid.reshape(grid.shape[0], -1, grid.shape[-1]))  # [B, N, C]
    n = tokens.shape[1]
    if n < 2:
        return tokens.new_ones(tokens.shape[0])
    logits = (tokens @ tokens.transpose(1, 2)) / temperature  # [B, N, N]
    log_p = torch.log_softmax(logits, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)  # [B, N]
    return (entropy.mean(-1) / math.log(n)).clamp(0.0, 1.0)


def local_contrast(grid: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance of each cell to its 3×3 neighbours inside the grid.

    The distance ``1 - cos`` is clipped to [0, 1] (orthogonal counts as fully different), averaged
    over each cell's in-grid neighbours, then over the cells.

    Args:
        grid: ``[B, grid_h, grid_w, C]`` features.
    Returns:
        ``[B]`` float32 in [0, 1] (0 for a flat crop or a grid of one cell).
    """
    unit = _unit(grid).permute(0, 3, 1, 2)  # [B, C, H, W]
    batch, _, height, width = unit.shape
    padded = F.pad(unit, (1, 1, 1, 1))  # zeros outside: cos 0, masked out below
    inside = F.pad(unit.new_ones(1, 1, height, width), (1, 1, 1, 1))
    distance_sum = unit.new_zeros(batch, height, width)
    count = unit.new_zeros(1, height, width)
    for dy, dx in RING_OFFSETS:
        rows, cols = slice(1 + dy, 1 + dy + height), slice(1 + dx, 1 + dx + width)
        valid = inside[:, 0, rows, cols]  # [1, H, W]
        cos = (unit * padded[:, :, rows, cols]).sum(1)  # [B, H, W]
        distance_sum += (1.0 - cos).clamp(0.0, 1.0) * valid
        count += valid
    per_cell = distance_sum / count.clamp_min(1.0)
    return per_cell.flatten(1).mean(-1)


def crop_complexity(
    grid: torch.Tensor,
    entropy_weight: float = COMPLEXITY_ENTROPY_WEIGHT,
    temperature: float = COMPLEXITY_TEMPERATURE,
) -> torch.Tensor:
    """How cluttered each crop is, from its (penultimate) patch tokens: 0 flat, 1 maximally complex.

    ``complexity = w · (1 - spatial_entropy) + (1 - w) · local_contrast``: the first term grows
    with the number of distinct regions (tokens resemble fewer cells), the second with how often
    adjacent tokens differ (boundaries, texture).

    Args:
        grid: ``[B, grid_h, grid_w, C]`` features.
    Returns:
        ``[B]`` float32 in [0, 1].
    """
    entropy_term = 1.0 - spatial_entropy(grid, temperature)
    complexity = entropy_weight * entropy_term + (1.0 - entropy_weight) * local_contrast(grid)
    return complexity.clamp(0.0, 1.0)


def adaptive_anomaly_ratio(grid: torch.Tensor, base: float, maximum: float) -> torch.Tensor:
    """Each crop's share of anomaly tokens: ``base + (maximum - base) · crop_complexity``.

    Args:
        grid: ``[B, grid_h, grid_w, C]`` penultimate patch tokens.
        base: the share for a flat crop (the calibration's ``anomaly_ratio``).
        maximum: the share for a crop of complexity 1 (``max_anomaly_ratio``), ``>= base``.
    Returns:
        ``[B]`` float32 in ``[base, maximum]``, for
        :func:`scclip_cli.model.anomaly_detectors.anomaly_mask`.
    """
    if maximum < base:
        raise ValueError(f"maximum ratio {maximum} below base ratio {base}")
    ratio = base + (maximum - base) * crop_complexity(grid)
    return ratio.clamp(base, maximum)
