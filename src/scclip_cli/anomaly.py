"""Anomaly tokens: the reference's Local-Outlier-Factor variant and their 3×3 mean repair.

All functions work on a batch of crops and compute every statistic per crop, so a batch gives the
same result as its crops one at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_squared_distances(tokens: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the tokens of each crop.

    Args:
        tokens: ``[B, N, C]`` float.
    Returns:
        ``[B, N, N]`` float32, exactly 0 on the diagonal.
    """
    # Gram expansion in float64: exact to far below float32 resolution, and O(N^2) memory
    # instead of the O(N^2 C) of differencing every pair.
    x = tokens.double()
    sq = x.pow(2).sum(-1)
    d = (sq[:, :, None] + sq[:, None, :] - 2.0 * (x @ x.transpose(1, 2))).clamp_min_(0.0)
    d.diagonal(dim1=1, dim2=2).zero_()
    return d.float()


def local_outlier_factor(tokens: torch.Tensor, neighbours: int) -> torch.Tensor:
    """The reference's LOF score of each token (higher is more anomalous).

    As in the authors' code, the reachability distance of a pair uses the point's *own* k-distance
    (textbook LOF uses the neighbour's), so ``lrd_i = k / kd_i`` and ``LOF_i = mean_j lrd_j / lrd_i``
    over the k nearest neighbours j of i (itself excluded). Distances are squared Euclidean.

    Args:
        tokens: ``[B, N, C]`` float patch tokens.
        neighbours: k; clamped to ``N - 1`` for very small grids.
    Returns:
        ``[B, N]`` float32 LOF scores.
    """
    n = tokens.shape[1]
    k = max(1, min(neighbours, n - 1))
    distances = pairwise_squared_distances(tokens)
    knn_distances, knn_index = torch.topk(distances, k=k + 1, dim=-1, largest=False)
    knn_distances, knn_index = knn_distances[..., 1:], knn_index[..., 1:]  # drop the token itself
    k_distance = knn_distances[..., -1:]  # [B, N, 1]
    reach = torch.maximum(knn_distances, k_distance)
    lrd = k / torch.nan_to_num(reach.mean(dim=-1), nan=1e-6)  # [B, N]
    neighbour_lrd = torch.gather(lrd, 1, knn_index.reshape(lrd.shape[0], -1)).reshape(
        knn_index.shape
    )
    return (neighbour_lrd / lrd[..., None]).mean(dim=-1)


def anomaly_mask(scores: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
    """Flag the tokens whose score exceeds the per-crop ``1 - ratio`` quantile (linear interpolation).

    Args:
        scores: ``[B, N]`` float.
        ratio: share of anomalies, a float or a ``[B]`` tensor (one ratio per crop).
    Returns:
        ``[B, N]`` bool.
    """
    scores = scores.float()
    if isinstance(ratio, torch.Tensor):
        # torch.quantile takes one q per call; crops with different ratios are handled one by one.
        thresholds = torch.stack(
            [torch.quantile(s, 1.0 - float(r)) for s, r in zip(scores, ratio.tolist(), strict=True)]
        )
    else:
        thresholds = torch.quantile(scores, 1.0 - ratio, dim=-1)
    return scores > thresholds[:, None]


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


def token_norm_anomalies(tokens: torch.Tensor, ratio: float) -> torch.Tensor:
    """Alternative detector: the tokens with the largest L2 norm (top ``ratio`` share per crop).

    Args:
        tokens: ``[B, N, C]``.
    Returns:
        ``[B, N]`` bool.
    """
    return anomaly_mask(tokens.float().norm(dim=-1), ratio)
