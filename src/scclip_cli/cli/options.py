"""Option definitions shared by several commands, defined once (``Annotated`` aliases), and
:func:`shared_options`, which gives ``segment`` and ``eval`` the same model, method, protocol, run
and engine options and hands them over as one :class:`SharedOptions` value.

Defaults and the lists in help texts come from the library's configs, so there is one place for
every default. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scclip_cli.cli.cache_options import (
    CacheDirOpt,
    FeatureCacheOpt,
    FeatureCacheSizeOpt,
    NoCacheOpt,
    cache_options_from_cli,
)
from scclip_cli.config import (
    ANOMALY_DETECTORS,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    METHODS,
    PROTOCOL_PRESETS,
    CalibrationConfig,
    MethodConfig,
    ProtocolConfig,
    protocol_overrides,
)
from scclip_cli.errors import ConfigError, UsageError
from scclip_cli.predict.model_options import ModelOptions

if TYPE_CHECKING:
    from scclip_cli.runs.caching import CacheOptions
    from scclip_cli.runs.ray_engine import RayOptions

_PROTOCOL = ProtocolConfig()
_CAL = CalibrationConfig()
_METHOD = MethodConfig()

MODEL_PANEL = "Model"
PROTOCOL_PANEL = "Protocol"
RUN_PANEL = "Run"
METHOD_PANEL = "Method: ablations and extensions"
ENGINE_PANEL = "Engine: many processes, GPUs and machines (Ray)"

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="open_clip model name (e.g. ViT-B-16-quickgelu, ViT-L-14-quickgelu) or path to an "
        "open_clip model-config JSON. 'scclip-tiny' is a built-in 12-block test model.",
        rich_help_panel=MODEL_PANEL,
    ),
]
PretrainedOpt = Annotated[
    str,
    typer.Option(
        "--pretrained",
        "-p",
        help="open_clip pretrained tag (openai, laion2b_s34b_b88k, ...) or a local checkpoint file "
        "(.pt/.pth/.bin/.safetensors). 'random' or 'random:SEED' gives seeded random weights "
        "(for tests and benchmarks; segmentations are meaningless).",
        rich_help_panel=MODEL_PANEL,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto | cpu | cuda | cuda:N", rich_help_panel=MODEL_PANEL),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (float32 on CPU, float16 on CUDA, as the paper's code) | float32 | float16 | bfloat16",
        rich_help_panel=MODEL_PANEL,
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help=f"{METHODS[0]} (default) | {' | '.join(METHODS[1:])}",
        rich_help_panel=MODEL_PANEL,
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help=f"Benchmark protocol preset: {', '.join(PROTOCOL_PRESETS)}. Explicit protocol "
        "options override it.",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
ShortSideOpt = Annotated[
    int | None,
    typer.Option(
        "--short-side",
        help=f"Resize short side \\[default: {_PROTOCOL.short_side}]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
CropOpt = Annotated[
    int | None,
    typer.Option(
        "--crop", help=f"Window size \\[default: {_PROTOCOL.crop}]", rich_help_panel=PROTOCOL_PANEL
    ),
]
StrideOpt = Annotated[
    int | None,
    typer.Option(
        "--stride",
        help=f"Window stride \\[default: {_PROTOCOL.stride}]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
LogitScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--logit-scale",
        help=f"Softmax temperature \\[default: {_PROTOCOL.logit_scale:g}]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
ProbThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--prob-threshold",
        help="Pixels whose best class probability is below this become class 0 \\[default: 0]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
AreaThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--area-threshold",
        help="Drop classes 1.. covering at most this share of the foreground \\[default: off]",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        min=1,
        help="Crops per model forward pass (default: 4 on the CPU, 16 on a GPU)",
        rich_help_panel=RUN_PANEL,
        show_default=False,
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="I/N: process only the I-th (1-based) of N disjoint parts of the sorted inputs",
        rich_help_panel=RUN_PANEL,
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bar or messages", rich_help_panel=RUN_PANEL),
]
VocabOpt = Annotated[
    Path,
    typer.Option(
        "--vocab",
        "-v",
        help="Class list (.txt: one class per line, synonyms separated by commas; line 1 is class 0) "
        "or an embedding cache made by 'scclip vocab' (.npz)",
    ),
]


# ---------------------------------------------------------------------------- engine (Ray)
# Ray options default to None ("not given"), so --engine local can refuse them; the defaults that
# apply with --engine ray are in scclip_cli.runs.ray_engine.RayOptions.

ENGINES = ("local", "ray")
"""Values of ``--engine``."""

EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help=f"{ENGINES[0]}: this process | {ENGINES[1]}: model-holding Ray workers on this "
        "machine or a cluster, "
        'same outputs (needs pip install "scclip-cli\\[ray]")',
        rich_help_panel=ENGINE_PANEL,
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to join: auto (started with 'ray start' on this machine), HOST:PORT, or "
        "ray://HOST:10001; local starts a private instance \\[default: $RAY_ADDRESS, else a "
        "cluster started on this machine, else a private instance]",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Ray workers, each loading the model once \\[default: as many as the cluster's GPUs "
        "(or CPUs) hold]",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
GpusPerWorkerOpt = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-worker",
        min=0,
        help="GPUs per Ray worker; fractions share a GPU (0.5: two workers per GPU) "
        "\\[default: 1 when the cluster has GPUs, else 0]",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
CpusPerWorkerOpt = Annotated[
    float | None,
    typer.Option(
        "--cpus-per-worker",
        min=0,
        help="CPUs per Ray worker: its decoding threads, and its torch threads on CPU "
        "\\[default: 1]",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]


# ---------------------------------------------------------------------------- method switches
# Flags default to False (the reference's behaviour); value options default to None, meaning "the
# MethodConfig default". Commands pass them all to method_from_options().

NoAnomalyRepairOpt = Annotated[
    bool,
    typer.Option(
        "--no-anomaly-repair",
        help="SC-CLIP ablation: keep the penultimate layer's anomaly tokens (no detection or repair)",
        rich_help_panel=METHOD_PANEL,
    ),
]
NoAttentionEnhancementOpt = Annotated[
    bool,
    typer.Option(
        "--no-attention-enhancement",
        help="SC-CLIP ablation: key-key attention alone in the last block (no middle-layer similarity)",
        rich_help_panel=METHOD_PANEL,
    ),
]
NoFeatureAggregationOpt = Annotated[
    bool,
    typer.Option(
        "--no-feature-aggregation",
        help="SC-CLIP ablation: no aggregation by the middle-layer similarities",
        rich_help_panel=METHOD_PANEL,
    ),
]
NoMultiLevelFusionOpt = Annotated[
    bool,
    typer.Option(
        "--no-multi-level-fusion",
        help="SC-CLIP ablation: do not add the fused middle layers",
        rich_help_panel=METHOD_PANEL,
    ),
]
AdaptiveAnomalyRatioOpt = Annotated[
    bool,
    typer.Option(
        "--adaptive-anomaly-ratio",
        help=f"Extension (sc-clip): each crop's share of anomaly tokens follows its complexity, "
        f"from {_CAL.anomaly_ratio:.0%} (flat) up to {_METHOD.max_anomaly_ratio:.0%}",
        rich_help_panel=METHOD_PANEL,
    ),
]
BoundaryAwareRepairOpt = Annotated[
    bool,
    typer.Option(
        "--boundary-aware-repair",
        help="Extension (sc-clip): repair an anomaly on a region boundary from the neighbours on "
        "its own side only",
        rich_help_panel=METHOD_PANEL,
    ),
]
AnomalyDetectorOpt = Annotated[
    str | None,
    typer.Option(
        "--anomaly-detector",
        help=f"sc-clip anomaly detector: {' | '.join(ANOMALY_DETECTORS)} "
        f"\\[default: {_METHOD.anomaly_detector}]",
        rich_help_panel=METHOD_PANEL,
    ),
]
PamrStepsOpt = Annotated[
    int | None,
    typer.Option(
        "--pamr-steps",
        min=0,
        help="Extension (any method): PAMR iterations refining the averaged scores along colour "
        f"edges \\[default: {_METHOD.pamr_steps} = off]",
        rich_help_panel=METHOD_PANEL,
    ),
]
PamrDilationsOpt = Annotated[
    str | None,
    typer.Option(
        "--pamr-dilations",
        help="Comma-separated PAMR neighbourhood dilations, in resized pixels "
        f"\\[default: {','.join(str(d) for d in _METHOD.pamr_dilations)}]",
        rich_help_panel=METHOD_PANEL,
    ),
]


def parse_dilations(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"8,16"`` (or a sequence of ints) → ``(8, 16)``; :class:`ConfigError` if malformed."""
    if not isinstance(text, str):
        return tuple(text)
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--pamr-dilations expects comma-separated positive integers like 8,16, got {text!r}"
        ) from None
    return values


def method_from_options(
    method: str,
    *,
    no_anomaly_repair: bool = False,
    no_attention_enhancement: bool = False,
    no_feature_aggregation: bool = False,
    no_multi_level_fusion: bool = False,
    adaptive_anomaly_ratio: bool = False,
    boundary_aware_repair: bool = False,
    anomaly_detector: str | None = None,
    pamr_steps: int | None = None,
    pamr_dilations: str | Sequence[int] | None = None,
) -> MethodConfig:
    """The :class:`MethodConfig` of ``--method`` and the switches the user set.

    Options left at ``None`` keep :class:`MethodConfig`'s defaults. Raises :class:`ConfigError` for
    an unknown method or detector, bad values, or SC-CLIP switches given with a baseline method.
    """
    fields: dict[str, object] = {
        "name": method,
        "repair_anomalies": not no_anomaly_repair,
        "attention_enhancement": not no_attention_enhancement,
        "feature_aggregation": not no_feature_aggregation,
        "multi_level_fusion": not no_multi_level_fusion,
        "adaptive_anomaly_ratio": adaptive_anomaly_ratio,
        "boundary_aware_repair": boundary_aware_repair,
    }
    if anomaly_detector is not None:
        fields["anomaly_detector"] = anomaly_detector
    if pamr_steps is not None:
        fields["pamr_steps"] = pamr_steps
    if pamr_dilations is not None:
        fields["pamr_dilations"] = parse_dilations(pamr_dilations)
    return MethodConfig(**fields)  # type: ignore[arg-type]


def engine_from_options(
    engine: str,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
) -> str | RayOptions:
    """``"local"``, or the :class:`~scclip_cli.runs.ray_engine.RayOptions` of ``--engine ray``
    and its options.

    Raises:
        UsageError: an unknown engine, or Ray options given with ``--engine local``.
    """
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    given = {
        "--ray-address": address,
        "--workers": workers,
        "--gpus-per-worker": gpus_per_worker,
        "--cpus-per-worker": cpus_per_worker,
    }
    if engine == "local":
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise UsageError(f"{', '.join(named)} need --engine ray")
        return "local"
    from scclip_cli.runs.ray_engine import RayOptions

    return RayOptions(
        address=address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker if cpus_per_worker is not None else 1.0,
    )


# ---------------------------------------------------------------------------- the shared groups


@dataclass(frozen=True)
class SharedOptions:
    """The options ``segment`` and ``eval`` share, as the library takes them."""

    model: ModelOptions
    preset: str | None
    protocol_overrides: dict[str, object]
    """The protocol fields given explicitly (:func:`protocol_overrides`)."""
    engine: str | RayOptions
    """``"local"`` or the Ray options."""
    shard: str | None
    quiet: bool
    caching: CacheOptions
    """The text-embedding and feature caches (:class:`~scclip_cli.runs.caching.CacheOptions`)."""


def _shared_parameters(
    model: ModelOpt = DEFAULT_MODEL,
    pretrained: PretrainedOpt = DEFAULT_PRETRAINED,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    method: MethodOpt = METHODS[0],
    no_anomaly_repair: NoAnomalyRepairOpt = False,
    no_attention_enhancement: NoAttentionEnhancementOpt = False,
    no_feature_aggregation: NoFeatureAggregationOpt = False,
    no_multi_level_fusion: NoMultiLevelFusionOpt = False,
    adaptive_anomaly_ratio: AdaptiveAnomalyRatioOpt = False,
    boundary_aware_repair: BoundaryAwareRepairOpt = False,
    anomaly_detector: AnomalyDetectorOpt = None,
    pamr_steps: PamrStepsOpt = None,
    pamr_dilations: PamrDilationsOpt = None,
    preset: PresetOpt = None,
    short_side: ShortSideOpt = None,
    crop: CropOpt = None,
    stride: StrideOpt = None,
    logit_scale: LogitScaleOpt = None,
    prob_threshold: ProbThresholdOpt = None,
    area_threshold: AreaThresholdOpt = None,
    batch_size: BatchSizeOpt = None,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = ENGINES[0],
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    cpus_per_worker: CpusPerWorkerOpt = None,
    feature_cache: FeatureCacheOpt = None,
    feature_cache_size: FeatureCacheSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
) -> SharedOptions:
    """The shared options, in the order ``--help`` lists them, as one :class:`SharedOptions`."""
    # the engine first: "--workers need --engine ray" before any other complaint
    engine_choice = engine_from_options(
        engine,
        address=ray_address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
    )
    method_config = method_from_options(
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
    return SharedOptions(
        model=ModelOptions(model, pretrained, device, precision, method_config, batch_size),
        preset=preset,
        protocol_overrides=protocol_overrides(
            short_side=short_side,
            crop=crop,
            stride=stride,
            logit_scale=logit_scale,
            prob_threshold=prob_threshold,
            area_threshold=area_threshold,
        ),
        engine=engine_choice,
        shard=shard,
        quiet=quiet,
        caching=cache_options_from_cli(
            cache_dir=cache_dir,
            no_cache=no_cache,
            feature_cache=feature_cache,
            feature_cache_size=feature_cache_size,
            engine_is_local=engine_choice == "local",
        ),
    )


SHARED_PARAMETER = "shared"
"""The keyword parameter of a command that receives the :class:`SharedOptions`."""


def shared_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the shared options (model, method, protocol, batch size, shard, quiet,
    engine) in place of its ``shared: SharedOptions`` parameter.

    Typer reads the returned function's signature, which lists the shared options where
    ``shared`` stood; when called, they are turned into one :class:`SharedOptions` (checked:
    unknown method, Ray options without ``--engine ray``, ...) and passed as ``shared``.
    """
    own = inspect.signature(command)
    own_hints = typing.get_type_hints(command, include_extras=True)
    shared = inspect.signature(_shared_parameters)
    shared_hints = typing.get_type_hints(_shared_parameters, include_extras=True)
    shared_names = tuple(shared.parameters)
    parameters: list[inspect.Parameter] = []
    for parameter in own.parameters.values():
        if parameter.name == SHARED_PARAMETER:
            parameters += [
                p.replace(annotation=shared_hints[p.name]) for p in shared.parameters.values()
            ]
        else:
            parameters.append(parameter.replace(annotation=own_hints[parameter.name]))

    @functools.wraps(command)
    def with_shared(**values: Any) -> Any:
        picked = {name: values.pop(name) for name in shared_names if name in values}
        return command(**values, **{SHARED_PARAMETER: _shared_parameters(**picked)})

    with_shared.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=own_hints.get("return", own.return_annotation)
    )
    with_shared.__annotations__ = {p.name: p.annotation for p in parameters} | {
        "return": own_hints.get("return", Any)
    }
    return with_shared
