"""``scclip segment``: a thin wrapper over :func:`scclip_cli.runs.segment.segment`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from scclip_cli.cli.options import RUN_PANEL, SharedOptions, VocabOpt, shared_options
from scclip_cli.cli.signals import sigterm_as_interrupt

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
SaveConfidenceOpt = Annotated[
    bool,
    typer.Option(
        "--save-confidence",
        help="Also write <stem>_conf.png: the winning class's probability per pixel as uint8 "
        "(round(confidence*255)), at the image's size",
        rich_help_panel=RUN_PANEL,
    ),
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

ReportOpt = Annotated[
    bool,
    typer.Option(
        "--report",
        help="At the end, write OUT/report.html to review the masks in a browser "
        "(as scclip report OUT)",
        rich_help_panel=RUN_PANEL,
    ),
]


@shared_options
def segment_command(
    inputs: InputsArg,
    vocab: VocabOpt,
    out: OutOpt,
    shared: SharedOptions,
    overlay: OverlayOpt = False,
    save_confidence: SaveConfidenceOpt = False,
    overwrite: OverwriteOpt = False,
    jsonl: JsonlOpt = False,
    report: ReportOpt = False,
) -> int:
    """Segment image folders into label PNGs and per-image JSON, for labelling pipelines.

    The model loads once. A rerun skips images whose outputs are complete.

    Exit status: 0 all segmented, 1 some inputs failed (listed in failures.jsonl),
    2 usage or configuration error (also when another scclip run writes to --out),
    130 interrupted (Ctrl-C), 143 stopped by SIGTERM.
    """
    from scclip_cli.runs.segment import segment

    with sigterm_as_interrupt():
        summary = segment(
            inputs,
            vocab,
            out,
            model=shared.model,
            engine=shared.engine,
            preset=shared.preset,
            overlay=overlay,
            save_confidence=save_confidence,
            overwrite=overwrite,
            shard=shared.shard,
            quiet=shared.quiet,
            jsonl_stream=sys.stdout if jsonl else None,
            stdin=sys.stdin,
            report=report,
            caching=shared.caching,
            **shared.protocol_overrides,  # type: ignore[arg-type]
        )
    if jsonl:
        _flush_stdout()
    return summary.exit_code


def _flush_stdout() -> None:
    """Flush the JSON lines; if the reading end of the pipe is gone, silence stdout for good."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
