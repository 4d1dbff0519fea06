"""Every constant of SC-CLIP and of the evaluation protocol, as frozen dataclasses with presets.

Block indices follow the reference: index ``i`` is the output of block ``i + 1`` (the list of block
outputs starts at block 1). ``ALGORITHM.md`` in ``tests/data/golden`` spells out where each is used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from scclip_cli.errors import ConfigError


@dataclass(frozen=True)
class CalibrationConfig:
    """The SC-CLIP constants of one backbone depth.

    Defaults are the ViT-B/16 preset (12 blocks). Use :func:`calibration_for_depth` to get the
    preset that matches a model.
    """

    depth: int = 12
    """Number of transformer blocks the preset was made for; checked against the model on load."""
    similarity_layer: int = 8
    """Index of the block output whose *repaired* patch-token cosine similarity calibrates the last
    block (``pre_adjust_idx``; block 9 of 12). Used for the attention enhancement and the first
    feature aggregation."""
    post_similarity_layer: int = 3
    """Index of the block output whose (unrepaired) patch-token similarity aggregates the calibrated
    features (``post_adjust_idx``; block 4 of 12)."""
    fusion_start: int = 3
    """First block-output index summed for multi-level fusion (``multi_start_idx``)."""
    fusion_stop: int = 10
    """One past the last block-output index summed for multi-level fusion (``multi_end_idx``)."""
    residual_class_weight: float = 0.3
    """Weight of the class token added back to the calibrated patch tokens (``res_cls``)."""
    anomaly_ratio: float = 0.05
    """Share of patch tokens flagged as anomalies: those whose LOF exceeds the (1 - ratio) quantile."""
    lof_neighbours: int = 30
    """k of the Local Outlier Factor used to find anomaly tokens in the penultimate layer."""
    similarity_threshold: float = 0.4
    """Cosine similarities below this are zeroed before feature aggregation (beta)."""
    attention_sharpness: float = 3.0
    """Scale of the mean-centred middle-layer similarity before its softmax in the last block."""
    aggregation_eps: float = 1e-6
    """Added to the row sums of the similarity when normalising it for aggregation."""

    def __post_init__(self) -> None:
        if not 0 <= self.post_similarity_layer < self.depth - 1:
            raise ConfigError(
                f"post_similarity_layer {self.post_similarity_layer} outside 0..{self.depth - 2}"
            )
        if not 0 <= self.similarity_layer < self.depth - 1:
            raise ConfigError(
                f"similarity_layer {self.similarity_layer} outside 0..{self.depth - 2}"
            )
        if not 0 <= self.fusion_start < self.fusion_stop <= self.depth - 1:
            raise ConfigError(
                f"fusion layers {self.fusion_start}..{self.fusion_stop} must satisfy "
                f"0 <= start < stop <= {self.depth - 1}"
            )
        if not 0.0 < self.anomaly_ratio < 1.0:
            raise ConfigError(f"anomaly_ratio must be in (0, 1), got {self.anomaly_ratio}")
        if self.lof_neighbours < 1:
            raise ConfigError(f"lof_neighbours must be >= 1, got {self.lof_neighbours}")

    @property
    def fusion_layers(self) -> range:
        """Block-output indices summed for multi-level fusion."""
        return range(self.fusion_start, self.fusion_stop)

    def replace(self, **changes: object) -> CalibrationConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


CALIBRATION_PRESETS: dict[int, CalibrationConfig] = {
    # ViT-B/16 and ViT-B/32 (12 blocks): blocks 9 / 4 / 4..10, res_cls 0.3
    12: CalibrationConfig(),
    # ViT-L/14 (24 blocks): blocks 17 / 7 / 9..19, res_cls 0.1
    24: CalibrationConfig(
        depth=24,
        similarity_layer=16,
        post_similarity_layer=6,
        fusion_start=8,
        fusion_stop=19,
        residual_class_weight=0.1,
    ),
}


def calibration_for_depth(depth: int) -> CalibrationConfig:
    """The preset for a ViT with ``depth`` blocks.

    Only the depths the paper's code was tuned for have presets (12: ViT-B, 24: ViT-L). Other depths
    raise :class:`ConfigError`; pass an explicit :class:`CalibrationConfig` through the Python API to
    use them.
    """
    try:
        return CALIBRATION_PRESETS[depth]
    except KeyError:
        known = ", ".join(str(d) for d in sorted(CALIBRATION_PRESETS))
        raise ConfigError(
            f"SC-CLIP has calibration presets for ViTs with {known} blocks, not {depth}; "
            "pass an explicit CalibrationConfig (Python API) to use this model"
        ) from None


def check_calibration_depth(calibration: CalibrationConfig, depth: int) -> None:
    """Raise :class:`ConfigError` when ``calibration`` was not made for a model of ``depth`` blocks."""
    if calibration.depth != depth:
        raise ConfigError(
            f"calibration preset is for {calibration.depth} blocks but the model has {depth}"
        )


@dataclass(frozen=True)
class ProtocolConfig:
    """How an image becomes a label map: resize, sliding window, post-processing.

    Defaults are the paper's code defaults (``base_config.py`` and mmseg's test pipeline).
    """

    short_side: int = 336
    """The image is resized (keeping aspect ratio) so its short side is this many pixels, unless the
    long side would exceed ``long_side`` (mmseg ``Resize(scale=(long_side, short_side))``)."""
    long_side: int = 2048
    """Upper bound on the resized long side."""
    crop: int = 224
    """Sliding-window crop size in resized pixels (square)."""
    stride: int = 112
    """Sliding-window stride in resized pixels."""
    logit_scale: float = 40.0
    """Cosine scores are multiplied by this before the softmax over queries."""
    prob_threshold: float = 0.0
    """Pixels whose winning class probability is below this become class 0 (background)."""
    area_threshold: float | None = None
    """When set, classes 1.. whose predicted area is at most this share of the foreground area are
    removed before the final argmax (class 0 is never removed). ``None`` disables the rule."""

    def __post_init__(self) -> None:
        for name in ("short_side", "long_side", "crop", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer")
        if self.stride > self.crop:
            raise ConfigError(f"stride ({self.stride}) larger than crop ({self.crop}) leaves gaps")
        if self.logit_scale <= 0:
            raise ConfigError("logit-scale must be positive")
        if not 0.0 <= self.prob_threshold <= 1.0:
            raise ConfigError("prob-threshold must be in [0, 1]")
        if self.area_threshold is not None and not 0.0 <= self.area_threshold <= 1.0:
            raise ConfigError("area-threshold must be in [0, 1]")

    def replace(self, **changes: object) -> ProtocolConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


BACKBONE_B16 = "ViT-B/16"
BACKBONE_L14 = "ViT-L/14"
L14_DEPTH = 24
"""Blocks of ViT-L/14: a model this deep runs a benchmark with the authors' ViT-L/14 settings."""


def preset_backbone(depth: int | None) -> str:
    """Which backbone's benchmark settings a ViT of ``depth`` blocks runs: the authors' configs give
    values for ViT-B/16 and ViT-L/14 only, so a 24-block ViT takes the L/14 ones and every other
    model (or an unknown depth) the B/16 ones."""
    return BACKBONE_L14 if depth == L14_DEPTH else BACKBONE_B16


@dataclass(frozen=True)
class BenchmarkPreset:
    """The paper's per-benchmark settings: the protocol and the vocabulary file it uses."""

    name: str
    protocol: ProtocolConfig
    """The ViT-B/16 settings (the authors' active config lines), used for every backbone but
    ViT-L/14."""
    vocab_file: str
    """File name under the package's ``vocab/`` folder (the reference's class lists)."""
    reduce_zero_label: bool = False
    num_classes: int = 0
    l14_protocol: ProtocolConfig | None = None
    """The ViT-L/14 settings where the authors' config gives them (its ``# for ViT-L/14`` line);
    ``None``: the same as :attr:`protocol`."""
    notes: str = field(default="", compare=False)

    def protocol_for(self, backbone: str) -> ProtocolConfig:
        """The settings of this benchmark for ``backbone`` (:data:`BACKBONE_B16` or
        :data:`BACKBONE_L14`)."""
        if backbone == BACKBONE_L14 and self.l14_protocol is not None:
            return self.l14_protocol
        return self.protocol


PROTOCOL_PRESETS: dict[str, BenchmarkPreset] = {
    p.name: p
    for p in (
        # The ViT-L/14 lines of the authors' configs set only prob_thd: logit scale and crop stay
        # the constructor defaults (40, 224/112); area_thd is shared by both backbones.
        BenchmarkPreset(
            "voc21",
            ProtocolConfig(logit_scale=50, prob_threshold=0.15, area_threshold=0.1),
            "voc21.txt",
            num_classes=21,
            l14_protocol=ProtocolConfig(prob_threshold=0.2, area_threshold=0.1),
        ),
        BenchmarkPreset(
            "voc20", ProtocolConfig(), "voc20.txt", reduce_zero_label=True, num_classes=20
        ),
        BenchmarkPreset(
            "context60", ProtocolConfig(prob_threshold=0.15), "context60.txt", num_classes=60
        ),
        BenchmarkPreset(
            "context59", ProtocolConfig(), "context59.txt", reduce_zero_label=True, num_classes=59
        ),
        BenchmarkPreset(
            "coco-object",
            ProtocolConfig(logit_scale=55, prob_threshold=0.35),
            "coco_object.txt",
            num_classes=81,
            l14_protocol=ProtocolConfig(prob_threshold=0.25),
        ),
        BenchmarkPreset("coco-stuff", ProtocolConfig(), "coco_stuff.txt", num_classes=171),
        BenchmarkPreset(
            "cityscapes", ProtocolConfig(short_side=560), "city_scapes.txt", num_classes=19
        ),
        BenchmarkPreset(
            "ade20k", ProtocolConfig(), "ade20k.txt", reduce_zero_label=True, num_classes=150
        ),
    )
}


def protocol_preset(name: str) -> BenchmarkPreset:
    try:
        return PROTOCOL_PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of: {', '.join(PROTOCOL_PRESETS)}"
        ) from None


def applied_preset(preset: str | None, depth: int | None) -> dict[str, object] | None:
    """What ``summary.json`` and the eval JSON record of the preset a run used: its name, the
    backbone whose settings it took and the model's depth (``None`` without a preset)."""
    if preset is None:
        return None
    protocol_preset(preset)
    return {"name": preset, "backbone": preset_backbone(depth), "model_depth": depth}


METHODS = ("sc-clip", "clip", "maskclip", "sclip", "clearclip")
ANOMALY_DETECTORS = ("lof", "sklearn-lof", "token-norm")


@dataclass(frozen=True)
class MethodConfig:
    """Which dense-feature method runs, SC-CLIP's ablation switches and the training-free extensions.

    With every SC-CLIP switch off, the last block is key-key self-attention without residual or
    feed-forward, plus ``residual_class_weight`` × the class token (see README, "Methods").

    The extensions (adaptive anomaly ratio, boundary-aware repair, PAMR) are off by default; with
    them off the output is the reference's, bit for bit. The ablation switches and the anomaly
    settings only apply to ``sc-clip``; PAMR post-processes the scores of any method.
    """

    name: str = "sc-clip"
    """sc-clip | clip | maskclip | sclip | clearclip."""
    repair_anomalies: bool = True
    """Find anomaly tokens in the penultimate layer and replace them by their neighbours' mean."""
    attention_enhancement: bool = True
    """Mix the middle layer's similarity into the last block's (key-key) attention."""
    feature_aggregation: bool = True
    """Aggregate features by the sparsified middle-layer similarities before and after the block."""
    multi_level_fusion: bool = True
    """Add the sum of the middle layers, passed through the same calibrated block."""
    anomaly_detector: str = "lof"
    """lof (the reference's torch LOF, k from the calibration) | sklearn-lof | token-norm."""
    sklearn_lof_neighbours: int = 20
    """k of scikit-learn's LocalOutlierFactor when ``anomaly_detector == "sklearn-lof"``."""
    adaptive_anomaly_ratio: bool = False
    """Let each crop's share of anomaly tokens follow its complexity (spatial entropy and local
    contrast of the penultimate tokens, :func:`scclip_cli.model.adaptive_ratio.crop_complexity`): from the
    calibration's ``anomaly_ratio`` for a flat crop up to ``max_anomaly_ratio``."""
    max_anomaly_ratio: float = 0.15
    """Share of anomaly tokens of a crop of complexity 1 with ``adaptive_anomaly_ratio``; must not
    be below the calibration's ``anomaly_ratio``."""
    boundary_aware_repair: bool = False
    """Repair an anomaly that sits on a semantic boundary from the neighbours on its own side only
    (sides from the block-output ``post_similarity_layer``; :func:`scclip_cli.model.boundary_repair.boundary_sides`)."""
    boundary_similarity: float = 0.4
    """An anomaly's neighbourhood is split in two sides when their mean cross cosine similarity (in
    the ``post_similarity_layer`` output) is below this; 0.4 is the reference's beta on that layer."""
    pamr_steps: int = 0
    """Iterations of Pixel-Adaptive Mask Refinement on the averaged window scores (0: off)."""
    pamr_dilations: tuple[int, ...] = (8, 16)
    """Dilations, in resized-image pixels, of PAMR's 3×3 neighbourhoods (the reference's
    ``pamr_stride``)."""

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ConfigError(f"unknown method {self.name!r}; choose one of: {', '.join(METHODS)}")
        if self.anomaly_detector not in ANOMALY_DETECTORS:
            raise ConfigError(
                f"unknown anomaly detector {self.anomaly_detector!r}; "
                f"choose one of: {', '.join(ANOMALY_DETECTORS)}"
            )
        if self.sklearn_lof_neighbours < 1:
            raise ConfigError(
                f"sklearn_lof_neighbours must be >= 1, got {self.sklearn_lof_neighbours}"
            )
        if not 0.0 < self.max_anomaly_ratio < 1.0:
            raise ConfigError(f"max_anomaly_ratio must be in (0, 1), got {self.max_anomaly_ratio}")
        if not -1.0 <= self.boundary_similarity <= 1.0:
            raise ConfigError(
                f"boundary_similarity must be in [-1, 1], got {self.boundary_similarity}"
            )
        if self.pamr_steps < 0:
            raise ConfigError(f"pamr-steps must be >= 0, got {self.pamr_steps}")
        dilations = tuple(self.pamr_dilations)
        if not dilations or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dilations
        ):
            raise ConfigError(
                f"pamr-dilations must be positive integers, got {self.pamr_dilations!r}"
            )
        object.__setattr__(self, "pamr_dilations", dilations)  # a list becomes a tuple
        if self.name != "sc-clip":
            changed = [
                f.name
                for f in dataclasses.fields(self)
                if f.name in _SC_CLIP_ONLY and getattr(self, f.name) != f.default
            ]
            if changed:
                raise ConfigError(
                    f"method {self.name!r} does not use {', '.join(changed)} (sc-clip only)"
                )

    def replace(self, **changes: object) -> MethodConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_SC_CLIP_ONLY = frozenset(
    {
        "repair_anomalies",
        "attention_enhancement",
        "feature_aggregation",
        "multi_level_fusion",
        "anomaly_detector",
        "sklearn_lof_neighbours",
        "adaptive_anomaly_ratio",
        "max_anomaly_ratio",
        "boundary_aware_repair",
        "boundary_similarity",
    }
)
"""MethodConfig fields that change only the ``sc-clip`` path; setting them for a baseline is an error."""


def protocol_overrides(**given: object) -> dict[str, object]:
    """The protocol fields given explicitly (``None`` means "not given"), for
    :func:`resolve_protocol`."""
    return {name: value for name, value in given.items() if value is not None}


def resolve_protocol(
    preset: str | None = None,
    protocol: ProtocolConfig | None = None,
    *,
    depth: int | None = None,
    **overrides: object,
) -> ProtocolConfig:
    """``protocol`` (else the protocol of ``preset`` for a model of ``depth`` blocks, else the
    defaults) with the given fields replaced.

    ``depth`` picks the preset's backbone column (:func:`preset_backbone`: 24 blocks → ViT-L/14,
    anything else, ``None`` included → ViT-B/16). ``overrides`` whose value is ``None`` are ignored,
    so CLI options left unset keep the preset's value. This is the one place every command resolves
    its protocol.
    """
    if protocol is not None:
        base = protocol
    elif preset:
        base = protocol_preset(preset).protocol_for(preset_backbone(depth))
    else:
        base = ProtocolConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(ProtocolConfig)}
    if unknown:
        raise ConfigError(f"unknown protocol setting(s): {', '.join(sorted(unknown))}")
    return base.replace(**given) if given else base


DEFAULT_MODEL = "ViT-B-16-quickgelu"
"""The model the commands load unless told otherwise (ViT-B/16, QuickGELU as OpenAI trained it)."""
DEFAULT_PRETRAINED = "openai"
"""The weights of :data:`DEFAULT_MODEL` the commands load unless told otherwise."""
