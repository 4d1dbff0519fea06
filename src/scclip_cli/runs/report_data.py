"""What the review page of a run shows, read from the run's output folder (no image is opened).

``scclip segment`` leaves, under ``--out``: per image ``<stem>.png`` (mask) and ``<stem>.json``
(size and per-class statistics), maybe ``<stem>_overlay.jpg``, ``<stem>_color.png`` (beside 16-bit
masks) and ``<stem>_conf.png`` (confidence), and per run ``summary.json``, ``failures.jsonl`` and
``legend.json`` (``summary.shard-I-of-N.json`` / ``failures.shard-I-of-N.jsonl`` for shards, which
may share the folder). This module reads them into plain, JSON-ready values:

- :func:`find_images`: every per-image record. A record is recognised by its content (a JSON object
  with ``width``, ``height`` and ``classes``, its mask beside it), so runs of either engine, shards
  sharing the folder and file names that look like run files are all found.
- :func:`read_summaries`, :func:`read_failures`: the run-level files of every shard.
- :func:`read_eval`: the JSON of ``scclip eval --json``.
- :func:`class_summary`: per class, the images containing it, its share of all pixels and its
  pixel-weighted mean confidence, over the images found.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from scclip_cli.errors import InputError
from scclip_cli.files.mask_io import COLOR_SUFFIX

REPORT_NAME = "report.html"
REPORT_FILES = "report_files"
"""Folder under ``--out`` for what the page needs besides itself (thumbnails)."""
CONFIDENCE_SUFFIX = "_conf.png"
"""``scclip segment --save-confidence``: the winning class's probability per pixel, 0..255."""
OVERLAY_SUFFIX = "_overlay.jpg"
SUMMARY_RE = re.compile(r"^summary(\.shard-\d+-of-\d+)?\.json$")
FAILURES_RE = re.compile(r"^failures(\.shard-\d+-of-\d+)?\.jsonl$")


@dataclass(frozen=True)
class ImageResult:
    """One segmented image of the run, as its files say."""

    key: str
    """Path of its outputs relative to the output folder, without extension, ``/``-separated (the
    key ``scclip eval`` gives the same mask)."""
    record: dict[str, Any]
    """Its ``<stem>.json``."""
    mask: Path
    json_path: Path
    color: Path | None
    """``<stem>_color.png`` (a colour rendering of a 16-bit mask), when there."""
    confidence: Path | None
    """``<stem>_conf.png``, when there."""
    overlay: Path | None
    """``<stem>_overlay.jpg``, when there."""
    image: Path | None
    """The segmented image (``record["path"]``) when it can be found from here."""

    @property
    def width(self) -> int:
        return int(self.record["width"])

    @property
    def height(self) -> int:
        return int(self.record["height"])

    @property
    def classes(self) -> list[dict[str, Any]]:
        return list(self.record["classes"])

    @property
    def mean_confidence(self) -> float | None:
        """The record's image-level ``mean_confidence``; without one, the pixel-weighted mean of
        its classes' ``mean_confidence``; ``None`` when the record has no confidences."""
        return image_mean_confidence(self.record)


def image_mean_confidence(record: Mapping[str, Any]) -> float | None:
    """A per-image record's mean confidence (see :attr:`ImageResult.mean_confidence`)."""
    given = record.get("mean_confidence")
    if isinstance(given, int | float) and not isinstance(given, bool) and math.isfinite(given):
        return float(given)
    weighted = 0.0
    pixels = 0
    for entry in record.get("classes", []):
        confidence = entry.get("mean_confidence")
        if confidence is None:
            return None
        weighted += float(confidence) * int(entry["pixels"])
        pixels += int(entry["pixels"])
    return weighted / pixels if pixels else None


def find_images(
    out_dir: Path, image_bases: Sequence[Path] = ()
) -> tuple[list[ImageResult], list[str]]:
    """Every complete image under ``out_dir``, sorted by key; and the problems met (unreadable
    JSON that has a mask beside it), as text.

    A record's relative image path is looked for from the current folder, then from each of
    ``image_bases`` (see :func:`segment_folders`).

    Raises:
        InputError: ``out_dir`` is not a folder.
    """
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such folder")
    images: list[ImageResult] = []
    problems: list[str] = []
    for json_path in _walk_json(out_dir):
        mask = json_path.with_suffix(".png")
        if not mask.is_file():
            continue  # run files, eval reports and other JSON
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            problems.append(f"{json_path}: cannot read ({err})")
            continue
        if not _is_image_record(record):
            continue
        rel = json_path.relative_to(out_dir).with_suffix("")
        images.append(
            ImageResult(
                key=PurePosixPath(*rel.parts).as_posix(),
                record=record,
                mask=mask,
                json_path=json_path,
                color=_beside(json_path, COLOR_SUFFIX),
                confidence=_beside(json_path, CONFIDENCE_SUFFIX),
                overlay=_beside(json_path, OVERLAY_SUFFIX),
                image=_source_image(record, image_bases),
            )
        )
    images.sort(key=lambda image: image.key.split("/"))
    return images, problems


def _walk_json(out_dir: Path) -> Iterator[Path]:
    """Every ``.json`` under ``out_dir`` but hidden files (temporaries of atomic writes)."""
    for folder, subfolders, files in os.walk(out_dir):
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                yield Path(folder) / name


def _is_image_record(record: Any) -> bool:
    if not isinstance(record, dict):
        return False
    try:
        int(record["width"]), int(record["height"])
        for entry in record["classes"]:
            int(entry["index"]), int(entry["pixels"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _beside(json_path: Path, suffix: str) -> Path | None:
    path = json_path.with_name(json_path.stem + suffix)
    return path if path.is_file() else None


def _source_image(record: Mapping[str, Any], bases: Sequence[Path]) -> Path | None:
    """The image the record was made from, when it is there."""
    path = record.get("path")
    if not isinstance(path, str) or not path:
        return None
    given = Path(path)
    candidates = [given] if given.is_absolute() else [given, *(base / given for base in bases)]
    return next((c for c in candidates if c.is_file()), None)


def segment_folders(out_dir: Path, summaries: Sequence[tuple[str, dict[str, Any]]]) -> list[Path]:
    """The folders ``scclip segment`` ran in, where the summaries tell them: a run given
    ``--out runs/a`` whose output folder is now ``/data/runs/a`` ran in ``/data``. Image paths in
    the records are relative to that folder, which need not be the current one."""
    here = Path(os.path.abspath(out_dir))
    folders: list[Path] = []
    for _, summary in summaries:
        recorded = summary.get("out_dir")
        if not isinstance(recorded, str) or not recorded or Path(recorded).is_absolute():
            continue
        parts = Path(os.path.normpath(recorded)).parts
        if ".." in parts or len(parts) >= len(here.parts) or here.parts[-len(parts) :] != parts:
            continue
        folder = Path(*here.parts[: -len(parts)])
        if folder not in folders:
            folders.append(folder)
    return folders


# --- run-level files ----------------------------------------------------------------------------


def read_summaries(out_dir: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """``[(file name, content)]`` of ``summary.json`` and every ``summary.shard-*.json``, by
    name; and the problems met."""
    found: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for path in sorted(out_dir.iterdir(), key=lambda p: _shard_order(p.name)):
        if not SUMMARY_RE.match(path.name) or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            problems.append(f"{path.name}: cannot read ({err})")
            continue
        if isinstance(data, dict):
            found.append((path.name, data))
        else:
            problems.append(f"{path.name}: not a run summary")
    return found, problems


def read_failures(out_dir: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Every line of ``failures.jsonl`` and ``failures.shard-*.jsonl``, as ``{"path", "reason",
    "stage", "file"}``; and the problems met (lines that are not failures)."""
    failures: list[dict[str, str]] = []
    problems: list[str] = []
    for path in sorted(out_dir.iterdir(), key=lambda p: _shard_order(p.name)):
        if not FAILURES_RE.match(path.name) or not path.is_file():
            continue
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as err:
            problems.append(f"{path.name}: cannot read ({err.strerror or err})")
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                failures.append(
                    {
                        "path": str(entry["path"]),
                        "reason": str(entry.get("reason", "")),
                        "stage": str(entry.get("stage", "")),
                        "file": path.name,
                    }
                )
            except (ValueError, KeyError, TypeError):
                problems.append(f"{path.name} line {number}: not a failure record")
    return failures, problems


def _shard_order(name: str) -> tuple[int, int, str]:
    """``summary.json`` first, then shards by number (``shard-10`` after ``shard-9``)."""
    match = re.search(r"\.shard-(\d+)-of-(\d+)\.", name)
    return (int(match[2]), int(match[1]), name) if match else (0, 0, name)


def read_eval(path: Path) -> dict[str, Any]:
    """The JSON written by ``scclip eval --json``.

    Raises:
        InputError: missing, unreadable or not an evaluation report.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--eval {path}: no such file") from None
    except (OSError, ValueError) as err:
        raise InputError(f"--eval {path}: cannot read it as JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("per_class"), list):
        raise InputError(f"--eval {path}: not the JSON of scclip eval --json (no per_class)")
    return data


# --- derived values -----------------------------------------------------------------------------


def class_summary(
    images: Sequence[ImageResult], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Per class present in some image: ``{"index", "name", "images", "pixels", "fraction",
    "mean_confidence"}``, by index. ``fraction`` is of all pixels of the images;
    ``mean_confidence`` is pixel-weighted (``None`` when the records have none)."""
    # index -> [images, pixels, confidence * pixels, pixels with a confidence]
    totals: dict[int, list[float]] = {}
    names: dict[int, str] = {}
    area = 0
    for image in images:
        area += image.width * image.height
        for entry in image.classes:
            index = int(entry["index"])
            pixels = int(entry["pixels"])
            total = totals.setdefault(index, [0.0, 0.0, 0.0, 0.0])
            total[0] += 1
            total[1] += pixels
            if entry.get("mean_confidence") is not None:
                total[2] += float(entry["mean_confidence"]) * pixels
                total[3] += pixels
            names.setdefault(index, str(entry.get("name", index)))
    rows = []
    for index in sorted(totals):
        images_with, class_pixels, weighted, pixels_with = totals[index]
        name = class_names[index] if index < len(class_names) else names[index]
        rows.append(
            {
                "index": index,
                "name": name,
                "images": int(images_with),
                "pixels": int(class_pixels),
                "fraction": class_pixels / area if area else 0.0,
                "mean_confidence": weighted / pixels_with if pixels_with else None,
            }
        )
    return rows


def legend_classes(out_dir: Path) -> list[dict[str, Any]]:
    """``legend.json``'s ``[{"index", "name", "color": [r, g, b]}]`` (empty when absent or
    unreadable)."""
    try:
        data = json.loads((out_dir / "legend.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list):
        return []
    rows = []
    for position, entry in enumerate(data):
        if not isinstance(entry, dict):
            entry = {"name": entry}
        rows.append(
            {
                "index": int(entry.get("index", position)),
                "name": str(entry.get("name", position)),
                "color": entry.get("color"),
            }
        )
    return rows


def flatten_config(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested configuration as ``[("a.b.c", "value as text")]``; lists of scalars stay one
    entry, and ``class_names`` is left out (the page lists the classes)."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            if key == "class_names":
                continue
            rows += flatten_config(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, str):
        return [(prefix, value)]
    return [(prefix, json.dumps(value, ensure_ascii=False))]
