"""Methods, ablation switches and the training-free extensions: shapes, batching, defining properties.

Model tests use small non-square crops (160 × 128 pixels, a 10 × 8 grid) to stay fast; the golden
parity of the default path is in ``test_dense_features.py`` and ``test_segmenter_golden.py``.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from scclip_cli.cli import options
from scclip_cli.config import CalibrationConfig, ConfigError, MethodConfig, ProtocolConfig
from scclip_cli.maps import pamr
from scclip_cli.model import adaptive_ratio, anomaly_detectors, anomaly_repair, boundary_repair
from scclip_cli.model.dense_features import DenseFeatureExtractor

CROP_H, CROP_W = 160, 128
GRID_H, GRID_W = CROP_H // 16, CROP_W // 16

SWITCHES = (
    "repair_anomalies",
    "attention_enhancement",
    "feature_aggregation",
    "multi_level_fusion",
)

CONFIGS = {
    "sc-clip": {},
    "clip": {"name": "clip"},
    "maskclip": {"name": "maskclip"},
    "sclip": {"name": "sclip"},
    "clearclip": {"name": "clearclip"},
    **{f"no-{s}": {s: False} for s in SWITCHES},
    "all-off": dict.fromkeys(SWITCHES, False),
    "adaptive": {"adaptive_anomaly_ratio": True},
    "boundary": {"boundary_aware_repair": True},
    "sklearn-lof": {"anomaly_detector": "sklearn-lof"},
    "token-norm": {"anomaly_detector": "token-norm"},
    "all-extensions": {
        "adaptive_anomaly_ratio": True,
        "boundary_aware_repair": True,
        "anomaly_detector": "token-norm",
    },
}


def _extractor(tiny_clip, **method):
    return DenseFeatureExtractor(
        tiny_clip.model.visual, CalibrationConfig(), MethodConfig(**method)
    )


def _flat(value=1.0, h=CROP_H, w=CROP_W):
    crop = torch.full((1, 3, h, w), value)
    crop[:, 1] *= -0.5
    return crop


def _noise(seed, h=CROP_H, w=CROP_W):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _two_colour(h=CROP_H, w=CROP_W, split=56):
    crop = torch.zeros(1, 3, h, w)
    crop[:, :, :, split:] = 1.5
    crop[:, 0, :, :split] = -1.0
    return crop


@pytest.fixture(scope="module")
def crops():
    """Two different crops: a noisy one and a two-colour one with noise."""
    g = torch.Generator().manual_seed(11)
    two = _two_colour() + 0.2 * torch.randn(1, 3, CROP_H, CROP_W, generator=g)
    return torch.cat([_noise(1), two])


@pytest.fixture(scope="module")
def reference_features(tiny_clip, crops):
    return _extractor(tiny_clip)(crops)


# ---------------------------------------------------------------------------- every method / switch


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_shapes_batching_invariance_and_effect(tiny_clip, crops, reference_features, config):
    ext = _extractor(tiny_clip, **CONFIGS[config])
    batched = ext(crops)
    assert batched.shape == (2, GRID_H, GRID_W, 64) and batched.dtype == torch.float32
    assert torch.isfinite(batched).all()
    for i in range(crops.shape[0]):
        single = ext(crops[i : i + 1])
        torch.testing.assert_close(batched[i], single[0], atol=1e-5, rtol=1e-5)
    if config == "sc-clip":
        assert torch.equal(batched, reference_features)
    else:  # every method, switch and extension changes the features
        assert (batched - reference_features).abs().max() > 1e-4


def test_extension_defaults_are_the_reference(tiny_clip, crops, reference_features):
    explicit = MethodConfig(
        adaptive_anomaly_ratio=False,
        boundary_aware_repair=False,
        anomaly_detector="lof",
        pamr_steps=0,
    )
    assert explicit == MethodConfig()
    out = DenseFeatureExtractor(tiny_clip.model.visual, CalibrationConfig(), explicit)(crops)
    assert torch.equal(out, reference_features)


def test_attention_helpers_match_open_clip_attention(tiny_clip, crops):
    """The q/k/v split and head merge used by every variant agree with open_clip's own attention."""
    ext = _extractor(tiny_clip)
    block = ext.blocks[-1]
    with torch.inference_mode():
        x, _, _ = ext.embed(crops)
        y = block.ln_1(ext.run_blocks(x, 11)[-1])
        q, k, v = ext._qkv(y)
        scale = q.shape[-1] ** -0.5
        ours = ext._merge_heads(torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v)
        theirs = block.attn(y, y, y, need_weights=False)[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_baselines_follow_their_definitions(tiny_clip, crops):
    """MaskCLIP, SCLIP and ClearCLIP written out per head, independently of the extractor."""
    ext = _extractor(tiny_clip)
    block = ext.blocks[-1]
    attn = block.attn
    heads = attn.num_heads
    with torch.inference_mode():
        x, _, _ = ext.embed(crops)
        tokens = ext.run_blocks(x, 11)[-1]  # [B, T, W]
        y = block.ln_1(tokens)
        width = y.shape[-1]
        d = width // heads
        w_q, w_k, w_v = attn.in_proj_weight.split(width)
        b_q, b_k, b_v = attn.in_proj_bias.split(width)
        q, k, v = y @ w_q.T + b_q, y @ w_k.T + b_k, y @ w_v.T + b_v

        def per_head(weights_of):
            out = torch.cat(
                [
                    weights_of(q[..., h * d : (h + 1) * d], k[..., h * d : (h + 1) * d])
                    @ v[..., h * d : (h + 1) * d]
                    for h in range(heads)
                ],
                dim=-1,
            )
            return attn.out_proj(out)

        def self_softmax(a):
            return torch.softmax(a @ a.transpose(-1, -2) / math.sqrt(d), dim=-1)

        maskclip = attn.out_proj(v)
        sclip = tokens + per_head(lambda qh, kh: self_softmax(qh) + self_softmax(kh))
        sclip = sclip + block.mlp(block.ln_2(sclip))
        clearclip = per_head(lambda qh, kh: self_softmax(qh))
        expected = {"maskclip": maskclip, "sclip": sclip, "clearclip": clearclip}
        for name, out in expected.items():
            want = ext.project(out[:, 1:]).reshape(2, GRID_H, GRID_W, -1)
            got = _extractor(tiny_clip, name=name)(crops)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)


# ---------------------------------------------------------------------------- detectors


def _planted(batch=2, n=196, c=32):
    x = 0.1 * torch.randn(batch, n, c, generator=torch.Generator().manual_seed(4))
    planted = {0: [3, 40, 41, 90, 120, 121, 150, 170, 190, 195], 1: list(range(60, 70))}
    g = torch.Generator().manual_seed(5)
    for b, idx in planted.items():
        x[b, idx] += 3.0 * torch.randn(len(idx), c, generator=g)
    return x, planted


@pytest.mark.parametrize("detector", ["lof", "sklearn-lof", "token-norm"])
def test_every_detector_finds_planted_outliers(detector):
    x, planted = _planted()
    scores = anomaly_detectors.anomaly_scores(x, detector, lof_neighbours=30, sklearn_neighbours=20)
    assert scores.shape == (2, 196) and scores.dtype == torch.float32
    mask = anomaly_detectors.anomaly_mask(scores, 0.05)  # 0.95 quantile of 196 scores: the top 10
    for b, idx in planted.items():
        assert torch.where(mask[b])[0].tolist() == idx


def test_detectors_are_dispatched_by_the_extractor(tiny_clip, crops):
    traces = {}
    for detector in ("lof", "sklearn-lof", "token-norm"):
        _, trace = _extractor(tiny_clip, anomaly_detector=detector).features_and_trace(crops)
        patches = trace.penultimate_tokens
        torch.testing.assert_close(
            trace.anomaly_scores, anomaly_detectors.anomaly_scores(patches, detector, 30, 20)
        )
        traces[detector] = trace
    assert not torch.equal(traces["lof"].anomaly_scores, traces["token-norm"].anomaly_scores)
    # the reference's LOF variant and textbook LOF are different scores
    assert not torch.allclose(traces["lof"].anomaly_scores, traces["sklearn-lof"].anomaly_scores)


def test_unknown_detector_is_refused():
    with pytest.raises(ConfigError, match="unknown anomaly detector"):
        MethodConfig(anomaly_detector="iforest")
    with pytest.raises(ValueError, match="unknown anomaly detector"):
        anomaly_detectors.anomaly_scores(torch.zeros(1, 4, 2), "iforest", 3, 3)


# ---------------------------------------------------------------------------- adaptive ratio


def test_complexity_of_constructed_grids():
    flat = torch.ones(2, 6, 5, 256)
    assert adaptive_ratio.crop_complexity(flat).tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    torch.testing.assert_close(
        adaptive_ratio.adaptive_anomaly_ratio(flat, 0.05, 0.15), torch.full((2,), 0.05)
    )
    # two flat halves: few regions (low entropy term), contrast only along the boundary
    halves = torch.zeros(1, 6, 6, 256)
    halves[..., :3, 0] = 1.0
    halves[..., 3:, 1] = 1.0
    assert adaptive_ratio.spatial_entropy(halves).item() == pytest.approx(
        math.log(18) / math.log(36), abs=1e-4
    )
    assert adaptive_ratio.local_contrast(halves).item() == pytest.approx(
        _halves_contrast(), abs=1e-5
    )
    # independent random tokens: every token unlike its neighbours and the rest
    noise = torch.randn(1, 6, 6, 256, generator=torch.Generator().manual_seed(0))
    c_noise = adaptive_ratio.crop_complexity(noise).item()
    assert c_noise > 0.85
    ratios = adaptive_ratio.adaptive_anomaly_ratio(
        torch.cat([flat[:1], noise[:, :6, :5]]), 0.05, 0.15
    )
    assert ratios[0] == pytest.approx(0.05, abs=1e-6) and 0.13 < ratios[1] <= 0.15
    with pytest.raises(ValueError, match="below base"):
        adaptive_ratio.adaptive_anomaly_ratio(flat, 0.1, 0.05)


def _halves_contrast():
    """Local contrast of the 6 × 6 two-halves grid, counted by hand."""
    total = 0.0
    for r in range(6):
        for c in range(6):
            ring = [
                (r + dy, c + dx)
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
                if (dy, dx) != (0, 0) and 0 <= r + dy < 6 and 0 <= c + dx < 6
            ]
            across = sum((cc < 3) != (c < 3) for _, cc in ring)
            total += across / len(ring)
    return total / 36


def test_adaptive_ratio_follows_crop_complexity_per_crop(tiny_clip):
    ext = _extractor(tiny_clip, adaptive_anomaly_ratio=True)
    batch = torch.cat([_flat(), _noise(3), _two_colour()])
    _, trace = ext.features_and_trace(batch)
    ratio = trace.extras["anomaly_ratio"]
    assert ratio.shape == (3,)
    assert 0.05 <= ratio[0] < 0.055  # a flat crop keeps the calibration's 5 %
    assert ratio[1] > ratio[0] + 0.03 and ratio[1] <= 0.15  # noise: more, never above 15 %
    assert ratio[0] <= ratio[2] < ratio[1]
    counts = trace.anomalies.sum(-1)
    assert counts[1] > counts[0]
    for i in range(3):
        _, single = ext.features_and_trace(batch[i : i + 1])
        torch.testing.assert_close(single.extras["anomaly_ratio"][0], ratio[i])
        assert torch.equal(single.anomalies[0], trace.anomalies[i])


def test_adaptive_ratio_with_a_zero_range_is_the_fixed_ratio(tiny_clip, crops):
    fixed_ext = _extractor(tiny_clip)
    adaptive_ext = _extractor(tiny_clip, adaptive_anomaly_ratio=True, max_anomaly_ratio=0.05)
    fixed, fixed_trace = fixed_ext.features_and_trace(crops)
    adaptive, adaptive_trace = adaptive_ext.features_and_trace(crops)
    assert torch.equal(fixed_trace.anomalies, adaptive_trace.anomalies)
    torch.testing.assert_close(fixed, adaptive)


def test_max_ratio_below_the_calibration_is_refused(tiny_clip):
    with pytest.raises(ConfigError, match="below the calibration"):
        _extractor(tiny_clip, adaptive_anomaly_ratio=True, max_anomaly_ratio=0.04)
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="max_anomaly_ratio"):
            MethodConfig(max_anomaly_ratio=bad)


# ---------------------------------------------------------------------------- boundary-aware repair


def _two_region_case():
    """A 5 × 6 grid: columns 0..2 are region L, 3..5 region R; anomalies at (2, 2) and (2, 0)."""
    guide = torch.zeros(1, 5, 6, 4)
    guide[..., :3, 0] = 1.0  # L
    guide[..., 3:, 1] = 1.0  # R (orthogonal)
    guide += 0.01 * torch.randn(guide.shape, generator=torch.Generator().manual_seed(0))
    features = torch.randn(1, 5, 6, 3, generator=torch.Generator().manual_seed(1))
    anomalies = torch.zeros(1, 5, 6, dtype=torch.bool)
    anomalies[0, 2, 2] = True  # on the boundary, region L in the guide
    anomalies[0, 4, 0] = True  # corner inside L
    return guide, features, anomalies


def test_boundary_anomaly_is_repaired_from_its_own_side():
    guide, features, anomalies = _two_region_case()
    sides = boundary_repair.boundary_sides(guide, anomalies, threshold=0.4)
    assert sides.boundary.tolist() == [True, False]
    out = boundary_repair.repair_with_sides(features, sides)[0]
    f = features[0]
    own_side = [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
    plain_ring = [*own_side, (1, 3), (2, 3), (3, 3)]
    own_mean = torch.stack([f[r, c] for r, c in own_side]).mean(0)
    plain_mean = torch.stack([f[r, c] for r, c in plain_ring]).mean(0)
    torch.testing.assert_close(out[2, 2], own_mean)
    assert (out[2, 2] - plain_mean).abs().max() > 1e-2
    # an anomaly inside a region: the plain mean of its valid neighbours, as the reference
    torch.testing.assert_close(out[4, 0], torch.stack([f[3, 0], f[3, 1], f[4, 1]]).mean(0))
    reference = anomaly_repair.repair_anomalies(features, anomalies)[0]
    torch.testing.assert_close(out[4, 0], reference[4, 0])
    untouched = ~anomalies[0]
    assert torch.equal(out[untouched], f[untouched])


def test_anomaly_on_the_other_side_takes_the_other_side():
    guide, features, anomalies = _two_region_case()
    guide[0, 2, 2] = guide[0, 2, 3]  # the anomaly now belongs to region R in the guide
    out = boundary_repair.repair_with_sides(
        features, boundary_repair.boundary_sides(guide, anomalies, 0.4)
    )[0]
    f = features[0]
    torch.testing.assert_close(out[2, 2], torch.stack([f[1, 3], f[2, 3], f[3, 3]]).mean(0))


def test_boundary_repair_without_a_boundary_is_the_plain_repair():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 7, 5, 6, generator=g)
    guide = torch.randn(2, 7, 5, 4, generator=g)
    anomalies = torch.rand(2, 7, 5, generator=g) < 0.2
    never = boundary_repair.boundary_sides(
        guide, anomalies, threshold=-1.0
    )  # cross similarity >= -1
    assert not never.boundary.any()
    torch.testing.assert_close(
        boundary_repair.repair_with_sides(features, never),
        anomaly_repair.repair_anomalies(features, anomalies),
    )
    torch.testing.assert_close(
        boundary_repair.repair_with_sides(features, boundary_repair.ring_neighbours(anomalies)),
        anomaly_repair.repair_anomalies(features, anomalies),
    )


def test_boundary_sides_are_per_crop():
    g = torch.Generator().manual_seed(4)
    features = torch.randn(3, 6, 6, 5, generator=g)
    guide = torch.randn(3, 6, 6, 4, generator=g)
    anomalies = torch.rand(3, 6, 6, generator=g) < 0.25
    batched = boundary_repair.repair_with_sides(
        features, boundary_repair.boundary_sides(guide, anomalies, 0.2)
    )
    for i in range(3):
        single = boundary_repair.boundary_sides(guide[i : i + 1], anomalies[i : i + 1], 0.2)
        torch.testing.assert_close(
            boundary_repair.repair_with_sides(features[i : i + 1], single)[0], batched[i]
        )
    empty = boundary_repair.boundary_sides(guide, torch.zeros_like(anomalies), 0.2)
    assert empty.weights.shape == (0, 8)
    assert torch.equal(boundary_repair.repair_with_sides(features, empty), features)


def test_boundary_repair_in_the_extractor(tiny_clip):
    crop = _two_colour()
    plain_ext = _extractor(tiny_clip)
    aware_ext = _extractor(tiny_clip, boundary_aware_repair=True)
    _, plain_trace = plain_ext.features_and_trace(crop)
    aware, trace = aware_ext.features_and_trace(crop)
    assert torch.equal(trace.anomalies, plain_trace.anomalies)  # same anomalies, other repair
    count = int(trace.anomalies.sum())
    assert trace.extras["boundary"].shape == (count,)
    assert trace.extras["repair_weights"].shape == (count, 8)
    # with the split disabled (threshold -1) the repair is the reference's
    never = _extractor(tiny_clip, boundary_aware_repair=True, boundary_similarity=-1.0)
    torch.testing.assert_close(never(crop), plain_ext(crop), atol=1e-5, rtol=1e-5)
    if trace.extras["boundary"].any():
        assert (aware - plain_ext(crop)).abs().max() > 1e-4


# ---------------------------------------------------------------------------- PAMR


def _two_colour_image(h=24, w=32, split=13):
    image = torch.zeros(3, h, w)
    image[0, :, split:] = 1.0
    image[2, :, :split] = 0.5
    truth = torch.zeros(h, w, dtype=torch.long)
    truth[:, split:] = 1
    return image, truth


def test_pamr_makes_noisy_scores_follow_the_colour_regions():
    image, truth = _two_colour_image()
    g = torch.Generator().manual_seed(0)
    clean = torch.stack([(truth == 0).float(), (truth == 1).float()])  # [2, H, W]
    noisy = clean + 0.8 * torch.randn(clean.shape, generator=g)
    before = (noisy.argmax(0) == truth).float().mean()
    refined = pamr.refine(noisy, image, steps=10, dilations=(1, 2))
    assert refined.shape == noisy.shape and refined.dtype == torch.float32
    assert before < 0.85
    assert torch.equal(refined.argmax(0), truth)


def test_pamr_kernel_does_not_cross_colour_edges():
    image, _ = _two_colour_image()
    kernel = pamr.affinity_kernel(image[None], (1, 2))
    assert kernel.shape == (1, 16, 24, 32)
    torch.testing.assert_close(kernel.sum(1), torch.ones(1, 24, 32))
    # pixel next to the edge: the weight of neighbours across it vanishes
    left_of_edge = kernel[0, :, 10, 12]
    offsets = [(dy * d, dx * d) for d in (1, 2) for dy, dx in anomaly_repair.RING_OFFSETS]
    across = torch.tensor([12 + dx >= 13 for _, dx in offsets])
    assert left_of_edge[across].sum() < 1e-6
    # inside a flat region: uniform weights
    torch.testing.assert_close(kernel[0, :, 12, 4], torch.full((16,), 1 / 16))


def test_pamr_identity_shapes_and_invariances():
    image, _ = _two_colour_image()
    scores = torch.randn(2, 5, 24, 32, generator=torch.Generator().manual_seed(1))
    images = torch.stack([image, image.flip(-1)])
    assert pamr.refine(scores, images, steps=0) is scores
    out = pamr.refine(scores, images, steps=2, dilations=(1, 3))
    assert out.shape == scores.shape
    # batch entries and class chunks are independent
    for b in range(2):
        torch.testing.assert_close(pamr.refine(scores[b], images[b], 2, (1, 3)), out[b])
    torch.testing.assert_close(pamr.refine(scores, images, 2, (1, 3), chunk_elements=1), out)
    # a constant map stays constant; a per-channel affine change of the image changes nothing
    const = torch.full((1, 3, 24, 32), 0.7)
    torch.testing.assert_close(pamr.refine(const, images[:1], 3, (1, 2)), const)
    affine = images * torch.tensor([2.0, 0.5, 3.0])[:, None, None] + 1.0
    torch.testing.assert_close(pamr.refine(scores, affine, 2, (1, 3)), out, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="differ"):
        pamr.refine(scores, images[:, :, :10], 1)


def test_segmenter_applies_pamr_to_the_resized_averaged_scores(tiny_clip, monkeypatch):
    from scclip_cli.model.text_embeddings import QueryEmbeddings
    from scclip_cli.predict.segmenter import Segmenter

    features = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    embeddings = QueryEmbeddings(
        class_names=("a", "b", "c"),
        query_class=np.arange(3, dtype=np.int64),
        features=features / np.linalg.norm(features, axis=1, keepdims=True),
        identity={},
    )
    protocol = ProtocolConfig(short_side=112, crop=112, stride=56)
    image = np.zeros((60, 90, 3), dtype=np.uint8)
    image[:, 40:] = (200, 30, 30)
    image[20:45, 10:30] = (20, 160, 220)
    plain = Segmenter(tiny_clip, embeddings, protocol)
    calls = []
    real_refine = pamr.refine

    def spy(scores, pixels, steps, dilations):
        calls.append((tuple(scores.shape), tuple(pixels.shape), steps, dilations))
        return real_refine(scores, pixels, steps, dilations)

    monkeypatch.setattr(pamr, "refine", spy)
    refined = Segmenter(
        tiny_clip, embeddings, protocol, method=MethodConfig(pamr_steps=2, pamr_dilations=(2, 4))
    )
    scores_plain, scores_refined = plain.scores(image), refined.scores(image)
    assert scores_refined.shape == scores_plain.shape == (3, 60, 90)
    assert np.abs(scores_refined - scores_plain).max() > 1e-4
    result = refined.segment(image)
    assert result.labels.shape == (60, 90)
    assert calls == [((3, 112, 168), (3, 112, 168), 2, (2, 4))] * 2  # scores() and segment()
    described = refined.describe()["method"]
    assert described["pamr_steps"] == 2 and list(described["pamr_dilations"]) == [2, 4]


# ---------------------------------------------------------------------------- config and CLI


def test_method_config_fields_and_validation():
    names = {f.name for f in dataclasses.fields(MethodConfig)}
    assert {
        "adaptive_anomaly_ratio",
        "max_anomaly_ratio",
        "boundary_aware_repair",
        "boundary_similarity",
        "pamr_steps",
        "pamr_dilations",
    } <= names
    assert MethodConfig(pamr_dilations=[4, 8]).pamr_dilations == (4, 8)  # type: ignore[arg-type]
    for bad in (
        {"pamr_steps": -1},
        {"pamr_dilations": ()},
        {"pamr_dilations": (0, 8)},
        {"pamr_dilations": (2.5,)},
        {"boundary_similarity": 1.5},
        {"sklearn_lof_neighbours": 0},
    ):
        with pytest.raises(ConfigError):
            MethodConfig(**bad)
    with pytest.raises(ConfigError, match="sc-clip only"):
        MethodConfig(name="clearclip", boundary_aware_repair=True)
    with pytest.raises(ConfigError, match="repair_anomalies"):
        MethodConfig(name="clip", repair_anomalies=False)
    assert MethodConfig(name="maskclip", pamr_steps=3).pamr_steps == 3  # PAMR works for any method


def test_method_from_options():
    assert options.method_from_options("sc-clip") == MethodConfig()
    cfg = options.method_from_options(
        "sc-clip",
        no_anomaly_repair=True,
        no_attention_enhancement=True,
        no_feature_aggregation=True,
        no_multi_level_fusion=True,
        adaptive_anomaly_ratio=True,
        boundary_aware_repair=True,
        anomaly_detector="token-norm",
        pamr_steps=2,
        pamr_dilations="4,8",
    )
    assert cfg == MethodConfig(
        repair_anomalies=False,
        attention_enhancement=False,
        feature_aggregation=False,
        multi_level_fusion=False,
        adaptive_anomaly_ratio=True,
        boundary_aware_repair=True,
        anomaly_detector="token-norm",
        pamr_steps=2,
        pamr_dilations=(4, 8),
    )
    assert options.method_from_options("clip", pamr_steps=1).pamr_steps == 1
    for bad in ("a,b", "8,", "0"):
        with pytest.raises(ConfigError, match="pamr-dilations"):
            options.method_from_options("sc-clip", pamr_dilations=bad)
    with pytest.raises(ConfigError, match="sc-clip only"):
        options.method_from_options("sclip", adaptive_anomaly_ratio=True)
    with pytest.raises(ConfigError, match="unknown method"):
        options.method_from_options("nope")


def test_method_options_parse_on_the_command_line():
    app = typer.Typer()
    seen = {}

    @app.command()
    def run(
        method: options.MethodOpt = "sc-clip",
        no_anomaly_repair: options.NoAnomalyRepairOpt = False,
        no_attention_enhancement: options.NoAttentionEnhancementOpt = False,
        no_feature_aggregation: options.NoFeatureAggregationOpt = False,
        no_multi_level_fusion: options.NoMultiLevelFusionOpt = False,
        adaptive_anomaly_ratio: options.AdaptiveAnomalyRatioOpt = False,
        boundary_aware_repair: options.BoundaryAwareRepairOpt = False,
        anomaly_detector: options.AnomalyDetectorOpt = None,
        pamr_steps: options.PamrStepsOpt = None,
        pamr_dilations: options.PamrDilationsOpt = None,
    ) -> None:
        seen["cfg"] = options.method_from_options(
            method,
            no_anomaly_repair=no_anomaly_repair,
            no_attention_enhancement=no_attention_enhancement,
            no_feature_aggregation=no_feature_aggregation,
            no_multi_level_fusion=no_multi_level_fusion,
            adaptive_anomaly_ratio=adaptive_anomaly_ratio,
            boundary_aware_repair=boundary_aware_repair,
            anomaly_detector=anomaly_detector,
            pamr_steps=pamr_steps,
            pamr_dilations=pamr_dilations,
        )

    args = [
        "--no-multi-level-fusion",
        "--adaptive-anomaly-ratio",
        "--boundary-aware-repair",
        "--anomaly-detector",
        "sklearn-lof",
        "--pamr-steps",
        "3",
        "--pamr-dilations",
        "8,16,32",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["cfg"] == MethodConfig(
        multi_level_fusion=False,
        adaptive_anomaly_ratio=True,
        boundary_aware_repair=True,
        anomaly_detector="sklearn-lof",
        pamr_steps=3,
        pamr_dilations=(8, 16, 32),
    )
    assert CliRunner().invoke(app, []).exit_code == 0 and seen["cfg"] == MethodConfig()
    assert CliRunner().invoke(app, ["--pamr-steps", "-1"]).exit_code == 2
