"""Ultralytics YOLO segmentation labels and their ``data.yaml``.

One ``<stem>.txt`` per image, one line per object: ``class x1 y1 x2 y2 ...``, the polygon's vertices
normalised by the image's width and height (``x / W``, ``y / H`` for pixel indices, the
convention Ultralytics' own mask converters use), 6 decimals. ``data.yaml`` maps class ids to
names; names are written as double-quoted YAML scalars (JSON's string syntax is a subset of
YAML's double-quoted style, so quotes, ``:``, ``#``, accents and line breaks survive).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np


def yolo_line(class_id: int, polygon: np.ndarray, width: int, height: int) -> str:
    """``"class x1 y1 ..."`` for a ``[N, 2]`` ``(x, y)`` pixel polygon in a ``width × height``
    image. A polygon of fewer than three vertices (a pixel, a line) is repeated up to three."""
    points = np.asarray(polygon, dtype=np.float64)
    while len(points) < 3:
        points = np.concatenate([points, points[-1:]])
    normalised = points / np.array([width, height], dtype=np.float64)
    return f"{class_id} " + " ".join(f"{v:.6f}" for v in normalised.ravel())


def yolo_label_text(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def yaml_string(text: str) -> str:
    """A YAML double-quoted scalar holding ``text`` exactly."""
    return json.dumps(text, ensure_ascii=False)


def data_yaml(
    class_names: Sequence[str],
    *,
    class_ids: Sequence[int],
    path: str | None = None,
    images: str | None = None,
) -> str:
    """``data.yaml``: ``names`` (``id: "name"``), ``nc`` and, when known, the dataset ``path`` and
    the ``train``/``val`` image folder."""
    lines = ["# Ultralytics YOLO segmentation dataset written by scclip export"]
    if path is not None:
        lines.append(f"path: {yaml_string(path)}")
    if images is not None:
        lines.append(f"train: {yaml_string(images)}")
        lines.append(f"val: {yaml_string(images)}")
    lines.append(f"nc: {len(class_ids)}")
    lines.append("names:")
    lines += [f"  {i}: {yaml_string(class_names[i])}" for i in class_ids]
    return "\n".join(lines) + "\n"
