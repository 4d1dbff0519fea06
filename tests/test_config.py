"""The presets against the authors' code: every benchmark for both backbones, the calibration of
both depths, and how a run's backbone picks its column.

Each expected value names its source in SuleBai/SC-CLIP at its first commit (74471da):
``configs/<file>.py:<line>``. Values a config does not set are the segmentor's constructor defaults
(``scclip_segmentor.py:20-21``: ``prob_thd=0.0, logit_scale=40, slide_stride=112,
slide_crop=224, area_thd=None``) and the short side of mmseg's ``Resize(scale=(2048, 336))``.
"""

from __future__ import annotations

import dataclasses

import pytest

from scclip_cli.config import (
    BACKBONE_B16,
    BACKBONE_L14,
    CALIBRATION_PRESETS,
    PROTOCOL_PRESETS,
    CalibrationConfig,
    ConfigError,
    MethodConfig,
    ProtocolConfig,
    applied_preset,
    calibration_for_depth,
    check_calibration_depth,
    preset_backbone,
    protocol_overrides,
    resolve_protocol,
)

DEFAULTS = {  # scclip_segmentor.py:20-21 and the Resize of every config but cityscapes
    "short_side": 336,
    "long_side": 2048,
    "crop": 224,
    "stride": 112,
    "logit_scale": 40.0,
    "prob_threshold": 0.0,
    "area_threshold": None,
}

# benchmark -> backbone -> the values that differ from DEFAULTS, with their source lines.
EXPECTED: dict[str, dict[str, dict[str, object]]] = {
    "voc21": {
        # cfg_voc21.py:6 area_thd=0.1 (both); :7-8 "# for ViT-B/16" logit_scale=50, prob_thd=0.15
        BACKBONE_B16: {"logit_scale": 50.0, "prob_threshold": 0.15, "area_threshold": 0.1},
        # cfg_voc21.py:6 area_thd=0.1; :9-10 "# for ViT-L/14" prob_thd=0.2 (logit scale: default 40)
        BACKBONE_L14: {"prob_threshold": 0.2, "area_threshold": 0.1},
    },
    "voc20": {BACKBONE_B16: {}, BACKBONE_L14: {}},  # cfg_voc20.py:4-6 sets only name_path
    "context60": {
        BACKBONE_B16: {"prob_threshold": 0.15},  # cfg_context60.py:6 prob_thd=0.15
        BACKBONE_L14: {"prob_threshold": 0.15},  # (no backbone-specific line)
    },
    "context59": {BACKBONE_B16: {}, BACKBONE_L14: {}},  # cfg_context59.py:4-6
    "coco-object": {
        # cfg_coco_object.py:6-7 "# for ViT-B/16" logit_scale=55, prob_thd=0.35
        BACKBONE_B16: {"logit_scale": 55.0, "prob_threshold": 0.35},
        # cfg_coco_object.py:8-9 "# for ViT-L/14" prob_thd=0.25 (logit scale: default 40)
        BACKBONE_L14: {"prob_threshold": 0.25},
    },
    "coco-stuff": {BACKBONE_B16: {}, BACKBONE_L14: {}},  # cfg_coco_stuff164k.py:4-6
    "cityscapes": {
        BACKBONE_B16: {"short_side": 560},  # cfg_city_scapes.py:14 Resize(scale=(2048, 560))
        BACKBONE_L14: {"short_side": 560},
    },
    "ade20k": {BACKBONE_B16: {}, BACKBONE_L14: {}},  # cfg_ade20k.py:4-6
}

# benchmark -> (vocabulary file, reduce_zero_label, classes)
BENCHMARKS = {
    "voc21": ("voc21.txt", False, 21),  # cfg_voc21.py:5 cls_voc21.txt
    "voc20": ("voc20.txt", True, 20),  # cfg_voc20.py:5; PascalVOC20Dataset drops background
    "context60": ("context60.txt", False, 60),  # cfg_context60.py:5
    "context59": ("context59.txt", True, 59),  # cfg_context59.py:15 reduce_zero_label=True
    "coco-object": ("coco_object.txt", False, 81),  # cfg_coco_object.py:33 reduce_zero_label=False
    "coco-stuff": ("coco_stuff.txt", False, 171),  # cfg_coco_stuff164k.py:5
    "cityscapes": ("city_scapes.txt", False, 19),  # cfg_city_scapes.py:5
    "ade20k": ("ade20k.txt", True, 150),  # cfg_ade20k.py:15 reduce_zero_label=True
}


def test_every_benchmark_is_pinned():
    assert set(PROTOCOL_PRESETS) == set(EXPECTED) == set(BENCHMARKS)


@pytest.mark.parametrize("backbone", [BACKBONE_B16, BACKBONE_L14])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_preset_matches_the_authors_config(name, backbone):
    got = dataclasses.asdict(PROTOCOL_PRESETS[name].protocol_for(backbone))
    assert got == {**DEFAULTS, **EXPECTED[name][backbone]}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_vocabulary_and_labels(name):
    preset = PROTOCOL_PRESETS[name]
    assert (preset.vocab_file, preset.reduce_zero_label, preset.num_classes) == BENCHMARKS[name]


def test_calibration_presets_match_the_authors_base_config():
    assert set(CALIBRATION_PRESETS) == {12, 24}
    # configs/base_config.py:5-9 (ViT-B/16): pre_adjust_idx=8, post_adjust_idx=3,
    # multi_start_idx=3, multi_end_idx=10, res_cls=0.3
    b16 = calibration_for_depth(12)
    assert (
        b16.depth,
        b16.similarity_layer,
        b16.post_similarity_layer,
        b16.fusion_start,
        b16.fusion_stop,
        b16.residual_class_weight,
    ) == (12, 8, 3, 3, 10, 0.3)
    # configs/base_config.py:16-20 (ViT-L/14): 16, 6, 8, 19, res_cls=0.1
    l14 = calibration_for_depth(24)
    assert (
        l14.depth,
        l14.similarity_layer,
        l14.post_similarity_layer,
        l14.fusion_start,
        l14.fusion_stop,
        l14.residual_class_weight,
    ) == (24, 16, 6, 8, 19, 0.1)
    # constants shared by both depths (the reference's clip/model.py)
    for cal in (b16, l14):
        assert (
            cal.anomaly_ratio,
            cal.lof_neighbours,
            cal.similarity_threshold,
            cal.attention_sharpness,
            cal.aggregation_eps,
        ) == (0.05, 30, 0.4, 3.0, 1e-6)
    with pytest.raises(ConfigError, match="12, 24 blocks, not 6"):
        calibration_for_depth(6)


@pytest.mark.parametrize(
    ("depth", "backbone"),
    [
        (24, BACKBONE_L14),
        (12, BACKBONE_B16),
        (6, BACKBONE_B16),
        (None, BACKBONE_B16),
        (23, BACKBONE_B16),
        (32, BACKBONE_B16),
    ],
)
def test_only_a_24_block_vit_takes_the_l14_column(depth, backbone):
    assert preset_backbone(depth) == backbone


@pytest.mark.parametrize("name", ["voc21", "coco-object"])
def test_resolve_protocol_picks_the_column_of_the_model_depth(name):
    preset = PROTOCOL_PRESETS[name]
    assert resolve_protocol(name, depth=24) == preset.protocol_for(BACKBONE_L14)
    assert resolve_protocol(name, depth=12) == preset.protocol_for(BACKBONE_B16)
    assert resolve_protocol(name) == preset.protocol_for(BACKBONE_B16)
    assert resolve_protocol(name, depth=24) != resolve_protocol(name, depth=12)


def test_explicit_values_win_over_either_column():
    for depth in (12, 24):
        got = resolve_protocol("voc21", depth=depth, prob_threshold=0.5, logit_scale=33.0)
        assert (got.prob_threshold, got.logit_scale, got.area_threshold) == (0.5, 33.0, 0.1)
        # None means "not given": the preset's value stays
        kept = resolve_protocol("coco-object", depth=depth, prob_threshold=None)
        assert kept.prob_threshold == (0.25 if depth == 24 else 0.35)
    # a full protocol wins over the preset (and over its depth)
    mine = ProtocolConfig(crop=112, stride=56)
    assert resolve_protocol("voc21", mine, depth=24) is mine
    assert resolve_protocol(None, mine, crop=64).crop == 64
    assert resolve_protocol() == ProtocolConfig()
    with pytest.raises(ConfigError, match="unknown protocol setting"):
        resolve_protocol("voc21", depth=24, crop_size=3)
    with pytest.raises(ConfigError, match="unknown preset 'voc22'"):
        resolve_protocol("voc22", depth=24)


def test_unknown_protocol_settings_are_named():
    with pytest.raises(ConfigError) as err:
        resolve_protocol("voc21", stride_px=3, crop_size=3, crop=112)
    assert str(err.value) == "unknown protocol setting(s): crop_size, stride_px"


def test_protocol_overrides_keep_only_the_given_values():
    given = protocol_overrides(crop=112, stride=None, prob_threshold=0.0, area_threshold=None)
    assert given == {"crop": 112, "prob_threshold": 0.0}  # 0.0 is given, None is not
    assert protocol_overrides() == {}
    assert resolve_protocol("voc21", **given) == ProtocolConfig(
        logit_scale=50, prob_threshold=0.0, area_threshold=0.1, crop=112
    )


def test_the_applied_preset_names_its_backbone():
    assert applied_preset("voc21", 24) == {
        "name": "voc21",
        "backbone": "ViT-L/14",
        "model_depth": 24,
    }
    assert applied_preset("coco-object", 12) == {
        "name": "coco-object",
        "backbone": "ViT-B/16",
        "model_depth": 12,
    }
    assert applied_preset(None, 24) is None
    with pytest.raises(ConfigError):
        applied_preset("nope", 12)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"short_side": 0}, "short-side must be a positive integer"),
        ({"long_side": 0}, "long-side must be a positive integer"),
        ({"crop": 0}, "crop must be a positive integer"),
        ({"stride": 0}, "stride must be a positive integer"),
        ({"stride": 225}, "stride (225) larger than crop (224) leaves gaps"),
        ({"logit_scale": 0.0}, "logit-scale must be positive"),
        ({"logit_scale": -1.0}, "logit-scale must be positive"),
        ({"prob_threshold": -0.01}, "prob-threshold must be in [0, 1]"),
        ({"prob_threshold": 1.01}, "prob-threshold must be in [0, 1]"),
        ({"area_threshold": -0.01}, "area-threshold must be in [0, 1]"),
        ({"area_threshold": 1.01}, "area-threshold must be in [0, 1]"),
    ],
)
def test_protocol_values_out_of_range_are_refused(changes, message):
    with pytest.raises(ConfigError) as err:
        ProtocolConfig(**changes)
    assert str(err.value) == message


def test_protocol_bounds_are_inclusive():
    edge = ProtocolConfig(
        short_side=1, long_side=1, crop=1, stride=1, prob_threshold=1.0, area_threshold=0.0
    )
    assert (edge.prob_threshold, edge.area_threshold) == (1.0, 0.0)
    assert ProtocolConfig(prob_threshold=0.0, area_threshold=1.0, stride=224).stride == 224
    # any positive logit scale, below 1 included
    assert ProtocolConfig(logit_scale=0.5).logit_scale == 0.5


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        resolve_protocol("voc22")
    assert str(err.value) == (
        "unknown preset 'voc22'; choose one of: voc21, voc20, context60, context59, coco-object, "
        "coco-stuff, cityscapes, ade20k"
    )


# ------------------------------------------------------------------------ calibration validation


def test_calibration_defaults_are_the_12_block_preset():
    assert CalibrationConfig() == calibration_for_depth(12)
    assert CalibrationConfig().fusion_layers == range(3, 10)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"post_similarity_layer": -1}, "post_similarity_layer -1 outside 0..10"),
        ({"post_similarity_layer": 11}, "post_similarity_layer 11 outside 0..10"),
        ({"similarity_layer": -1}, "similarity_layer -1 outside 0..10"),
        ({"similarity_layer": 11}, "similarity_layer 11 outside 0..10"),
        ({"fusion_start": -1}, "fusion layers -1..10 must satisfy 0 <= start < stop <= 11"),
        (
            {"fusion_start": 5, "fusion_stop": 5},
            "fusion layers 5..5 must satisfy 0 <= start < stop <= 11",
        ),
        (
            {"fusion_start": 6, "fusion_stop": 5},
            "fusion layers 6..5 must satisfy 0 <= start < stop <= 11",
        ),
        ({"fusion_stop": 12}, "fusion layers 3..12 must satisfy 0 <= start < stop <= 11"),
        ({"anomaly_ratio": 0.0}, "anomaly_ratio must be in (0, 1), got 0.0"),
        ({"anomaly_ratio": 1.0}, "anomaly_ratio must be in (0, 1), got 1.0"),
        ({"anomaly_ratio": 1.5}, "anomaly_ratio must be in (0, 1), got 1.5"),
        ({"lof_neighbours": 0}, "lof_neighbours must be >= 1, got 0"),
    ],
)
def test_calibration_values_out_of_range_are_refused(changes, message):
    with pytest.raises(ConfigError) as err:
        CalibrationConfig(**changes)
    assert str(err.value) == message


def test_calibration_bounds_are_inclusive():
    # a 12-block ViT has block outputs 0..11; the last one is never a middle layer
    low = CalibrationConfig(
        similarity_layer=0,
        post_similarity_layer=0,
        fusion_start=0,
        fusion_stop=1,
        anomaly_ratio=0.001,
        lof_neighbours=1,
    )
    assert (low.similarity_layer, low.post_similarity_layer, low.lof_neighbours) == (0, 0, 1)
    assert low.fusion_layers == range(0, 1)
    high = CalibrationConfig(
        similarity_layer=10,
        post_similarity_layer=10,
        fusion_start=10,
        fusion_stop=11,
        anomaly_ratio=0.999,
    )
    assert (high.similarity_layer, high.post_similarity_layer) == (10, 10)
    assert high.fusion_layers == range(10, 11)
    # the same bounds follow the depth
    deep = CalibrationConfig(
        depth=24, similarity_layer=22, post_similarity_layer=22, fusion_stop=23
    )
    assert deep.fusion_layers == range(3, 23)
    with pytest.raises(ConfigError) as err:
        CalibrationConfig(depth=24, similarity_layer=23)
    assert str(err.value) == "similarity_layer 23 outside 0..22"


def test_calibration_replace_changes_only_the_given_fields_and_checks_them():
    base = CalibrationConfig()
    changed = base.replace(lof_neighbours=10, residual_class_weight=0.1)
    assert changed == dataclasses.replace(base, lof_neighbours=10, residual_class_weight=0.1)
    assert (changed.lof_neighbours, changed.residual_class_weight, changed.depth) == (10, 0.1, 12)
    assert base.lof_neighbours == 30  # frozen: the original stays
    with pytest.raises(ConfigError, match="lof_neighbours must be >= 1, got 0"):
        base.replace(lof_neighbours=0)


def test_a_calibration_for_another_depth_is_refused():
    check_calibration_depth(CalibrationConfig(), 12)
    check_calibration_depth(calibration_for_depth(24), 24)
    with pytest.raises(ConfigError) as err:
        check_calibration_depth(CalibrationConfig(), 24)
    assert str(err.value) == "calibration preset is for 12 blocks but the model has 24"


def test_a_depth_without_a_preset_says_how_to_use_the_model():
    with pytest.raises(ConfigError) as err:
        calibration_for_depth(6)
    assert str(err.value) == (
        "SC-CLIP has calibration presets for ViTs with 12, 24 blocks, not 6; "
        "pass an explicit CalibrationConfig (Python API) to use this model"
    )


# ------------------------------------------------------------------------ method validation


def test_method_defaults_are_sc_clip_with_every_extension_off():
    method = MethodConfig()
    assert (method.name, method.anomaly_detector, method.pamr_steps) == ("sc-clip", "lof", 0)
    assert method.pamr_dilations == (8, 16)
    for name in ("clip", "maskclip", "sclip", "clearclip"):
        assert MethodConfig(name=name).name == name  # a baseline with default switches is fine


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"name": "nope"},
            "unknown method 'nope'; choose one of: sc-clip, clip, maskclip, sclip, clearclip",
        ),
        (
            {"anomaly_detector": "iforest"},
            "unknown anomaly detector 'iforest'; choose one of: lof, sklearn-lof, token-norm",
        ),
        ({"sklearn_lof_neighbours": 0}, "sklearn_lof_neighbours must be >= 1, got 0"),
        ({"max_anomaly_ratio": 0.0}, "max_anomaly_ratio must be in (0, 1), got 0.0"),
        ({"max_anomaly_ratio": 1.0}, "max_anomaly_ratio must be in (0, 1), got 1.0"),
        ({"max_anomaly_ratio": 1.5}, "max_anomaly_ratio must be in (0, 1), got 1.5"),
        ({"boundary_similarity": -1.5}, "boundary_similarity must be in [-1, 1], got -1.5"),
        ({"boundary_similarity": 1.5}, "boundary_similarity must be in [-1, 1], got 1.5"),
        ({"pamr_steps": -1}, "pamr-steps must be >= 0, got -1"),
        ({"pamr_dilations": ()}, "pamr-dilations must be positive integers, got ()"),
        ({"pamr_dilations": (0, 8)}, "pamr-dilations must be positive integers, got (0, 8)"),
        ({"pamr_dilations": [8, -2]}, "pamr-dilations must be positive integers, got [8, -2]"),
        ({"pamr_dilations": (2.5,)}, "pamr-dilations must be positive integers, got (2.5,)"),
        ({"pamr_dilations": (True,)}, "pamr-dilations must be positive integers, got (True,)"),
        (
            {"name": "clip", "repair_anomalies": False},
            "method 'clip' does not use repair_anomalies (sc-clip only)",
        ),
        (
            {"name": "clearclip", "anomaly_detector": "token-norm", "boundary_aware_repair": True},
            "method 'clearclip' does not use anomaly_detector, boundary_aware_repair "
            "(sc-clip only)",
        ),
    ],
)
def test_method_values_out_of_range_are_refused(changes, message):
    with pytest.raises(ConfigError) as err:
        MethodConfig(**changes)
    assert str(err.value) == message


def test_method_bounds_are_inclusive():
    edge = MethodConfig(
        sklearn_lof_neighbours=1,
        max_anomaly_ratio=0.999,
        boundary_similarity=-1.0,
        pamr_steps=0,
        pamr_dilations=(1,),
    )
    assert (edge.sklearn_lof_neighbours, edge.boundary_similarity, edge.pamr_dilations) == (
        1,
        -1.0,
        (1,),
    )
    assert MethodConfig(boundary_similarity=1.0, max_anomaly_ratio=0.001).boundary_similarity == 1.0


def test_sc_clip_takes_every_switch_and_baselines_take_pamr():
    switches = MethodConfig(
        repair_anomalies=False,
        attention_enhancement=False,
        feature_aggregation=False,
        multi_level_fusion=False,
        anomaly_detector="token-norm",
        adaptive_anomaly_ratio=True,
        boundary_aware_repair=True,
    )
    assert not switches.repair_anomalies and switches.boundary_aware_repair
    assert MethodConfig(name="maskclip", pamr_steps=3, pamr_dilations=(2,)).pamr_steps == 3


def test_pamr_dilations_given_as_a_list_become_a_tuple():
    method = MethodConfig(pamr_dilations=[4, 8])  # type: ignore[arg-type]
    assert method.pamr_dilations == (4, 8)
    assert isinstance(method.pamr_dilations, tuple)
    assert method == MethodConfig(pamr_dilations=(4, 8))


def test_method_replace_changes_only_the_given_fields_and_checks_them():
    base = MethodConfig()
    changed = base.replace(pamr_steps=2, boundary_aware_repair=True)
    assert changed == MethodConfig(pamr_steps=2, boundary_aware_repair=True)
    assert (base.pamr_steps, base.boundary_aware_repair) == (0, False)
    with pytest.raises(ConfigError, match="does not use repair_anomalies"):
        base.replace(name="sclip", repair_anomalies=False)
