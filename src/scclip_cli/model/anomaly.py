"""Anomaly tokens: detectors, their 3×3 mean repair, and two training-free extensions.

* Detectors (:func:`anomaly_scores`): the reference's Local-Outlier-Factor variant (``lof``),
  scikit-learn's textbook LOF (``sklearn-lof``) and the token norm (``token-norm``).
* Repair (:func:`repair_anomalies`): the reference's plain mean of the valid 3×3 neighbours.
* Adaptive ratio (:func:`adaptive_anomaly_ratio`): the share of anomalies follows the crop's
  complexity (:func:`crop_complexity`).
* Boundary-aware repair (:func:`boundary_sides`, :func:`repair_with_sides`): an anomaly on a
  semantic boundary is repaired from the neighbours on its own side only.

All functions work on a batch of crops and compute every statistic per crop, so a batch gives the
same result as its crops one at a time. Grids are ``[B, grid_h, grid_w, C]`` (row-major cells,
``N = grid_h · grid_w``); token lists are ``[B, N, C]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

COMPLEXITY_TEMPERATURE = 0.05
"""Temperature of the softmax over each token's cosine similarities in :func:`spatial_entropy`.

Small enough that a token's distribution concentrates on the tokens of its own region (a cosine
gap of 0.3 is a weight ratio of e^6), large enough that a flat crop stays uniform."""
COMPLEXITY_ENTROPY_WEIGHT = 0.5
"""Weight of the entropy term in :func:`crop_complexity` (the local-contrast term gets the rest)."""
RING_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
"""``(dy, dx)`` of the 8 cells around a cell, row-major."""


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


def token_norm_anomalies(tokens: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
    """Alternative detector: the tokens with the largest L2 norm (top ``ratio`` share per crop).

    Args:
        tokens: ``[B, N, C]``.
    Returns:
        ``[B, N]`` bool.
    """
    return anomaly_mask(tokens.float().norm(dim=-1), ratio)


# ---------------------------------------------------------------------------- detectors


def sklearn_local_outlier_factor(tokens: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Textbook LOF (scikit-learn's ``LocalOutlierFactor``, Euclidean) of each token, per crop.

    Args:
        tokens: ``[B, N, C]`` float patch tokens (any device; computed on the CPU).
        neighbours: k; clamped to ``N - 1`` for very small grids.
    Returns:
        ``[B, N]`` float32 LOF scores on ``tokens.device`` (higher is more anomalous, ~1 inliers).
    """
    from sklearn.neighbors import LocalOutlierFactor

    out = []
    for crop in tokens.float().cpu().numpy():
        lof = LocalOutlierFactor(n_neighbors=max(1, min(neighbours, crop.shape[0] - 1)))
        lof.fit(crop)
        out.append(torch.from_numpy(-lof.negative_outlier_factor_).float())
    return torch.stack(out).to(tokens.device)


def anomaly_scores(
    tokens: torch.Tensor, detector: str, lof_neighbours: int, sklearn_neighbours: int
) -> torch.Tensor:
    """Anomaly score of each token by the named detector (higher is more anomalous).

    Args:
        tokens: ``[B, N, C]`` float patch tokens.
        detector: ``lof`` (:func:`local_outlier_factor`, k = ``lof_neighbours``), ``sklearn-lof``
            (:func:`sklearn_local_outlier_factor`, k = ``sklearn_neighbours``) or ``token-norm``
            (the L2 norm; the top ``ratio`` share are the largest norms).
    Returns:
        ``[B, N]`` float32.
    """
    if detector == "token-norm":
        return tokens.float().norm(dim=-1)
    if detector == "sklearn-lof":
        return sklearn_local_outlier_factor(tokens, sklearn_neighbours)
    if detector == "lof":
        return local_outlier_factor(tokens, lof_neighbours)
    raise ValueError(f"unknown anomaly detector {detector!r}")


# ---------------------------------------------------------------------------- adaptive ratio


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
        ``[B]`` float32 in ``[base, maximum]``, for :func:`anomaly_mask`.
    """
    if maximum < base:
        raise ValueError(f"maximum ratio {maximum} below base ratio {base}")
    ratio = base + (maximum - base) * crop_complexity(grid)
    return ratio.clamp(base, maximum)


# ---------------------------------------------------------------------------- boundary-aware repair


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
        ``boundary`` all False; :func:`repair_with_sides` then equals :func:`repair_anomalies`.
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
    unit = _unit(guide).reshape(batch_size, height * width, channels)
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
