"""Read a folder that ``scclip segment`` wrote, telling its files apart by what they are.

A segment output is a folder with a ``legend.json`` (a list of ``{"index", "name", "color"}``, one
per class, in index order). Inside it, each image left:

- ``<stem>.png``: the label map (a palette PNG, or a 16-bit greyscale PNG for more than 256
  classes); it is a prediction because ``<stem>.json`` beside it is a per-image record (a JSON
  object with ``width``, ``height`` and a ``classes`` list);
- optionally ``<stem>_color.png`` (RGB rendering of a 16-bit mask), ``<stem>_overlay.jpg``,
  ``<stem>_conf.png`` (8-bit greyscale confidence);

and the run left ``summary*.json``, ``failures*.jsonl`` and ``legend.png``. None of those is a
label map with a per-image record beside it, so no list of run-file names is needed: a PNG is a
prediction when its mode is a label map's (palette or 16-bit) and a record sits beside it. A label
map without its record is an incomplete image (the record is written last).

Only headers and the small JSON files are read while listing; masks are read one at a time by the
caller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from scclip_cli.errors import InputError

LEGEND_JSON = "legend.json"
LABEL_MAP_MODES = ("P", "I;16", "I;16B", "I;16L", "I")
"""PIL modes of the label maps ``scclip segment`` writes; RGB renderings and greyscale (``L``)
confidence maps are not label maps."""


@dataclass(frozen=True)
class LegendEntry:
    """One class of ``legend.json``."""

    index: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class SegmentedImage:
    """One image of a segment output: its label map and its per-image record."""

    key: str
    """The mask's path relative to the folder, without ``.png``, ``/``-separated."""
    mask: Path
    record_path: Path
    record: dict[str, Any]
    """The parsed ``<stem>.json``: ``path``, ``width``, ``height``, ``classes`` (and, from runs
    that wrote it, ``mean_confidence``)."""

    @property
    def width(self) -> int:
        return int(self.record["width"])

    @property
    def height(self) -> int:
        return int(self.record["height"])

    @property
    def source_path(self) -> str:
        """The image path ``scclip segment`` read (as it was given then)."""
        return str(self.record.get("path", ""))

    @property
    def confidence_map(self) -> Path | None:
        """``<stem>_conf.png`` when the run wrote it (``--save-confidence``)."""
        path = self.mask.with_name(self.mask.name[: -len(".png")] + "_conf.png")
        return path if path.is_file() else None

    def mean_confidence(self) -> float:
        """The image's mean confidence: the record's ``mean_confidence``, or (older runs) the
        pixel-weighted mean of its classes' ``mean_confidence``; NaN when neither is there."""
        value = self.record.get("mean_confidence")
        if isinstance(value, int | float):
            return float(value)
        total = weighted = 0.0
        for entry in self.record.get("classes", []):
            if "mean_confidence" not in entry:
                return float("nan")
            total += float(entry["pixels"])
            weighted += float(entry["pixels"]) * float(entry["mean_confidence"])
        return weighted / total if total else float("nan")


def is_segment_output(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a ``legend.json`` that parses as a legend."""
    try:
        read_legend(Path(folder))
    except InputError:
        return False
    return True


def read_legend(folder: Path) -> list[LegendEntry]:
    """The classes of ``folder/legend.json``.

    Raises:
        InputError: no legend, or one that is not a list of ``{"index", "name", "color"}`` in
            index order.
    """
    path = folder / LEGEND_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{folder} is not a scclip segment output: it has no {LEGEND_JSON}"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable legend ({err})") from None
    entries: list[LegendEntry] = []
    try:
        if not isinstance(data, list) or not data:
            raise TypeError("not a non-empty list")
        for position, item in enumerate(data):
            index, name, color = item["index"], item["name"], item["color"]
            if index != position or not isinstance(name, str) or len(color) != 3:
                raise ValueError(f"entry {position} is not class {position} with a name and RGB")
            rgb = (int(color[0]), int(color[1]), int(color[2]))
            entries.append(LegendEntry(int(index), name, rgb))
    except (TypeError, KeyError, ValueError) as err:
        raise InputError(f"{path}: not a scclip legend ({err})") from None
    return entries


def read_record(path: Path) -> dict[str, Any] | None:
    """``<stem>.json`` parsed when it is a per-image record (``width``, ``height``, ``classes``),
    else ``None`` (a missing file, another JSON such as ``legend.json`` or a summary)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        return None
    try:
        int(data["width"]), int(data["height"])
    except (KeyError, TypeError, ValueError):
        return None
    return data


def is_label_map(path: Path) -> bool:
    """Whether the PNG at ``path`` is a label map by its header (palette or 16-bit)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.mode in LABEL_MAP_MODES
    except (OSError, UnidentifiedImageError, ValueError):
        return False


@dataclass
class SegmentFolder:
    """The images of a segment output, sorted by key, and the problems found listing them."""

    root: Path
    legend: list[LegendEntry]
    images: list[SegmentedImage]
    masks_without_record: list[Path]
    """Label maps with no per-image record beside them (incomplete images)."""
    records_without_mask: list[Path]
    """Per-image records with no label map beside them."""

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.legend)


def scan_segment_folder(folder: str | os.PathLike[str]) -> SegmentFolder:
    """List a segment output's images (see the module docstring); reads headers and JSON only.

    Raises:
        InputError: ``folder`` is missing or is not a segment output (no valid ``legend.json``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    legend = read_legend(root)
    images: list[SegmentedImage] = []
    orphans: list[Path] = []
    mask_keys: set[str] = set()
    json_files: list[tuple[str, Path]] = []
    for rel in _walk(root):
        name = rel.name
        if name.endswith(".json"):
            json_files.append(((rel.parent / name[: -len(".json")]).as_posix(), root / rel))
            continue
        if not name.endswith(".png"):
            continue
        path = root / rel
        key = (rel.parent / name[: -len(".png")]).as_posix()
        record_path = path.with_name(name[: -len(".png")] + ".json")
        record = read_record(record_path)
        if record is not None:
            images.append(SegmentedImage(key, path, record_path, record))
            mask_keys.add(key)
        elif is_label_map(path):
            orphans.append(path)
    lonely = [
        path for key, path in json_files if key not in mask_keys and read_record(path) is not None
    ]
    images.sort(key=lambda image: tuple(image.key.split("/")))
    return SegmentFolder(root, legend, images, sorted(orphans), sorted(lonely))


def _walk(folder: Path) -> Iterator[PurePosixPath]:
    """Relative paths of the files under ``folder``, hidden files and folders skipped."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = PurePosixPath(Path(dirpath).relative_to(folder).as_posix())
        for filename in sorted(filenames):
            if not filename.startswith("."):
                yield rel_dir / filename if str(rel_dir) != "." else PurePosixPath(filename)
