"""The per-image record: ``<stem>.json`` beside each mask, and the ``--jsonl`` line of the image.

One class, :class:`ImageRecord`, is written as ``<stem>.json`` (last of an image's files, so its
presence marks the image complete), read back to decide whether an image is complete, counted in
``summary.json`` and turned into the image's ``--jsonl`` line. Both engines use it.

The JSON object's keys are the dataclass fields, in declaration order, written with
``indent=2`` and a final newline. To add a field: declare it (with a default, ``None`` for "not
written", so records of older runs still read), parse it in :meth:`ImageRecord.from_dict`; it is
then written, read back and put on the ``--jsonl`` line without further changes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from scclip_cli.files.atomic import atomic_write_text


@dataclass(frozen=True)
class ImageRecord:
    """What is known of one segmented image: its source, size and per-class statistics."""

    path: str
    """The input image, as the run was given it."""
    width: int
    height: int
    classes: tuple[Mapping[str, Any], ...]
    """``{"index", "name", "pixels", "fraction", "mean_confidence"}`` per class present, by index
    (:func:`scclip_cli.files.mask_io.class_statistics`)."""
    mean_confidence: float | None = None
    """The winning class's probability averaged over every pixel of the image (``None`` in
    records of runs before it was written): the least confident images are reviewed first."""

    @classmethod
    def from_dict(cls, data: Any) -> ImageRecord:
        """The record of a parsed ``<stem>.json``.

        Raises:
            ValueError: not a record (a missing key, a value of the wrong type).
        """
        try:
            width, height = int(data["width"]), int(data["height"])
            classes = tuple(data["classes"])
            for entry in classes:
                int(entry["index"]), int(entry["pixels"]), float(entry["mean_confidence"])
            path = data["path"]
            mean = data.get("mean_confidence")
            mean_confidence = None if mean is None else float(mean)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not an image record: {err!r}") from None
        if not isinstance(path, str):
            raise ValueError("not an image record: path is not a string")
        return cls(path, width, height, classes, mean_confidence)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ImageRecord | None:
        """The record in the file ``path``, or ``None`` when it is missing, unreadable or not a
        record (an image to redo)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field in declaration order (``None`` fields left out)."""
        data: dict[str, Any] = {}
        for field_ in fields(self):
            value = getattr(self, field_.name)
            if value is None:
                continue
            data[field_.name] = [dict(c) for c in value] if field_.name == "classes" else value
        return data

    def to_json(self) -> str:
        """The text of ``<stem>.json``."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write ``<stem>.json`` atomically."""
        atomic_write_text(path, self.to_json())

    def jsonl_line(self, status: str, files: Mapping[str, str]) -> dict[str, Any]:
        """The ``--jsonl`` line: ``{"path", "status", **files, ...every other field}``.

        ``files``: the image's outputs by kind (``mask``, ``json``, ``overlay``, ``color``,
        ``confidence``).
        """
        data = self.to_dict()
        line: dict[str, Any] = {"path": data.pop("path"), "status": status, **files}
        line.update(data)
        return line
