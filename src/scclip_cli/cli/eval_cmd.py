"""``scclip eval``: a thin wrapper over :func:`scclip_cli.runs.evaluate.evaluate`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

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
    WorkersOpt,
    method_from_options,
    protocol_overrides,
)
from scclip_cli.config import DEFAULT_MODEL, DEFAULT_PRETRAINED, PROTOCOL_PRESETS
from scclip_cli.errors import UsageError

DEFAULT_IGNORE_INDEX = 255
"""``scclip_cli.maps.metrics.IGNORE_INDEX``, repeated so that ``--help`` does not import numpy."""

SOURCE_PANEL = "What to score"
SCORING_PANEL = "Scoring"
OUTPUT_PANEL = "Report"

PredOpt = Annotated[
    Path | None,
    typer.Option(
        "--pred",
        help="Prediction label PNGs (pixel value = class index), e.g. 'scclip segment' "
        "masks; paired with --gt (or the --dataset labels) by relative path and stem",
        rich_help_panel=SOURCE_PANEL,
    ),
]
GtOpt = Annotated[
    Path | None,
    typer.Option("--gt", help="Ground-truth label PNGs", rich_help_panel=SOURCE_PANEL),
]
ImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="Images to segment and score against --gt (masks are not written unless --save-pred)",
        rich_help_panel=SOURCE_PANEL,
    ),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help=f"Standard benchmark ({', '.join(PROTOCOL_PRESETS)}): its layout under "
        "--data-root, vocabulary, protocol preset and label conventions",
        rich_help_panel=SOURCE_PANEL,
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="The dataset folder, or a folder holding it under its usual name "
        "(VOCdevkit/VOC2012, coco_stuff164k, cityscapes, ade/ADEChallengeData2016, ...)",
        rich_help_panel=SOURCE_PANEL,
    ),
]
MergeOpt = Annotated[
    bool,
    typer.Option(
        "--merge",
        help="Combine the confusion matrices given as arguments (from --shard runs "
        "with --save-confusion) into one result",
        rich_help_panel=SOURCE_PANEL,
    ),
]
PartsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="[PART.npz]...", help="Confusion-matrix files to --merge", show_default=False
    ),
]
EvalVocabOpt = Annotated[
    Path | None,
    typer.Option(
        "--vocab",
        "-v",
        help="Class list (.txt, one class per line, line 1 is class 0): class "
        "names and count (default with --dataset: the benchmark's)",
        rich_help_panel=SCORING_PANEL,
    ),
]
NumClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-classes",
        min=1,
        help="Number of classes, when no --vocab is given",
        rich_help_panel=SCORING_PANEL,
    ),
]
ReduceZeroOpt = Annotated[
    bool | None,
    typer.Option(
        "--reduce-zero-label/--no-reduce-zero-label",
        help="Ground truth 0 is not scored and every other value drops by 1 (mmseg convention; "
        "default: the dataset's, else off)",
        show_default=False,
        rich_help_panel=SCORING_PANEL,
    ),
]
IgnoreIndexOpt = Annotated[
    int,
    typer.Option(
        "--ignore-index", help="Ground-truth value not scored", rich_help_panel=SCORING_PANEL
    ),
]
GtSuffixOpt = Annotated[
    str,
    typer.Option(
        "--gt-suffix",
        help="Ground-truth name ending stripped before pairing (e.g. "
        "_gtFine_labelTrainIds); other files in --gt are skipped",
        rich_help_panel=SCORING_PANEL,
    ),
]
PredSuffixOpt = Annotated[
    str,
    typer.Option(
        "--pred-suffix",
        help="Prediction name ending stripped before pairing (e.g. "
        "_leftImg8bit); other files in --pred are skipped",
        rich_help_panel=SCORING_PANEL,
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit", min=1, help="Score only the first N samples (sorted)", rich_help_panel=RUN_PANEL
    ),
]
SavePredOpt = Annotated[
    Path | None,
    typer.Option(
        "--save-pred",
        help="Also write the predicted masks here (<key>.png)",
        rich_help_panel=RUN_PANEL,
    ),
]
SaveConfusionOpt = Annotated[
    Path | None,
    typer.Option(
        "--save-confusion",
        help="Write the confusion matrix (.npz), e.g. of a --shard, for --merge",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
JsonOpt = Annotated[
    Path | None,
    typer.Option(
        "--json",
        help="Write the scores, per-class table and settings as JSON",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
SweepOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sweep",
        metavar="NAME=V1,V2,...",
        help="Score every combination of these post-processing settings in one pass over the "
        "images (repeatable; NAME: prob-threshold, logit-scale, area-threshold): prints a table "
        "with the best (highest mIoU) marked, also in --json; the scores shown are the best's",
        rich_help_panel=SCORING_PANEL,
    ),
]
ChartOpt = Annotated[
    Path | None,
    typer.Option(
        "--chart", help="Write a per-class IoU bar chart (PNG)", rich_help_panel=OUTPUT_PANEL
    ),
]


def eval_command(
    parts: PartsArg = None,
    pred: PredOpt = None,
    gt: GtOpt = None,
    images: ImagesOpt = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    merge: MergeOpt = False,
    vocab: EvalVocabOpt = None,
    num_classes: NumClassesOpt = None,
    reduce_zero_label: ReduceZeroOpt = None,
    ignore_index: IgnoreIndexOpt = DEFAULT_IGNORE_INDEX,
    gt_suffix: GtSuffixOpt = "",
    pred_suffix: PredSuffixOpt = "",
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
    limit: LimitOpt = None,
    shard: ShardOpt = None,
    save_pred: SavePredOpt = None,
    save_confusion: SaveConfusionOpt = None,
    json_path: JsonOpt = None,
    chart: ChartOpt = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    cpus_per_worker: CpusPerWorkerOpt = None,
    feature_cache: FeatureCacheOpt = None,
    feature_cache_size: FeatureCacheSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    sweep: SweepOpt = None,
) -> int:
    """Score segmentations with mIoU, mAcc and aAcc (mmsegmentation's definitions).

    scclip eval --pred MASKS --gt LABELS --vocab classes.txt   (existing masks)
    scclip eval --images IMGS --gt LABELS --vocab classes.txt  (segment, score)
    scclip eval --dataset voc21 --data-root datasets           (a benchmark)
    scclip eval --merge part1.npz part2.npz                    (sharded runs)

    Every file is checked before a score is shown: unmatched files, size
    mismatches and labels outside the class range stop the run with exit
    status 2, listing the files.
    """
    from scclip_cli.runs import eval_report
    from scclip_cli.runs.evaluate import EvaluationResult, evaluate, merge_results
    from scclip_cli.runs.ray_engine import evaluate_on_ray, ray_options_from_cli

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
    if sweep and ray_options is not None:
        raise UsageError("--sweep works with the local engine only (drop --engine ray)")
    result: EvaluationResult
    if merge:
        others = {
            "--pred": pred,
            "--gt": gt,
            "--images": images,
            "--dataset": dataset,
            "--data-root": data_root,
            "--shard": shard,
            "--limit": limit,
            "--save-pred": save_pred,
            "--vocab": vocab,
            "--num-classes": num_classes,
            "--engine ray": ray_options,
        }
        given = [name for name, value in others.items() if value is not None]
        if given:
            raise UsageError(f"--merge combines saved matrices; drop {', '.join(given)}")
        result = merge_results(parts or [])
    else:
        if parts:
            raise UsageError(
                f"unexpected argument {str(parts[0])!r} (confusion-matrix files need --merge)"
            )
        run: Callable[..., EvaluationResult] = (
            evaluate
            if ray_options is None
            else partial(evaluate_on_ray, ray_options=ray_options, quiet=quiet)
        )
        result = run(
            gt_dir=gt,
            pred_dir=pred,
            images_dir=images,
            dataset=dataset,
            data_root=data_root,
            vocab=vocab,
            num_classes=num_classes,
            reduce_zero_label=reduce_zero_label,
            ignore_index=ignore_index,
            gt_suffix=gt_suffix,
            pred_suffix=pred_suffix,
            limit=limit,
            shard=shard,
            save_pred=save_pred,
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
            protocol_overrides=protocol_overrides(
                short_side=short_side,
                crop=crop,
                stride=stride,
                logit_scale=logit_scale,
                prob_threshold=prob_threshold,
                area_threshold=area_threshold,
            ),
            batch_size=batch_size,
            progress=False if quiet else None,
            **cache_arguments,
            **({"sweep": sweep} if sweep else {}),
        )
    eval_report.print_table(result)
    if "sweep" in result.run_info:
        from scclip_cli.runs.sweep import format_sweep

        print(format_sweep(result.run_info["sweep"]))
    written = []
    if save_confusion is not None:
        result.confusion.save(save_confusion)
        written.append(str(save_confusion))
    if json_path is not None:
        eval_report.write_json(result, json_path)
        written.append(str(json_path))
    if chart is not None:
        eval_report.write_chart(result, chart)
        written.append(str(chart))
    if written and not quiet:
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0
