"""Anomaly tokens: which patch tokens of a crop are outliers.

Detectors (:func:`anomaly_scores`): the reference's Local-Outlier-Factor variant (``lof``),
scikit-learn's textbook LOF (``sklearn-lof``) and the token norm (``token-norm``);
:func:`anomaly_mask` flags the top share of scores per crop. Every statistic is computed per crop,
so a batch gives the same result as its crops one at a time. Token lists are ``[B, N, C]``.
"""

from __future__ import annotations

import torch


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
