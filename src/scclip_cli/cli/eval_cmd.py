"""``scclip eval``: a thin wrapper over :func:`scclip_cli.runs.evaluate.evaluate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scclip_cli.cli.options import RUN_PANEL, SharedOptions, shared_options
from scclip_cli.cli.signals import sigterm_as_interrupt
from scclip_cli.config import PROTOCOL_PRESETS
from scclip_cli.errors import UsageError

if TYPE_CHECKING:
    from scclip_cli.runs.evaluate import EvaluationResult

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


@shared_options
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
    *,
    shared: SharedOptions,
    limit: LimitOpt = None,
    save_pred: SavePredOpt = None,
    save_confusion: SaveConfusionOpt = None,
    json_path: JsonOpt = None,
    chart: ChartOpt = None,
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
    from scclip_cli.runs.evaluate import evaluate, merge_results

    result: EvaluationResult
    if merge:
        _check_merge_alone(
            {
                "--pred": pred,
                "--gt": gt,
                "--images": images,
                "--dataset": dataset,
                "--data-root": data_root,
                "--shard": shared.shard,
                "--limit": limit,
                "--save-pred": save_pred,
                "--vocab": vocab,
                "--num-classes": num_classes,
                "--engine ray": None if shared.engine == "local" else shared.engine,
                "--sweep": sweep or None,
            }
        )
        result = merge_results(parts or [])
    else:
        if parts:
            raise UsageError(
                f"unexpected argument {str(parts[0])!r} (confusion-matrix files need --merge)"
            )
        with sigterm_as_interrupt():
            result = evaluate(
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
                shard=shared.shard,
                save_pred=save_pred,
                model=shared.model,
                engine=shared.engine,
                preset=shared.preset,
                protocol_overrides=shared.protocol_overrides,
                progress=False if shared.quiet else None,
                quiet=shared.quiet,
                caching=shared.caching,
                sweep=tuple(sweep or ()),
            )
    _report(result, save_confusion, json_path, chart, quiet=shared.quiet)
    return 0


def _check_merge_alone(others: dict[str, object]) -> None:
    """``--merge`` combines saved matrices: any option of a scoring run is a usage error."""
    given = [name for name, value in others.items() if value is not None]
    if given:
        raise UsageError(f"--merge combines saved matrices; drop {', '.join(given)}")


def _report(
    result: EvaluationResult,
    save_confusion: Path | None,
    json_path: Path | None,
    chart: Path | None,
    *,
    quiet: bool,
) -> None:
    """The table on stdout, and the files asked for."""
    from scclip_cli.runs import eval_report

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
