"""``scclip report``: a static review page of a segment run, as a plain function.

    >>> from scclip_cli.runs.report import write_report
    >>> report = write_report("masks/", eval_json="eval.json")
    >>> report.path  # masks/report.html

The page (``OUT/report.html``) opens from the file system: no server, no network. It links the
run's own files by relative paths (masks, confidence maps, the segmented images) and the overlay
thumbnails this function draws under ``OUT/report_files/thumbs/`` (in parallel; a thumbnail newer
than its mask and image is reused, so a rerun only draws what changed). Everything else the page
shows is one JSON document inline in the page (:func:`page_data`), rendered by the page's own small
script (:mod:`scclip_cli.runs.report_page`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scclip_cli.errors import InputError
from scclip_cli.files.atomic import atomic_write_text
from scclip_cli.files.mask_io import legend_entries
from scclip_cli.files.thumbnails import (
    THUMBNAIL_MAX_SIDE,
    thumbnail_is_fresh,
    write_overlay_thumbnail,
)
from scclip_cli.runs.report_data import (
    REPORT_FILES,
    REPORT_NAME,
    ImageResult,
    class_summary,
    find_images,
    flatten_config,
    legend_classes,
    read_eval,
    read_failures,
    read_summaries,
    segment_folders,
)

DEFAULT_THUMBNAIL_WORKERS = 8
PAGE_DATA_VERSION = 1


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote."""

    path: Path
    """``OUT/report.html``."""
    images: int
    thumbnails_drawn: int
    thumbnails_reused: int
    problems: tuple[str, ...] = field(default_factory=tuple)
    """Files that could not be read or drawn (also listed on the page)."""

    def describe(self) -> str:
        """One line saying what was written, for the terminal."""
        problems = f"; {len(self.problems)} problem(s), listed on the page" if self.problems else ""
        return (
            f"wrote {self.path} ({self.images} images; thumbnails: "
            f"{self.thumbnails_drawn} drawn, {self.thumbnails_reused} reused){problems}"
        )


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    eval_json: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    max_side: int = THUMBNAIL_MAX_SIDE,
    progress: bool = False,
) -> Report:
    """Write ``OUT/report.html`` for the segment run(s) in ``out_dir``.

    Args:
        out_dir: the ``--out`` folder of ``scclip segment`` (any engine, any shards).
        eval_json: the JSON of ``scclip eval --json`` for these masks, for the evaluation section.
        workers: threads drawing thumbnails (default ``min(8, CPUs)``).
        max_side: longer side of the thumbnails, in pixels.
        progress: a progress bar on stderr while thumbnails are drawn.

    Returns:
        The page's path and what was drawn.

    Raises:
        InputError: ``out_dir`` is not a folder or holds no segment results; ``eval_json`` is not
            an evaluation report.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: no such folder")
    summaries, summary_problems = read_summaries(out)
    images, problems = find_images(out, segment_folders(out, summaries))
    failures, failure_problems = read_failures(out)
    if not images and not summaries:
        raise InputError(
            f"{out}: no scclip segment results here (no summary.json, no <stem>.json beside a mask)"
        )
    evaluation = read_eval(Path(eval_json)) if eval_json is not None else None
    thumbs, drawn, reused, thumb_problems = draw_thumbnails(
        out, images, workers=workers, max_side=max_side, progress=progress
    )
    problems += summary_problems + failure_problems + thumb_problems
    data = page_data(
        out,
        images,
        thumbs,
        summaries=summaries,
        failures=failures,
        evaluation=evaluation,
        problems=problems,
    )
    from scclip_cli.runs.report_page import render_page

    path = out / REPORT_NAME
    atomic_write_text(path, render_page(data, title=_title(out)))
    return Report(path, len(images), drawn, reused, tuple(problems))


def thumbnail_path(out: Path, image: ImageResult) -> Path:
    """Where the thumbnail of ``image`` goes: ``report_files/overlays/<key>.jpg``, or
    ``report_files/masks/<key>.jpg`` for the colours alone when the image is not found (so an
    image found again later gets its overlay drawn, not the old colours-only picture)."""
    folder = "overlays" if image.image is not None else "masks"
    return out.joinpath(REPORT_FILES, folder, *image.key.split("/")).with_name(
        image.key.rsplit("/", 1)[-1] + ".jpg"
    )


def draw_thumbnails(
    out: Path,
    images: Sequence[ImageResult],
    *,
    workers: int | None = None,
    max_side: int = THUMBNAIL_MAX_SIDE,
    progress: bool = False,
) -> tuple[list[Path | None], int, int, list[str]]:
    """The thumbnail of each image, drawn where it is missing or older than its sources.

    Returns:
        ``(thumbnail per image or None where it could not be drawn, drawn, reused, problems)``.
    """
    from tqdm import tqdm

    dests = [thumbnail_path(out, image) for image in images]
    thumbs: list[Path | None] = list(dests)
    todo = [
        i
        for i, image in enumerate(images)
        if not thumbnail_is_fresh(dests[i], (image.mask, image.image))
    ]
    problems: list[str] = []

    def draw(i: int) -> str | None:
        image, dest = images[i], dests[i]
        try:
            write_overlay_thumbnail(image.mask, image.image, dest, max_side=max_side)
        except Exception as err:  # one bad mask must not stop the page
            return f"{image.mask}: no thumbnail ({type(err).__name__}: {err})"
        return None

    threads = workers or min(DEFAULT_THUMBNAIL_WORKERS, os.cpu_count() or 1)
    with (
        tqdm(
            total=len(todo), desc="thumbnails", unit="img", file=sys.stderr, disable=not progress
        ) as bar,
        ThreadPoolExecutor(max_workers=max(1, threads)) as pool,
    ):
        for i, problem in zip(todo, pool.map(draw, todo), strict=True):
            if problem is not None:
                problems.append(problem)
                thumbs[i] = None
            bar.update(1)
    drawn = len(todo) - len(problems)
    return thumbs, drawn, len(images) - len(todo), problems


def page_data(
    out: Path,
    images: Sequence[ImageResult],
    thumbs: Sequence[Path | None],
    *,
    summaries: Sequence[tuple[str, dict[str, Any]]],
    failures: Sequence[dict[str, str]],
    evaluation: dict[str, Any] | None,
    problems: Sequence[str],
) -> dict[str, Any]:
    """The JSON document the page renders (every path a URL relative to the page)."""
    class_names = _class_names(out, summaries, images)
    classes = [
        {"index": e["index"], "name": e["name"], "color": "#{:02x}{:02x}{:02x}".format(*e["color"])}
        for e in legend_entries(class_names)
    ]
    return {
        "version": PAGE_DATA_VERSION,
        "title": _title(out),
        "classes": classes,
        "images": [
            _image_entry(out, image, thumb) for image, thumb in zip(images, thumbs, strict=True)
        ],
        "classSummary": [_rounded(row) for row in class_summary(images, class_names)],
        "failures": list(failures),
        "runs": [_run_entry(name, summary) for name, summary in summaries],
        "config": _config_rows(summaries),
        "eval": _eval_entry(evaluation) if evaluation is not None else None,
        "problems": list(problems),
    }


def _title(out: Path) -> str:
    return Path(os.path.abspath(out)).name or str(out)


def _url(path: Path, out: Path) -> str:
    """``path`` as a URL relative to the page in ``out`` (an absolute file URL when there is no
    relative path, e.g. another drive)."""
    try:
        relative = os.path.relpath(path, out)
    except ValueError:
        return Path(os.path.abspath(path)).as_uri()
    return quote(relative.replace(os.sep, "/"), safe="/")


def _class_names(
    out: Path, summaries: Sequence[tuple[str, dict[str, Any]]], images: Sequence[ImageResult]
) -> list[str]:
    """From ``legend.json``, else the run's configuration, else the names in the records."""
    legend = legend_classes(out)
    if legend:
        by_index = {row["index"]: row["name"] for row in legend}
    else:
        by_index = {}
        for _, summary in summaries:
            names = summary.get("config", {}).get("class_names")
            if isinstance(names, list):
                by_index = dict(enumerate(str(n) for n in names))
                break
        for image in images:
            for entry in image.classes:
                by_index.setdefault(int(entry["index"]), str(entry.get("name", entry["index"])))
    count = max(by_index, default=-1) + 1
    return [by_index.get(i, str(i)) for i in range(count)]


def _image_entry(out: Path, image: ImageResult, thumb: Path | None) -> dict[str, Any]:
    area = image.width * image.height
    mean = image.mean_confidence
    classes = []
    for entry in image.classes:
        pixels = int(entry["pixels"])
        confidence = entry.get("mean_confidence")
        fraction = entry.get("fraction")
        classes.append(
            [
                int(entry["index"]),
                pixels,
                round(float(fraction), 6) if fraction is not None else round(pixels / area, 6),
                round(float(confidence), 6) if confidence is not None else None,
            ]
        )
    return {
        "key": image.key,
        "path": str(image.record.get("path", "")),
        "width": image.width,
        "height": image.height,
        "meanConf": round(mean, 6) if mean is not None else None,
        "classes": classes,
        "thumb": _url(thumb, out) if thumb is not None else None,
        "mask": _url(image.color or image.mask, out),
        "image": _url(image.image, out) if image.image is not None else None,
        "conf": _url(image.confidence, out) if image.confidence is not None else None,
    }


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}


def _run_entry(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    counts = _mapping(summary.get("counts"))
    timing = _mapping(summary.get("timing"))
    return {
        "file": name,
        "status": str(summary.get("status", "")),
        "error": summary.get("error"),
        "counts": {k: counts.get(k) for k in ("images", "done", "skipped", "failed")},
        "timing": timing,
        "started": summary.get("started_at"),
        "finished": summary.get("finished_at"),
    }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _config_rows(summaries: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The first run's flattened configuration, and the keys whose values differ between runs
    (shards record their own shard, output folder and engine)."""
    flats = [dict(flatten_config(summary.get("config", {}))) for _, summary in summaries]
    if not flats:
        return {"rows": [], "differs": []}
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    differs = [
        [key, [flat.get(key) for flat in flats]]
        for key in keys
        if len({flat.get(key) for flat in flats}) > 1
    ]
    return {"rows": [[key, flats[0].get(key)] for key in keys], "differs": differs}


def _eval_entry(evaluation: dict[str, Any]) -> dict[str, Any]:
    per_image = evaluation.get("per_image")
    return {
        "mIoU": evaluation.get("mIoU"),
        "mAcc": evaluation.get("mAcc"),
        "aAcc": evaluation.get("aAcc"),
        "numImages": evaluation.get("num_images"),
        "perClass": [
            {"name": str(row.get("name", "")), "iou": row.get("iou"), "acc": row.get("acc")}
            for row in evaluation.get("per_class", [])
            if isinstance(row, dict)
        ],
        "perImage": [
            {
                "key": str(row.get("key", "")),
                "mIoU": row.get("mIoU"),
                "aAcc": row.get("aAcc"),
                "classes": [
                    [int(c["index"]), c.get("iou")]
                    for c in row.get("classes", [])
                    if isinstance(c, dict) and "index" in c
                ],
            }
            for row in per_image
            if isinstance(row, dict)
        ]
        if isinstance(per_image, list)
        else None,
        "notes": [str(n) for n in evaluation.get("notes", []) if n is not None],
    }
