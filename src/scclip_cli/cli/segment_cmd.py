"""``scclip segment``: a thin wrapper over :func:`scclip_cli.runs.segment.segment`."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from scclip_cli.cli.cache_options import (
    CacheDirOpt,
    FeatureCacheOpt,
    FeatureCacheSizeOpt,
    NoCacheOpt,
    cache_options_from_cli,
)
from scclip_cli.cli.options import (
    RUN_PANEL,
    AdaptiveAnomalyRatioOpt,
    AnomalyDetectorOpt,
    AreaThresholdOpt,
    BatchSizeOpt,
    BoundaryAwareRepairOpt,
    CpusPerWorkerOpt,
    CropOpt,
    DeviceOpt,
    EngineOpt,
    GpusPerWorkerOpt,
    LogitScaleOpt,
    MethodOpt,
    ModelOpt,
    NoAnomalyRepairOpt,
    NoAttentionEnhancementOpt,
    NoFeatureAggregationOpt,
    NoMultiLevelFusionOpt,
    PamrDilationsOpt,
    PamrStepsOpt,
    PrecisionOpt,
    PresetOpt,
    PretrainedOpt,
    ProbThresholdOpt,
    QuietOpt,
    RayAddressOpt,
    ShardOpt,
    ShortSideOpt,
    StrideOpt,
    VocabOpt,
    WorkersOpt,
    method_from_options,
)
from scclip_cli.config import DEFAULT_MODEL, DEFAULT_PRETRAINED

InputsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="INPUT",
        help="Image files, folders (searched recursively for jpg, jpeg, png, bmp, webp, tif, tiff) "
        "and - for newline-separated paths on stdin. Work is done in sorted path order.",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Output folder: <stem>.png masks and <stem>.json statistics mirroring the inputs' "
        "paths, plus summary.json, legend.json/png and failures.jsonl",
    ),
]
OverlayOpt = Annotated[
    bool, typer.Option("--overlay", help="Also write <stem>_overlay.jpg", rich_help_panel=RUN_PANEL)
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Redo images whose outputs exist (by default they are skipped, so a rerun resumes)",
        rich_help_panel=RUN_PANEL,
    ),
]
JsonlOpt = Annotated[
    bool,
    typer.Option(
        "--jsonl",
        help="Print one JSON line per finished image on stdout (messages stay on stderr)",
        rich_help_panel=RUN_PANEL,
    ),
]


def segment_command(
    inputs: InputsArg,
    vocab: VocabOpt,
    out: OutOpt,
    model: ModelOpt = DEFAULT_MODEL,
    pretrained: PretrainedOpt = DEFAULT_PRETRAINED,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    method: MethodOpt = "sc-clip",
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
    overlay: OverlayOpt = False,
    overwrite: OverwriteOpt = False,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
    jsonl: JsonlOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    cpus_per_worker: CpusPerWorkerOpt = None,
    feature_cache: FeatureCacheOpt = None,
    feature_cache_size: FeatureCacheSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
) -> int:
    """Segment image folders into label PNGs and per-image JSON, for labelling pipelines.

    The model loads once. A rerun skips images whose outputs are complete. Exit status: 0 all
    segmented, 1 some inputs failed (listed in failures.jsonl), 2 usage or configuration error.
    """
    from scclip_cli.runs.ray_engine import ray_options_from_cli, segment_on_ray
    from scclip_cli.runs.segment import segment

    ray_options = ray_options_from_cli(
        engine,
        address=ray_address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
    )
    caching = cache_options_from_cli(
        cache_dir=cache_dir,
        no_cache=no_cache,
        feature_cache=feature_cache,
        feature_cache_size=feature_cache_size,
        engine_is_local=ray_options is None,
    )
    cache_arguments = {"caching": caching} if ray_options is None else {}  # Ray: defaults
    run: Callable[..., Any] = (
        segment if ray_options is None else partial(segment_on_ray, ray_options=ray_options)
    )
    with _sigterm_as_interrupt():
        summary = run(
            inputs,
            vocab,
            out,
            model=model,
            pretrained=pretrained,
            device=device,
            precision=precision,
            method=method_from_options(
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
            ),
            preset=preset,
            short_side=short_side,
            crop=crop,
            stride=stride,
            logit_scale=logit_scale,
            prob_threshold=prob_threshold,
            area_threshold=area_threshold,
            batch_size=batch_size,
            overlay=overlay,
            overwrite=overwrite,
            shard=shard,
            quiet=quiet,
            jsonl_stream=sys.stdout if jsonl else None,
            stdin=sys.stdin,
            **cache_arguments,
        )
    if jsonl:
        _flush_stdout()
    return summary.exit_code


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (a scheduler stopping the job) like Ctrl-C, so the run records where it
    stopped in ``summary.json`` before exiting."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _flush_stdout() -> None:
    """Flush the JSON lines; if the reading end of the pipe is gone, silence stdout for good."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
