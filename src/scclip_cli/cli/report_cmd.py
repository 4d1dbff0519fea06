"""``scclip report``: a thin wrapper over :func:`scclip_cli.runs.report.write_report`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from scclip_cli.runs.report import Report

OutDirArg = Annotated[
    Path,
    typer.Argument(
        metavar="OUT_DIR",
        help="The --out folder of scclip segment (any engine; shards sharing it included)",
        show_default=False,
    ),
]
EvalOpt = Annotated[
    Path | None,
    typer.Option(
        "--eval",
        help="The JSON of scclip eval --json for these masks: adds per-class IoU and the images "
        "with the worst mIoU",
        show_default=False,
    ),
]
ThumbnailWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Threads drawing thumbnails \\[default: min(8, CPUs)]",
        show_default=False,
    ),
]
ReportQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages")]


def report_command(
    out_dir: OutDirArg,
    eval_json: EvalOpt = None,
    workers: ThumbnailWorkersOpt = None,
    quiet: ReportQuietOpt = False,
) -> int:
    """Write OUT_DIR/report.html: a page to review a run's masks in a browser, from the files.

    A gallery of overlay thumbnails (sorted by name, confidence or class share; filtered by
    class), each image full size with its mask, overlay and confidence, class charts, failures,
    the run's settings and, with --eval, IoU per class and per image. No server and no network:
    open the file. Thumbnails go to OUT_DIR/report_files/ and are reused by later reports.
    """
    from scclip_cli.runs.report import write_report

    report = write_report(
        out_dir, eval_json=eval_json, workers=workers, progress=not quiet and _stderr_is_terminal()
    )
    if not quiet:
        print_report_line(report)
    return 0


def print_report_line(report: Report) -> None:
    """One line on stderr saying what :func:`~scclip_cli.runs.report.write_report` wrote."""
    print(f"scclip: {report.describe()}", file=sys.stderr)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
