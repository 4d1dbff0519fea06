"""The calibrated ViT against the authors' code (golden crop), batching, and the baseline methods."""

import numpy as np
import pytest
import torch

from scclip_cli.config import CalibrationConfig, ConfigError, MethodConfig
from scclip_cli.model.dense_features import DenseFeatureExtractor

ATOL = 2e-5  # golden README: a faithful reimplementation reaches 2e-5 on dense_normalized


@pytest.fixture(scope="module")
def golden_crop(golden_dir):
    return dict(np.load(golden_dir / "crop.npz"))


@pytest.fixture(scope="module")
def extractor(tiny_clip):
    return DenseFeatureExtractor(tiny_clip.model.visual, CalibrationConfig())


def _normalized(dense: torch.Tensor) -> np.ndarray:
    d = dense.reshape(-1, dense.shape[-1]).double().numpy()
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def test_golden_crop_parity(extractor, golden_crop):
    crop = torch.from_numpy(golden_crop["input"])[None]
    dense, trace = extractor.features_and_trace(crop)
    assert dense.shape == (1, 14, 14, 64) and dense.dtype == torch.float32
    np.testing.assert_allclose(
        trace.penultimate_tokens[0].numpy(), golden_crop["penultimate_tokens"], atol=ATOL
    )
    np.testing.assert_allclose(
        trace.anomaly_scores[0].numpy(), golden_crop["lof_scores"], rtol=1e-4
    )
    assert torch.where(trace.anomalies[0])[0].tolist() == golden_crop["anomaly_index"].tolist()
    np.testing.assert_allclose(_normalized(dense), golden_crop["dense_normalized"], atol=ATOL)
    np.testing.assert_allclose(
        dense[0].reshape(196, 64).numpy(), golden_crop["dense"], atol=1e-4, rtol=1e-5
    )


def test_batching_changes_nothing(extractor, golden_crop):
    crop = torch.from_numpy(golden_crop["input"])[None]
    g = torch.Generator().manual_seed(1)
    others = torch.randn(3, 3, 224, 224, generator=g)
    batch = torch.cat([others[:1], crop, others[1:]])
    batched, trace = extractor.features_and_trace(batch)
    for i in range(4):
        single, single_trace = extractor.features_and_trace(batch[i : i + 1])
        torch.testing.assert_close(batched[i], single[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(trace.anomalies[i], single_trace.anomalies[0])


def test_non_square_crop_uses_row_major_grid(extractor, monkeypatch):
    """A crop smaller than 224 in one direction (an image narrower than the window): token
    ``r · grid_w + c`` is cell ``(r, c)`` wherever the tokens become a grid. Shown on the anomaly
    repair, whose neighbours are grid cells: its grid and mask must be the penultimate tokens and
    the anomaly flags laid out row by row (a column-major layout has the same shape)."""
    from scclip_cli.model import anomaly_repair as anomaly

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    repair = anomaly.repair_anomalies

    def recording_repair(grid, mask):
        seen.append((grid.clone(), mask.clone()))
        return repair(grid, mask)

    monkeypatch.setattr(anomaly, "repair_anomalies", recording_repair)
    crop = torch.randn(2, 3, 224, 96, generator=torch.Generator().manual_seed(2))
    dense, trace = extractor.features_and_trace(crop)
    assert dense.shape == (2, 14, 6, 64)
    assert trace.anomalies.shape == (2, 84) and bool(trace.anomalies.any())
    grid, mask = seen[0]  # the penultimate layer's repair (the middle layer's follows)
    assert grid.shape == (2, 14, 6, trace.penultimate_tokens.shape[-1])
    for r, c in ((0, 5), (1, 0), (13, 2), (7, 4)):
        assert torch.equal(grid[:, r, c], trace.penultimate_tokens[:, r * 6 + c])
    assert torch.equal(mask, trace.anomalies.reshape(2, 14, 6))
    assert all(m.shape == mask.shape and torch.equal(m, mask) for _, m in seen)
    # transposing the input transposes the grid's shape
    dense_t, _ = extractor.features_and_trace(crop.transpose(2, 3).contiguous())
    assert dense_t.shape == (2, 6, 14, 64)
    assert torch.isfinite(dense).all() and torch.isfinite(dense_t).all()


def test_calibration_depth_is_checked(tiny_clip):
    with pytest.raises(ConfigError, match="24 blocks but the model has 12"):
        DenseFeatureExtractor(
            tiny_clip.model.visual,
            CalibrationConfig(
                depth=24,
                similarity_layer=16,
                post_similarity_layer=6,
                fusion_start=8,
                fusion_stop=19,
            ),
        )


def test_each_calibration_constant_matters(tiny_clip, golden_crop):
    crop = torch.from_numpy(golden_crop["input"])[None]
    base = _normalized(DenseFeatureExtractor(tiny_clip.model.visual, CalibrationConfig())(crop))
    for change in (
        {"residual_class_weight": 0.25},
        {"similarity_threshold": 0.45},
        {"similarity_layer": 7},
        {"post_similarity_layer": 4},
        {"fusion_stop": 9},
        {"anomaly_ratio": 0.1},
    ):
        ext = DenseFeatureExtractor(tiny_clip.model.visual, CalibrationConfig().replace(**change))
        assert np.abs(_normalized(ext(crop)) - base).max() > 10 * ATOL, change


# ---------------------------------------------------------------------------- methods


def _features(tiny_clip, crop, **method):
    ext = DenseFeatureExtractor(tiny_clip.model.visual, CalibrationConfig(), MethodConfig(**method))
    return ext(crop)


@pytest.fixture()
def crop():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))


def test_clip_equals_open_clip_tokens(tiny_clip, crop):
    visual = tiny_clip.model.visual
    visual.output_tokens = True
    try:
        with torch.inference_mode():
            _, tokens = visual(crop)
    finally:
        visual.output_tokens = False
    ours = _features(tiny_clip, crop, name="clip").reshape(2, 196, -1)
    # open_clip returns the patch tokens after ln_post but before the projection
    torch.testing.assert_close(ours, tokens @ visual.proj, atol=1e-5, rtol=1e-5)


class _Swap:
    """Temporarily modify a tensor in place."""

    def __init__(self, tensor, new):
        self.tensor, self.new = tensor, new

    def __enter__(self):
        self.old = self.tensor.detach().clone()
        with torch.no_grad():
            self.tensor.copy_(self.new)

    def __exit__(self, *exc):
        with torch.no_grad():
            self.tensor.copy_(self.old)


def _qk_perturbed(tiny_clip):
    attn = tiny_clip.model.visual.transformer.resblocks[-1].attn
    w = attn.in_proj_weight
    width = w.shape[1]
    new = w.detach().clone()
    new[: 2 * width] = torch.randn(2 * width, width, generator=torch.Generator().manual_seed(9))
    return _Swap(w, new)


def test_maskclip_uses_no_attention_weights(tiny_clip, crop):
    before = _features(tiny_clip, crop, name="maskclip")
    sc_before = _features(tiny_clip, crop)
    with _qk_perturbed(tiny_clip):
        after = _features(tiny_clip, crop, name="maskclip")
        sc_after = _features(tiny_clip, crop)
    torch.testing.assert_close(before, after)
    assert (sc_before - sc_after).abs().max() > 1e-3  # SC-CLIP does use keys


def test_sclip_is_symmetric_in_queries_and_keys(tiny_clip, crop):
    attn = tiny_clip.model.visual.transformer.resblocks[-1].attn
    width = attn.in_proj_weight.shape[1]
    swapped = torch.cat(
        [
            attn.in_proj_weight[width : 2 * width],
            attn.in_proj_weight[:width],
            attn.in_proj_weight[2 * width :],
        ]
    )
    swapped_b = torch.cat(
        [
            attn.in_proj_bias[width : 2 * width],
            attn.in_proj_bias[:width],
            attn.in_proj_bias[2 * width :],
        ]
    )
    before = {m: _features(tiny_clip, crop, name=m) for m in ("sclip", "clip")}
    with _Swap(attn.in_proj_weight, swapped), _Swap(attn.in_proj_bias, swapped_b):
        after = {m: _features(tiny_clip, crop, name=m) for m in ("sclip", "clip")}
    torch.testing.assert_close(before["sclip"], after["sclip"], atol=1e-5, rtol=1e-5)
    assert (before["clip"] - after["clip"]).abs().max() > 1e-3


def test_clearclip_drops_ffn_residual_and_keys(tiny_clip, crop):
    block = tiny_clip.model.visual.transformer.resblocks[-1]
    before = _features(tiny_clip, crop, name="clearclip")
    sclip_before = _features(tiny_clip, crop, name="sclip")
    fc = block.mlp.c_fc.weight
    with _Swap(fc, torch.randn_like(fc)):
        torch.testing.assert_close(_features(tiny_clip, crop, name="clearclip"), before)
        assert (_features(tiny_clip, crop, name="sclip") - sclip_before).abs().max() > 1e-3
    w = block.attn.in_proj_weight
    width = w.shape[1]
    new = w.detach().clone()
    new[width : 2 * width] = torch.randn(width, width)
    with _Swap(w, new):
        torch.testing.assert_close(_features(tiny_clip, crop, name="clearclip"), before)


def test_ablations_each_change_output_and_all_off_is_key_key_baseline(tiny_clip, crop):
    full = _features(tiny_clip, crop)
    switches = (
        "repair_anomalies",
        "attention_enhancement",
        "feature_aggregation",
        "multi_level_fusion",
    )
    for s in switches:
        assert (_features(tiny_clip, crop, **{s: False}) - full).abs().max() > 1e-4, s
    off = _features(tiny_clip, crop, **dict.fromkeys(switches, False))
    # documented baseline: key-key attention on ln_1(T_{L-1}) patches, no residual/FFN, + 0.3 * class token
    ext = DenseFeatureExtractor(tiny_clip.model.visual, CalibrationConfig())
    with torch.inference_mode():
        x, _, _ = ext.embed(crop)
        t = ext.run_blocks(x, 11)[-1]
        y = ext.calibrated_attention(ext.blocks[-1].ln_1(t[:, 1:]), None) + 0.3 * t[:, :1]
        expected = ext.project(y).reshape(off.shape)
    torch.testing.assert_close(off, expected)


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown method"):
        MethodConfig(name="nope")
