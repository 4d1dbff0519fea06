"""A ``scclip segment`` output folder made without a model, for the report's tests and benchmark.

    from support.fake_run import write_fake_run
    run = write_fake_run(tmp_path, 12)   # run.out: masks, JSON, legend, summary.json

Each image gets a smooth picture (JPEG, under ``root/images``), a label map of a few rectangles
of random classes, a confidence map, and the files ``scclip segment`` writes for them, written with
the library's own writers (label PNG, per-class statistics, legend), so the folder reads like a
real run's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scclip_cli.files.mask_io import class_statistics, write_label_png, write_legend

DEFAULT_CLASSES = ("background", "person", "dog", "grass", "sky", "car", "tree", "water")


@dataclass
class FakeRun:
    root: Path
    out: Path
    images: list[Path]
    keys: list[str]
    class_names: tuple[str, ...]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``key → <stem>.json`` content."""


def fake_picture(height: int, width: int, seed: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: smooth colours, different per seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR))


def fake_labels(height: int, width: int, num_classes: int, seed: int) -> np.ndarray:
    """``[H, W]`` int64: a background class with two to four rectangles of other classes."""
    rng = np.random.default_rng(seed)
    labels = np.full((height, width), int(rng.integers(0, num_classes)), dtype=np.int64)
    for _ in range(int(rng.integers(2, 5))):
        y0, x0 = int(rng.integers(0, height - 1)), int(rng.integers(0, width - 1))
        y1 = int(rng.integers(y0 + 1, height + 1))
        x1 = int(rng.integers(x0 + 1, width + 1))
        labels[y0:y1, x0:x1] = int(rng.integers(0, num_classes))
    return labels


def write_fake_run(
    root: Path,
    count: int,
    *,
    class_names: Sequence[str] = DEFAULT_CLASSES,
    size: tuple[int, int] = (48, 64),
    names: Sequence[str] | None = None,
    image_level_confidence: bool = False,
    confidence_png: bool = False,
    summary: bool = True,
    seed: int = 0,
) -> FakeRun:
    """Write ``count`` segmented images under ``root/out`` (their pictures under ``root/images``).

    Args:
        size: ``(height, width)`` of the images (each a little different, by index).
        names: relative image paths without extension (``a/b``); by default ``img_00000`` ...
        image_level_confidence: write an image-level ``mean_confidence`` into each record.
        confidence_png: write ``<stem>_conf.png`` (uint8, confidence * 255).
        summary: write a ``summary.json``.
    """
    out = root / "out"
    images_dir = root / "images"
    keys = list(names) if names is not None else [f"img_{i:05}" for i in range(count)]
    run = FakeRun(root, out, [], keys, tuple(class_names))
    out.mkdir(parents=True, exist_ok=True)
    write_legend(out, list(class_names))
    height, width = size
    for i, key in enumerate(keys):
        h, w = height + i % 5, width + (i * 3) % 7
        image = images_dir / f"{key}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fake_picture(h, w, seed + i)).save(image, quality=85)
        labels = fake_labels(h, w, len(class_names), seed + i)
        rng = np.random.default_rng(10_000 + seed + i)
        confidence = rng.uniform(0.3, 1.0, size=(h, w)).astype(np.float32)  # [H, W]
        mask = out / f"{key}.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        write_label_png(mask, labels, len(class_names))
        record: dict[str, Any] = {
            "path": str(image),
            "width": w,
            "height": h,
            "classes": class_statistics(labels, confidence, list(class_names)),
        }
        if image_level_confidence:
            record["mean_confidence"] = round(float(confidence.mean()), 6)
        if confidence_png:
            conf = np.clip(np.rint(confidence * 255), 0, 255).astype(np.uint8)
            Image.fromarray(conf).save(out / f"{key}_conf.png")
        (out / f"{key}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        run.images.append(image)
        run.records[key] = record
    if summary:
        write_fake_summary(out / "summary.json", run, count)
    return run


def write_fake_summary(path: Path, run: FakeRun, count: int, **extra: Any) -> None:
    """A ``summary.json`` like a finished run's (the fields the report reads)."""
    data = {
        "status": "finished",
        "out_dir": str(run.out),
        "config": {
            "model": "fake-model",
            "pretrained": "none",
            "method": {"name": "sc-clip"},
            "protocol": {"prob_threshold": 0.0, "area_threshold": None, "logit_scale": 50.0},
            "num_classes": len(run.class_names),
            "class_names": list(run.class_names),
            "run": {"inputs": [str(run.root / "images")], "shard": None},
        },
        "counts": {"images": count, "done": count, "skipped": 0, "failed": 0},
        "failed": [],
        "timing": {"load_seconds": 1.0, "segment_seconds": 2.0, "images_per_second": 3.0},
        "started_at": "2026-01-01T00:00:00+0000",
        "finished_at": "2026-01-01T00:00:02+0000",
        **extra,
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
