"""How an evaluation is shown: a terminal table, a JSON file and a per-class IoU bar chart (PIL).

The table rounds to 2 decimals (as mmseg's log); the JSON keeps the unrounded percentages, with
``null`` where a score is undefined (NaN: the class is absent from the ground truth).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from scclip_cli.runs.evaluate import EvaluationResult

CHART_FONT_SIZE = 12
"""Pixels; fits a row of :data:`CHART_ROW_HEIGHT`."""
CHART_ROW_HEIGHT = 18
"""Pixels per class in the bar chart."""
CHART_BAR_WIDTH = 400
"""Pixels of a 100 % bar."""
CHART_MAX_NAME_CHARS = 28


def report_json(result: EvaluationResult) -> dict[str, Any]:
    """The JSON report: ``mIoU``, ``mAcc``, ``aAcc`` (percent), ``per_class``, ``num_images``,
    ``config`` (and ``notes``), then ``per_image``: each image's ``{"key", "mIoU", "aAcc",
    "classes": [{"index", "iou"}]}`` (:func:`scclip_cli.maps.metrics.image_scores`), by key.
    NaN becomes ``None``."""
    metrics = result.metrics
    data = {
        "mIoU": metrics["mIoU"],
        "mAcc": metrics["mAcc"],
        "aAcc": metrics["aAcc"],
        "per_class": metrics["per_class"],
        "num_images": metrics["num_images"],
        "config": result.config,
    }
    if result.notes:
        data["notes"] = list(result.notes)
    data["per_image"] = sorted(result.confusion.per_image, key=lambda row: row["key"].split("/"))
    return _nan_to_none(data)


def write_json(result: EvaluationResult, path: str | Path) -> None:
    """Write :func:`report_json` to ``path`` (atomically; strict JSON, no NaN)."""
    from scclip_cli.files.atomic import atomic_write_text

    text = json.dumps(report_json(result), indent=2, allow_nan=False) + "\n"
    atomic_write_text(Path(path), text)


def print_table(result: EvaluationResult, console: Console | None = None) -> None:
    """Per-class IoU and accuracy, then mIoU / mAcc / aAcc, in percent with 2 decimals."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    metrics = result.metrics
    table = Table(title=f"{metrics['num_images']} images", title_justify="left")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("Acc", justify="right")
    for row in metrics["per_class"]:
        table.add_row(row["name"], _pct(row["iou"]), _pct(row["acc"]))
    summary = Table(show_header=True)
    for name in ("mIoU", "mAcc", "aAcc"):
        summary.add_column(name, justify="right")
    summary.add_row(*(_pct(metrics[name]) for name in ("mIoU", "mAcc", "aAcc")))
    console.print(table)
    console.print(summary)
    for note in result.notes:
        console.print(f"note: {note}")


def write_chart(result: EvaluationResult, path: str | Path) -> None:
    """A horizontal bar per class (its IoU, 0-100 %), classes in order, mIoU in the title.

    Classes absent from the ground truth and the prediction (NaN) get ``n/a`` and no bar.
    The format follows the file extension (PNG recommended); written atomically.
    """
    from PIL import Image, ImageDraw

    from scclip_cli.files.atomic import atomic_path
    from scclip_cli.files.fonts import label_font

    metrics = result.metrics
    rows = metrics["per_class"]
    names = [_short(row["name"]) for row in rows]
    font = label_font(CHART_FONT_SIZE, names)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_width = max([_text_width(probe, n, font) for n in names] + [40]) + 10
    value_width = 60
    top = 30
    width = name_width + CHART_BAR_WIDTH + value_width + 10
    bottom = top + CHART_ROW_HEIGHT * len(rows)
    height = bottom + 22
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (5, 8),
        f"per-class IoU, mIoU {_pct(metrics['mIoU'])} ({metrics['num_images']} images)",
        fill="black",
        font=font,
    )
    x0 = name_width
    for tick in range(0, 101, 25):  # light vertical grid at 0/25/50/75/100 %, labelled below
        x = x0 + tick * CHART_BAR_WIDTH // 100
        draw.line([(x, top - 4), (x, bottom + 2)], fill=(225, 225, 225))
        label = f"{tick}%"
        draw.text(
            (x - _text_width(draw, label, font) // 2, bottom + 6), label, fill="gray", font=font
        )
    for i, (row, name) in enumerate(zip(rows, names, strict=True)):
        y = top + i * CHART_ROW_HEIGHT
        draw.text((5, y + 3), name, fill="black", font=font)
        iou = row["iou"]
        if math.isnan(iou):
            draw.text((x0 + 4, y + 3), "n/a", fill=(150, 150, 150), font=font)
            continue
        bar = round(iou / 100 * CHART_BAR_WIDTH)
        if bar > 0:
            draw.rectangle([x0, y + 2, x0 + bar, y + CHART_ROW_HEIGHT - 3], fill=(66, 133, 244))
        draw.text((x0 + bar + 4, y + 3), f"{iou:.1f}", fill="black", font=font)
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        image.save(f, format=image_format)


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}"


def _short(name: str) -> str:
    return name if len(name) <= CHART_MAX_NAME_CHARS else name[: CHART_MAX_NAME_CHARS - 3] + "..."


def _text_width(draw: Any, text: str, font: Any) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
