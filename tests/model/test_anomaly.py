"""Anomaly detection and repair, on planted outliers and non-square grids."""

import pytest
import torch

from scclip_cli.model import anomaly_detectors, anomaly_repair


def _cloud(batch: int, n: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, c, generator=g)


def test_squared_distances_match_direct_difference():
    x = _cloud(2, 20, 8)
    direct = (x[:, :, None] - x[:, None]).pow(2).sum(-1)
    d = anomaly_detectors.pairwise_squared_distances(x)
    torch.testing.assert_close(d, direct, atol=1e-5, rtol=1e-5)
    assert torch.all(d.diagonal(dim1=1, dim2=2) == 0)


def test_lof_uses_own_k_distance():
    # With the reference's variant LOF_i = kd_i * mean_j (1 / kd_j) over i's k nearest neighbours.
    x = _cloud(1, 40, 5, seed=3)
    k = 6
    d = anomaly_detectors.pairwise_squared_distances(x)[0]
    d_no_self = d + torch.diag(torch.full((40,), float("inf")))
    knn_d, knn_i = torch.topk(d_no_self, k, largest=False)
    kd = knn_d[:, -1]
    expected = kd * (1.0 / kd[knn_i]).mean(-1)
    torch.testing.assert_close(
        anomaly_detectors.local_outlier_factor(x, k)[0], expected, rtol=1e-5, atol=1e-6
    )


def test_planted_outliers_are_found_per_crop():
    x = _cloud(3, 100, 16, seed=1) * 0.1
    planted = {0: [5, 17, 60, 61, 99], 1: [0, 1, 2, 3, 4], 2: [50, 51, 52, 53, 54]}
    for b, idx in planted.items():
        x[b, idx] += 25.0 * torch.randn(len(idx), 16, generator=torch.Generator().manual_seed(b))
    scores = anomaly_detectors.local_outlier_factor(x, neighbours=10)
    mask = anomaly_detectors.anomaly_mask(scores, 0.05)
    for b, idx in planted.items():
        assert sorted(torch.where(mask[b])[0].tolist()) == idx


def test_anomaly_mask_is_per_crop_quantile():
    scores = torch.stack([torch.arange(100.0), torch.arange(100.0) * 1000])
    mask = anomaly_detectors.anomaly_mask(scores, 0.05)
    # quantile 0.95 of 0..99 is 94.05 -> 95..99 flagged in both crops despite the scale difference
    assert mask.sum(1).tolist() == [5, 5]
    assert torch.equal(mask[0], mask[1])


def test_repair_non_square_grid_uses_valid_neighbours_only():
    grid = torch.arange(3 * 5, dtype=torch.float32).reshape(1, 3, 5, 1)
    anomalies = torch.zeros(1, 3, 5, dtype=torch.bool)
    anomalies[0, 0, 0] = True  # corner: neighbours (0,1), (1,0), (1,1)
    anomalies[0, 1, 3] = True  # interior, next to another anomaly at (1,4)
    anomalies[0, 1, 4] = True
    out = anomaly_repair.repair_anomalies(grid, anomalies)[0, :, :, 0]
    g = grid[0, :, :, 0]
    assert out[0, 0] == pytest.approx((g[0, 1] + g[1, 0] + g[1, 1]).item() / 3)
    ring = [g[0, 2], g[0, 3], g[0, 4], g[1, 2], g[2, 2], g[2, 3], g[2, 4]]  # (1,4) excluded
    assert out[1, 3] == pytest.approx(sum(v.item() for v in ring) / 7)
    ring4 = [g[0, 3], g[0, 4], g[2, 3], g[2, 4]]  # (1,3) excluded, right edge outside
    assert out[1, 4] == pytest.approx(sum(v.item() for v in ring4) / 4)
    untouched = ~anomalies[0]
    assert torch.equal(out[untouched], g[untouched])


def test_repair_keeps_isolated_anomaly_and_is_batch_independent():
    grid = torch.randn(2, 2, 2, 3)
    anomalies = torch.ones(2, 2, 2, dtype=torch.bool)
    anomalies[1] = False
    anomalies[1, 0, 0] = True
    out = anomaly_repair.repair_anomalies(grid, anomalies)
    assert torch.equal(out[0], grid[0])  # no valid neighbour anywhere: unchanged
    torch.testing.assert_close(out[1, 0, 0], grid[1].reshape(4, 3)[1:].mean(0))
    single = anomaly_repair.repair_anomalies(grid[1:], anomalies[1:])
    torch.testing.assert_close(single[0], out[1])


def test_token_norm_detector_flags_largest_norms():
    x = _cloud(1, 40, 4) * 0.01
    x[0, [3, 30]] = 10.0
    scores = anomaly_detectors.anomaly_scores(
        x, "token-norm", lof_neighbours=30, sklearn_neighbours=20
    )
    mask = anomaly_detectors.anomaly_mask(scores, 0.05)
    assert torch.where(mask[0])[0].tolist() == [3, 30]
