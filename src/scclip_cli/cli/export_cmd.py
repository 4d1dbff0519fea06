"""``scclip export``: a thin wrapper over :func:`scclip_cli.runs.export.export_masks`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from scclip_cli.cli.options import QuietOpt

FORMAT_PANEL = "Format options"

MasksArg = Annotated[
    Path,
    typer.Argument(
        metavar="MASKS_DIR",
        help="A folder written by scclip segment (masks, per-image JSON, legend.json)",
        show_default=False,
    ),
]
ToOpt = Annotated[
    str,
    typer.Option(
        "--to",
        help="coco (COCO JSON, RLE) | labelstudio (tasks JSON + <stem>.config.xml) | "
        "cvat (Segmentation mask 1.1 zip) | yolo (folder: labels/*.txt + data.yaml)",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="The file (coco, labelstudio: .json; cvat: .zip) or folder (yolo) to write",
        show_default=False,
    ),
]
ImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="The segmented images: file names and URLs are made relative to this folder",
    ),
]
MinAreaOpt = Annotated[
    int,
    typer.Option(
        "--min-area",
        metavar="PIXELS",
        help="Drop connected pieces of a class smaller than this (cvat: they become class 0)",
    ),
]
OrderOpt = Annotated[
    str,
    typer.Option(
        "--order",
        help="name (sorted paths) | confidence (least confident image first, to review first)",
    ),
]
InstancesOpt = Annotated[
    bool,
    typer.Option(
        "--instances",
        help="coco: one annotation per connected component instead of one per class",
        rich_help_panel=FORMAT_PANEL,
    ),
]
SkipBackgroundOpt = Annotated[
    bool,
    typer.Option(
        "--skip-background",
        help="Leave class 0 out (not in cvat, whose label maps cover every pixel)",
        rich_help_panel=FORMAT_PANEL,
    ),
]
IscrowdOpt = Annotated[
    bool,
    typer.Option(
        "--iscrowd",
        help="coco: write iscrowd 1 (default 0: Detectron2 and MMDetection skip crowd "
        "annotations in training; every common importer reads RLE either way)",
        rich_help_panel=FORMAT_PANEL,
    ),
]
ImageUrlPrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--image-url-prefix",
        help="labelstudio: data.image is this prefix + the image path relative to --images "
        "(default /data/local-files/?d= , Label Studio's local-files URL)",
        rich_help_panel=FORMAT_PANEL,
    ),
]
FromNameOpt = Annotated[
    str,
    typer.Option(
        "--from-name", help="labelstudio: the BrushLabels tag name", rich_help_panel=FORMAT_PANEL
    ),
]
ToNameOpt = Annotated[
    str,
    typer.Option("--to-name", help="labelstudio: the Image tag name", rich_help_panel=FORMAT_PANEL),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")]


def export_command(
    masks_dir: MasksArg,
    to: ToOpt,
    out: OutOpt,
    images: ImagesOpt = None,
    min_area: MinAreaOpt = 0,
    order: OrderOpt = "name",
    instances: InstancesOpt = False,
    skip_background: SkipBackgroundOpt = False,
    iscrowd: IscrowdOpt = False,
    image_url_prefix: ImageUrlPrefixOpt = None,
    from_name: FromNameOpt = "tag",
    to_name: ToNameOpt = "image",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """Export scclip segment masks to COCO, Label Studio, CVAT or YOLO, without a model.

    Reads only the masks, the per-image JSON and legend.json. Writes atomically: on any error
    (exit 2) nothing is left half-written.
    """
    from scclip_cli.runs.export import export_masks

    result = export_masks(
        masks_dir,
        to,
        out,
        images_dir=images,
        min_area=min_area,
        instances=instances,
        skip_background=skip_background,
        iscrowd=iscrowd,
        order=order,
        image_url_prefix=image_url_prefix,
        from_name=from_name,
        to_name=to_name,
        overwrite=overwrite,
    )
    if not quiet:
        written = ", ".join(str(p) for p in result.files)
        print(
            f"scclip: exported {result.images} images ({result.annotations} annotations) "
            f"as {result.to} to {written}",
            file=sys.stderr,
        )
    return 0
