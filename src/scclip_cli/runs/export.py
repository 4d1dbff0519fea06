"""Turn a ``scclip segment`` folder into what labelling tools and trainers import: ``scclip
export`` as a plain function.

    >>> from scclip_cli.runs.export import export_masks
    >>> export_masks("masks/", "coco", "masks.coco.json", images_dir="imgs/")

It reads only what ``scclip segment`` wrote (label maps, per-image JSON, ``legend.json``; see
:mod:`scclip_cli.files.segment_folder`), loads no model, and holds one label map in memory at a
time. Formats (details in each writer's module):

- ``coco``: one COCO JSON (:mod:`scclip_cli.files.coco_format`): one annotation per class present
  in an image, or with ``instances`` one per 8-connected component; COCO RLE from pycocotools.
- ``labelstudio``: a JSON list of tasks with brush predictions, and the labelling-config XML
  beside it (``<out stem>.config.xml``) (:mod:`scclip_cli.files.labelstudio_format`).
- ``cvat``: CVAT's "Segmentation mask 1.1" zip (:mod:`scclip_cli.files.cvat_format`).
- ``yolo``: a folder with ``labels/<stem>.txt`` polygons and ``data.yaml``
  (:mod:`scclip_cli.files.yolo_format`, outlines from :mod:`scclip_cli.maps.contours`).

Checks, before anything is written: ``out`` must not exist (unless ``overwrite``), the folder must
be a segment output, every label map must have its per-image JSON and the reverse, the records
must name the legend's classes, and with ``images_dir`` every image must be found. While
streaming, a label map whose size or values do not match its record or the legend stops the
export. Everything is written under temporary names and moved into place at the end, so a failed
export leaves nothing behind (and an existing ``out`` untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import numpy as np

from scclip_cli.errors import ExportError, InputError, UsageError
from scclip_cli.files.atomic import temporary_path_for
from scclip_cli.files.image_io import IMAGE_EXTENSIONS
from scclip_cli.files.segment_folder import SegmentedImage, SegmentFolder, scan_segment_folder

FORMATS = ("coco", "labelstudio", "cvat", "yolo")
ORDERS = ("name", "confidence")
LABEL_STUDIO_LOCAL_FILES = "/data/local-files/?d="
"""Label Studio's URL for files served from ``LOCAL_FILES_DOCUMENT_ROOT``."""
MAX_PROBLEMS_SHOWN = 10


@dataclass
class ExportResult:
    """What an export wrote."""

    to: str
    out: Path
    files: list[Path]
    """The files (or folder) written."""
    images: int
    annotations: int
    """COCO annotations, Label Studio results, YOLO polygons, CVAT masks."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Item:
    image: SegmentedImage
    image_path: Path | None
    """The image file under ``images_dir``, when given."""
    relative: PurePosixPath
    """The image's path relative to ``images_dir`` (or the mask key plus the image suffix)."""


def export_masks(
    masks_dir: str | os.PathLike[str],
    to: str,
    out: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    min_area: int = 0,
    instances: bool = False,
    skip_background: bool = False,
    iscrowd: bool = False,
    order: str = "name",
    image_url_prefix: str | None = None,
    from_name: str = "tag",
    to_name: str = "image",
    overwrite: bool = False,
) -> ExportResult:
    """Export a segment output folder to ``to`` (one of :data:`FORMATS`) at ``out``.

    Args:
        masks_dir: a folder written by ``scclip segment``.
        to: ``coco``, ``labelstudio``, ``cvat`` or ``yolo``.
        out: the JSON file (coco, labelstudio), zip file (cvat) or folder (yolo) to write.
        images_dir: the segmented images: COCO ``file_name`` and Label Studio URLs are relative to
            it, and YOLO's ``data.yaml`` points at it. Without it, names come from the mask keys.
        min_area: drop connected pieces of a class smaller than this many pixels (in ``cvat``
            they become class 0).
        instances: ``coco``: one annotation per connected component instead of per class.
        skip_background: leave class 0 out (COCO categories and annotations, Label Studio
            results, YOLO polygons; CVAT keeps it, as its label maps cover every pixel).
        iscrowd: ``coco``: write ``iscrowd: 1`` (default 0, see :mod:`scclip_cli.files.coco_format`).
        order: ``name`` (sorted paths) or ``confidence`` (least confident image first).
        image_url_prefix: Label Studio ``data.image`` prefix (default
            :data:`LABEL_STUDIO_LOCAL_FILES`); the image's relative path is appended, URL-quoted.
        from_name, to_name: Label Studio's brush-labels and image tag names.
        overwrite: replace an existing ``out``.

    Raises:
        UsageError: unknown format or order, negative ``min_area``.
        ExportError: ``out`` exists, not a segment output, incomplete or mismatched files.
    """
    if to not in FORMATS:
        raise UsageError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    if order not in ORDERS:
        raise UsageError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if min_area < 0:
        raise UsageError(f"--min-area must be at least 0, got {min_area}")
    if instances and to != "coco":
        raise UsageError("--instances applies to --to coco only (yolo is per component already)")
    out = Path(out)
    targets = [out, _config_path(out)] if to == "labelstudio" else [out]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        raise ExportError(f"{existing[0]} already exists; pass --overwrite to replace it")
    for target in targets:
        if target.is_dir() and to != "yolo":
            raise ExportError(f"{target} is a folder; --to {to} writes a file")
    if to == "yolo" and out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; --to yolo writes a folder")
    try:
        folder = scan_segment_folder(masks_dir)
    except InputError as err:
        raise ExportError(str(err)) from None
    except OSError as err:
        raise ExportError(f"{masks_dir}: cannot be read ({err})") from None
    _check_folder(folder)
    items = _items(folder, Path(images_dir) if images_dir is not None else None)
    if order == "confidence":
        items.sort(key=lambda item: _confidence_key(item.image))
    options = _Options(
        min_area=min_area,
        instances=instances,
        skip_background=skip_background,
        iscrowd=iscrowd,
        image_url_prefix=LABEL_STUDIO_LOCAL_FILES if image_url_prefix is None else image_url_prefix,
        from_name=from_name,
        to_name=to_name,
        images_dir=Path(images_dir) if images_dir is not None else None,
        model_version=_model_version(folder.root),
    )
    writer = {"coco": _write_coco, "labelstudio": _write_labelstudio, "cvat": _write_cvat}.get(to)
    if writer is not None:
        temps = {target: temporary_path_for(target) for target in targets}
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            count = writer(folder, items, options, [temps[t] for t in targets])
            for target in targets:
                os.replace(temps[target], target)
        finally:
            for temp in temps.values():
                with suppress(OSError):
                    temp.unlink()
        return ExportResult(to, out, targets, len(items), count)
    count = _write_yolo_folder(folder, items, options, out)
    return ExportResult(to, out, [out], len(items), count)


# ------------------------------------------------------------------------------- checking


def _check_folder(folder: SegmentFolder) -> None:
    problems = [
        f"mask {p} has no per-image JSON {p.with_suffix('.json').name} beside it"
        for p in folder.masks_without_record
    ]
    problems += [f"per-image JSON {p} has no mask beside it" for p in folder.records_without_mask]
    names = folder.class_names
    for image in folder.images:
        for entry in image.record["classes"]:
            try:
                index, name = int(entry["index"]), str(entry["name"])
            except (KeyError, TypeError, ValueError):
                problems.append(f"{image.record_path}: malformed class entry {entry!r}")
                continue
            if not 0 <= index < len(names):
                problems.append(
                    f"{image.record_path}: class {index} ({name!r}) is not in legend.json, which "
                    f"has {len(names)} classes"
                )
            elif names[index] != name:
                problems.append(
                    f"{image.record_path}: class {index} is {name!r} but legend.json names it "
                    f"{names[index]!r}"
                )
    if problems:
        raise ExportError(_problem_text(f"{folder.root} cannot be exported", problems))
    if not folder.images:
        raise ExportError(f"{folder.root}: no segmented images (masks with their JSON) to export")


def _items(folder: SegmentFolder, images_dir: Path | None) -> list[_Item]:
    if images_dir is None:
        return [
            _Item(image, None, PurePosixPath(image.key + Path(image.source_path).suffix))
            for image in folder.images
        ]
    if not images_dir.is_dir():
        raise ExportError(f"--images {images_dir}: no such folder")
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(images_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.suffix.lower() in IMAGE_EXTENSIONS and not filename.startswith("."):
                key = path.relative_to(images_dir).with_suffix("").as_posix()
                found.setdefault(key, []).append(path)
    items: list[_Item] = []
    problems: list[str] = []
    for image in folder.images:
        candidates = found.get(image.key, [])
        source_name = Path(image.source_path).name
        preferred = [c for c in candidates if c.name == source_name] or candidates
        if not preferred:
            problems.append(f"no image for mask {image.mask} under --images {images_dir}")
            continue
        path = sorted(preferred)[0]
        items.append(_Item(image, path, PurePosixPath(path.relative_to(images_dir).as_posix())))
    if problems:
        raise ExportError(_problem_text("images not found", problems))
    return items


def _confidence_key(image: SegmentedImage) -> tuple[float, tuple[str, ...]]:
    value = image.mean_confidence()
    return (float("inf") if np.isnan(value) else value, tuple(image.key.split("/")))


def _read_labels(image: SegmentedImage, num_classes: int) -> np.ndarray:
    """``[H, W]`` int64 labels, checked against the record's size and the legend."""
    from scclip_cli.errors import ScclipError
    from scclip_cli.files.mask_io import read_label_png

    try:
        labels = read_label_png(image.mask)
    except (ScclipError, OSError, ValueError) as err:
        raise ExportError(f"{image.mask}: unreadable mask ({err})") from None
    if labels.shape != (image.height, image.width):
        raise ExportError(
            f"{image.mask} is {labels.shape[1]}x{labels.shape[0]} but {image.record_path.name} "
            f"says {image.width}x{image.height}"
        )
    top = int(labels.max())
    if top >= num_classes:
        raise ExportError(
            f"{image.mask} holds class {top} but legend.json has {num_classes} classes: the "
            "legend does not match the masks"
        )
    return labels


@dataclass(frozen=True)
class _Options:
    min_area: int
    instances: bool
    skip_background: bool
    iscrowd: bool
    image_url_prefix: str
    from_name: str
    to_name: str
    images_dir: Path | None
    model_version: str


def _class_masks(labels: np.ndarray, options: _Options) -> list[tuple[int, np.ndarray]]:
    """``(class, [H, W] bool)`` for each class present, specks removed, in index order."""
    from scclip_cli.maps.contours import remove_small_components

    present = np.flatnonzero(np.bincount(labels.ravel()))
    masks = []
    for index in (int(i) for i in present):
        if index == 0 and options.skip_background:
            continue
        mask = remove_small_components(labels == index, options.min_area)
        if mask.any():
            masks.append((index, mask))
    return masks


def _class_scores(image: SegmentedImage) -> dict[int, float]:
    return {
        int(entry["index"]): float(entry["mean_confidence"])
        for entry in image.record["classes"]
        if "mean_confidence" in entry
    }


# ------------------------------------------------------------------------------- writers


def _write_coco(
    folder: SegmentFolder, items: Sequence[_Item], options: _Options, temps: list[Path]
) -> int:
    from scclip_cli.files.coco_format import coco_category, coco_rle, coco_rle_pieces
    from scclip_cli.maps.contours import component_boxes, connected_components

    legend = folder.legend
    categories = [
        coco_category(e.index, e.name, e.color)
        for e in legend
        if not (e.index == 0 and options.skip_background)
    ]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, item in enumerate(items, start=1):
        image = item.image
        labels = _read_labels(image, len(legend))
        images.append(
            {
                "id": image_id,
                "file_name": item.relative.as_posix(),
                "width": image.width,
                "height": image.height,
                "mean_confidence": _rounded(image.mean_confidence()),
            }
        )
        scores = _class_scores(image)
        for index, mask in _class_masks(labels, options):
            if options.instances:
                components, count = connected_components(mask)
                pieces = coco_rle_pieces(components, component_boxes(components), count)
            else:
                pieces = [coco_rle(mask)]
            for piece in pieces:
                annotation = {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": index,
                    **piece,
                    "iscrowd": int(options.iscrowd),
                }
                if index in scores:
                    annotation["score"] = scores[index]
                annotations.append(annotation)
    document = {
        "info": {"description": "scclip export", "version": options.model_version},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    _write_text(temps[0], json.dumps(document, ensure_ascii=False) + "\n")
    return len(annotations)


def _write_labelstudio(
    folder: SegmentFolder, items: Sequence[_Item], options: _Options, temps: list[Path]
) -> int:
    from scclip_cli.files.labelstudio_format import brush_result, labelling_config

    legend = folder.legend
    count = 0
    tasks_tmp, config_tmp = temps
    with open(tasks_tmp, "x", encoding="utf-8") as f:
        f.write("[\n")
        for position, item in enumerate(items):
            image = item.image
            labels = _read_labels(image, len(legend))
            scores = _class_scores(image)
            results = [
                brush_result(
                    mask,
                    legend[index].name,
                    from_name=options.from_name,
                    to_name=options.to_name,
                    result_id=f"{index}",
                    score=scores.get(index),
                )
                for index, mask in _class_masks(labels, options)
            ]
            count += len(results)
            prediction: dict[str, Any] = {"model_version": options.model_version}
            mean = image.mean_confidence()
            if not np.isnan(mean):
                prediction["score"] = _rounded(mean)
            prediction["result"] = results
            task = {
                "data": {"image": options.image_url_prefix + quote(item.relative.as_posix())},
                "meta": {"mask": image.key},
                "predictions": [prediction],
            }
            f.write(("" if position == 0 else ",\n") + json.dumps(task, ensure_ascii=False))
        f.write("\n]\n")
    config = labelling_config(
        [e.name for e in legend if not (e.index == 0 and options.skip_background)],
        [e.color for e in legend if not (e.index == 0 and options.skip_background)],
        from_name=options.from_name,
        to_name=options.to_name,
    )
    _write_text(config_tmp, config)
    return count


def _write_cvat(
    folder: SegmentFolder, items: Sequence[_Item], options: _Options, temps: list[Path]
) -> int:
    from scclip_cli.files.cvat_format import (
        IMAGE_SET,
        SEGMENTATION_DIR,
        color_png_bytes,
        labelmap_text,
    )
    from scclip_cli.maps.contours import remove_small_components

    legend = folder.legend
    colors = np.array([e.color for e in legend], dtype=np.uint8)
    stems: list[str] = []
    with zipfile.ZipFile(temps[0], "x", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(
            "labelmap.txt", labelmap_text([e.name for e in legend], [e.color for e in legend])
        )
        for item in items:
            labels = _read_labels(item.image, len(legend))
            if options.min_area > 1:
                for index in (int(i) for i in np.flatnonzero(np.bincount(labels.ravel()))):
                    if index:
                        mask = labels == index
                        labels[mask & ~remove_small_components(mask, options.min_area)] = 0
            stem = item.relative.with_suffix("").as_posix()
            stems.append(stem)
            # PNG is compressed already; storing it again saves the zip's deflate time
            archive.writestr(f"{SEGMENTATION_DIR}/{stem}.png", color_png_bytes(labels, colors))
        archive.writestr(IMAGE_SET, "".join(f"{s}\n" for s in stems))
    return len(stems)


def _write_yolo_folder(
    folder: SegmentFolder, items: Sequence[_Item], options: _Options, out: Path
) -> int:
    from scclip_cli.files.yolo_format import data_yaml, yolo_label_text, yolo_line
    from scclip_cli.maps.contours import component_polygons

    out.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_path_for(out)
    count = 0
    try:
        temp.mkdir()
        for item in items:
            labels = _read_labels(item.image, len(folder.legend))
            lines = []
            for index in (int(i) for i in np.flatnonzero(np.bincount(labels.ravel()))):
                if index == 0 and options.skip_background:
                    continue
                for polygon in component_polygons(labels == index, min_area=options.min_area):
                    lines.append(yolo_line(index, polygon, item.image.width, item.image.height))
            count += len(lines)
            label_path = temp / "labels" / item.relative.with_suffix(".txt")
            label_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.write_text(yolo_label_text(lines), encoding="utf-8")
        images = options.images_dir
        yaml = data_yaml(
            list(folder.class_names),
            class_ids=range(len(folder.legend)),
            path=str(out.resolve()),
            images=str(images.resolve()) if images is not None else None,
        )
        (temp / "data.yaml").write_text(yaml, encoding="utf-8")
        _swap_in(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return count


def _swap_in(temp: Path, out: Path) -> None:
    """Move the finished folder ``temp`` to ``out``, replacing an existing ``out`` only now."""
    if out.exists():
        old = temporary_path_for(out)
        os.replace(out, old)
        os.replace(temp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temp, out)


# ------------------------------------------------------------------------------- helpers


def _config_path(out: Path) -> Path:
    """The Label Studio labelling config written beside the tasks: ``<stem>.config.xml``."""
    return out.with_name(out.stem + ".config.xml")


def _write_text(path: Path, text: str) -> None:
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)


def _rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def _model_version(root: Path) -> str:
    """``"<model> <pretrained> <method>"`` from the run's summary, or ``"scclip"``."""
    for path in sorted(root.glob("summary*.json")):
        try:
            config = json.loads(path.read_text(encoding="utf-8")).get("config", {})
        except (OSError, ValueError, AttributeError):
            continue
        method = config.get("method")
        method_name = method.get("name") if isinstance(method, dict) else method
        parts = [config.get("model"), config.get("pretrained"), method_name]
        text = " ".join(str(p) for p in parts if p)
        if text:
            return f"scclip {text}"
    return "scclip"


def _problem_text(headline: str, problems: Sequence[str]) -> str:
    shown = [f"  {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return f"{headline} ({len(problems)}); nothing was written:\n" + "\n".join(shown)
