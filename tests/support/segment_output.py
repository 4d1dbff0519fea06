"""A ``scclip segment`` output folder made without a model, from label maps the test chooses.

    from support.segment_output import make_segment_output, sample_label_maps
    folder = make_segment_output(tmp_path / "masks", names, sample_label_maps(6))

The files are written by the same library functions the segment writer uses (label PNG, legend,
per-class statistics), so exports and eval read them exactly as a real run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from scclip_cli.files import mask_io

SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"


def sample_label_maps(num_classes: int) -> dict[str, np.ndarray]:
    """``{stem: [H, W] int64}`` for each sample photo: its grey levels cut into ``num_classes``
    bands and smoothed (median 5), so each map has several classes with photo-like outlines."""
    maps = {}
    for path in sorted(SAMPLES.glob("*.jpg")):
        grey = Image.open(path).convert("L").filter(ImageFilter.MedianFilter(5))
        values = np.asarray(grey, dtype=np.int64)
        maps[path.stem] = np.minimum(values * num_classes // 256, num_classes - 1)
    return maps


def make_segment_output(
    root: Path,
    class_names: list[str],
    label_maps: dict[str, np.ndarray],
    *,
    confidence: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``root`` as ``scclip segment`` would: ``<key>.png``, ``<key>.json`` (with
    ``mean_confidence``), ``legend.json``/``legend.png`` and a ``summary.json``."""
    root.mkdir(parents=True, exist_ok=True)
    mask_io.write_legend(root, class_names)
    for key, labels in label_maps.items():
        conf = (confidence or {}).get(key)
        if conf is None:
            conf = np.full(labels.shape, 0.5, dtype=np.float32)
        mask_io.write_label_png(root / f"{key}.png", labels, len(class_names))  # makes folders
        record = {
            "path": f"images/{key}.jpg",
            "width": int(labels.shape[1]),
            "height": int(labels.shape[0]),
            "mean_confidence": mask_io.mean_confidence(conf),
            "classes": mask_io.class_statistics(labels, conf, class_names),
        }
        (root / f"{key}.json").write_text(json.dumps(record), encoding="utf-8")
    summary = {"config": {"model": "fake", "pretrained": "none", "method": {"name": "sc-clip"}}}
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root
