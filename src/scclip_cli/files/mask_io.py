"""Label masks, overlays, legends and per-class statistics on disk.

Label PNG format (:func:`write_label_png`, read back by :func:`read_label_png`):

- Up to 256 classes: an 8-bit **palette** PNG. Each pixel value is the class index and the palette
  is the VOC colour map (:func:`scclip_cli.files.palette.voc_colormap`), so the file opens coloured in any
  viewer and still carries the exact classes (read it as indices, not as RGB).
- More than 256 classes: a **16-bit greyscale** PNG of class indices (it looks almost black in
  viewers), plus a colour rendering ``<stem>_color.png`` (RGB, VOC colours) beside it.

Every file is written atomically (:mod:`scclip_cli.files.atomic`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scclip_cli.errors import ImageReadError
from scclip_cli.files.atomic import atomic_path, atomic_write_json
from scclip_cli.files.palette import voc_colormap

MAX_PALETTE_CLASSES = 256
"""Above this many classes, label PNGs are 16-bit greyscale, with ``<stem>_color.png`` beside."""
MAX_LABEL_CLASSES = 1 << 16
"""16-bit label PNGs hold class indices up to 65535."""
COLOR_SUFFIX = "_color.png"
"""Ending of the colour rendering written beside a 16-bit label PNG (``<stem>_color.png``)."""
CONFIDENCE_SUFFIX = "_conf.png"
"""Ending of the confidence map written with ``--save-confidence`` (``<stem>_conf.png``)."""
OVERLAY_JPEG_QUALITY = 90
LABEL_PNG_FORMATS = ("PNG", "BMP", "TIFF")
"""Lossless formats :func:`read_label_png` accepts (a JPEG would not keep exact class indices)."""

_LEGEND_ROWS_PER_COLUMN = 40
_LEGEND_ROW_HEIGHT = 20
_LEGEND_SWATCH = (32, 14)  # width, height in pixels
_LEGEND_PAD = 6
_LEGEND_FONT_SIZE = 13


def color_path_for(path: str | os.PathLike[str]) -> Path:
    """Where the colour rendering of a 16-bit label PNG goes: ``<stem>_color.png`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + COLOR_SUFFIX)


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Validate ``[H, W]`` integer labels in ``[0, num_classes)``; returns them as an array."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty [H, W] array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if not 1 <= num_classes <= MAX_LABEL_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_LABEL_CLASSES}, got {num_classes}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels span {low}..{high}, outside 0..{num_classes - 1}")
    return labels


def colorize(labels: np.ndarray) -> np.ndarray:
    """``[H, W]`` non-negative integer labels → ``[H, W, 3]`` uint8 RGB in VOC colours."""
    labels = np.asarray(labels)
    return voc_colormap(int(labels.max()) + 1 if labels.size else 0)[labels]


def _save_png(image: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_label_png(
    path: str | os.PathLike[str], labels: np.ndarray, num_classes: int
) -> list[Path]:
    """Write class indices as a label PNG (format in the module docstring), atomically.

    Args:
        path: destination ``.png``.
        labels: ``[H, W]`` integer class indices in ``[0, num_classes)``.
        num_classes: size of the vocabulary (decides 8-bit palette vs 16-bit), at most 65536.

    Returns:
        The files written: ``[path]``, or ``[path, <stem>_color.png]`` for more than 256 classes.
    """
    from PIL import Image

    path = Path(path)
    labels = _check_labels(labels, num_classes)
    if num_classes <= MAX_PALETTE_CLASSES:
        image = Image.fromarray(labels.astype(np.uint8))  # mode L
        image.putpalette(voc_colormap(256).tobytes(), rawmode="RGB")  # L → P, indices kept
        _save_png(image, path)
        return [path]
    wide = Image.fromarray(labels.astype(np.uint16))  # mode I;16
    _save_png(wide, path)
    color = color_path_for(path)
    _save_png(Image.fromarray(colorize(labels)), color)
    return [path, color]


def confidence_to_uint8(confidence: np.ndarray) -> np.ndarray:
    """``[H, W]`` float confidence in [0, 1] → ``[H, W]`` uint8 ``round(confidence * 255)``."""
    scaled = np.rint(np.clip(np.asarray(confidence, dtype=np.float32), 0.0, 1.0) * 255.0)
    return scaled.astype(np.uint8)


def write_confidence_png(path: str | os.PathLike[str], confidence: np.ndarray) -> None:
    """Write ``[H, W]`` float confidence in [0, 1] as an 8-bit greyscale PNG
    (:func:`confidence_to_uint8`), atomically; read it back with ``value / 255``."""
    from PIL import Image

    _save_png(Image.fromarray(confidence_to_uint8(confidence), mode="L"), Path(path))


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label PNG's class indices: ``[H, W]`` int64.

    Palette PNGs give their pixel indices (the palette is ignored), greyscale PNGs (8- or 16-bit)
    their grey values. No EXIF orientation is applied.

    Raises:
        ImageReadError: missing, unreadable or corrupt file, or an RGB(A) colour image (colours are
            not class indices).
    """
    from scclip_cli.files.image_io import decode_image, open_image

    path = Path(path)
    image = open_image(path, LABEL_PNG_FORMATS)
    try:
        decode_image(image, path)
        mode = image.mode
        if mode in ("P", "L", "1") or mode.startswith("I;16") or mode == "I":
            return np.asarray(image).astype(np.int64)
        if mode in ("PA", "LA"):
            return np.asarray(image.getchannel(0)).astype(np.int64)
        raise ImageReadError(
            f"{path}: a {mode} colour image, not a label mask; label PNGs store one class index "
            "per pixel (palette, 8-bit or 16-bit greyscale)"
        )
    finally:
        image.close()


def blend_overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Class colours blended over an image: ``(1 - alpha) * rgb + alpha * colour``, rounded.

    Args:
        rgb: ``[H, W, 3]`` uint8.
        labels: ``[H, W]`` non-negative integer class indices.
        alpha: opacity of the class colours, in [0, 1].

    Returns:
        ``[H, W, 3]`` uint8.
    """
    rgb = np.asarray(rgb)
    labels = np.asarray(labels)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 image, got {rgb.shape} {rgb.dtype}")
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match the image {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = colorize(labels).astype(np.float32)
    blended = rgb.astype(np.float32) * np.float32(1.0 - alpha) + colors * np.float32(alpha)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def write_overlay_jpg(
    path: str | os.PathLike[str], rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5
) -> None:
    """Write :func:`blend_overlay` of ``rgb`` and ``labels`` as a JPEG (quality 90), atomically.

    Every class is coloured, class 0 too (black in the VOC colour map, so it darkens its pixels).
    """
    from PIL import Image

    overlay = blend_overlay(rgb, labels, alpha)
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(overlay).save(tmp, format="JPEG", quality=OVERLAY_JPEG_QUALITY)


def legend_entries(class_names: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"index", "name", "color": [r, g, b]}]`` for each class, in index order."""
    colors = voc_colormap(len(class_names))
    return [
        {"index": i, "name": str(name), "color": [int(c) for c in colors[i]]}
        for i, name in enumerate(class_names)
    ]


def _legend_image(entries: list[dict[str, Any]]) -> Any:
    """A white image with one row per class: its colour swatch and ``index name``."""
    from PIL import Image, ImageDraw

    from scclip_cli.files.fonts import label_font

    labels = [f"{e['index']}  {e['name']}" for e in entries]
    font = label_font(_LEGEND_FONT_SIZE, labels)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max((math.ceil(probe.textlength(t, font=font)) for t in labels), default=0)
    swatch_w, swatch_h = _LEGEND_SWATCH
    column_width = _LEGEND_PAD + swatch_w + _LEGEND_PAD + text_width + _LEGEND_PAD
    rows = min(len(entries), _LEGEND_ROWS_PER_COLUMN) or 1
    columns = max(math.ceil(len(entries) / _LEGEND_ROWS_PER_COLUMN), 1)
    image = Image.new(
        "RGB", (columns * column_width, rows * _LEGEND_ROW_HEIGHT + _LEGEND_PAD), "white"
    )
    draw = ImageDraw.Draw(image)
    for i, (entry, text) in enumerate(zip(entries, labels, strict=True)):
        x = (i // _LEGEND_ROWS_PER_COLUMN) * column_width + _LEGEND_PAD
        y = (i % _LEGEND_ROWS_PER_COLUMN) * _LEGEND_ROW_HEIGHT + _LEGEND_PAD
        draw.rectangle(
            (x, y, x + swatch_w - 1, y + swatch_h - 1), fill=tuple(entry["color"]), outline="grey"
        )
        draw.text(
            (x + swatch_w + _LEGEND_PAD, y + swatch_h // 2),
            text,
            fill="black",
            font=font,
            anchor="lm",
        )
    return image


def write_legend(out_dir: str | os.PathLike[str], class_names: Sequence[str]) -> tuple[Path, Path]:
    """Write ``legend.json`` and ``legend.png`` (colour swatch and name per class) into ``out_dir``.

    ``legend.json`` is a list of ``{"index", "name", "color": [r, g, b]}`` (:func:`legend_entries`);
    ``legend.png`` draws the swatches and names (in :func:`scclip_cli.files.fonts.label_font`,
    which has glyphs for accented and, where the system has a font for them, CJK names), 40
    classes per column.

    Returns:
        The paths of ``legend.json`` and ``legend.png``.
    """
    return write_legend_json(out_dir, class_names), write_legend_png(out_dir, class_names)


def write_legend_json(out_dir: str | os.PathLike[str], class_names: Sequence[str]) -> Path:
    """Write ``legend.json`` (see :func:`write_legend`) into ``out_dir``; return its path."""
    path = Path(out_dir) / "legend.json"
    atomic_write_json(path, legend_entries(class_names))
    return path


def write_legend_png(out_dir: str | os.PathLike[str], class_names: Sequence[str]) -> Path:
    """Write ``legend.png`` (see :func:`write_legend`) into ``out_dir``; return its path."""
    path = Path(out_dir) / "legend.png"
    _save_png(_legend_image(legend_entries(class_names)), path)
    return path


@dataclass(frozen=True)
class ClassTotals:
    """What the per-class statistics of one label map are made of.

    Confidence is averaged over the pixels of a grid (every ``step``-th row and column, see
    :func:`statistics_step`), and for a class with no pixel on it, over all its pixels: at full
    resolution a 12-megapixel map would need every pixel's softmax over all queries, for means
    that a grid of a million pixels estimates closely (docs/performance-cache.md, "Big photos").
    """

    pixels: np.ndarray
    """``[K]`` int64: every pixel of each class."""
    confidence_sums: np.ndarray | None
    """``[K]`` float64: the confidence summed over each class's averaged pixels (``None``: no
    confidence)."""
    confidence_counts: np.ndarray | None
    """``[K]`` int64: how many pixels of each class were averaged."""
    image_mean: float | None
    """The mean confidence over the grid's pixels (``None``: no confidence)."""

    @classmethod
    def from_maps(
        cls, labels: np.ndarray, confidence: np.ndarray | None, num_classes: int
    ) -> ClassTotals:
        """The totals of ``[H, W]`` labels in ``[0, num_classes)`` and ``[H, W]`` float confidence
        (or ``None``), averaged over the grid of :func:`statistics_step`."""
        labels = _check_labels(labels, max(num_classes, 1))
        flat = labels.ravel().astype(np.intp, copy=False)  # once: bincount would cast it per call
        pixels = np.bincount(flat, minlength=num_classes)
        if confidence is None:
            return cls(pixels.astype(np.int64), None, None, None)
        confidence = np.asarray(confidence)
        if confidence.shape != labels.shape:
            raise ValueError(f"confidence {confidence.shape} does not match labels {labels.shape}")
        grid = statistics_grid(*labels.shape)
        on_grid = np.bincount(labels[grid].ravel().astype(np.intp), minlength=num_classes)
        missing = np.zeros(num_classes, dtype=bool)
        missing[np.flatnonzero((pixels > 0) & (on_grid == 0))] = True
        extra = missing[flat] if missing.any() else None
        return cls.from_samples(
            pixels,
            labels[grid],
            confidence[grid],
            None if extra is None else flat[extra],
            None if extra is None else confidence.ravel()[extra],
        )

    @classmethod
    def from_samples(
        cls,
        pixels: np.ndarray,
        grid_labels: np.ndarray,
        grid_confidence: np.ndarray,
        extra_labels: np.ndarray | None = None,
        extra_confidence: np.ndarray | None = None,
    ) -> ClassTotals:
        """The totals from ``[K]`` pixel counts, the labels and confidence at the grid's pixels
        (any shape, the same), and those at every pixel of the classes the grid misses."""
        num_classes = len(pixels)
        on_grid = np.asarray(grid_labels).ravel().astype(np.intp)
        values = np.asarray(grid_confidence, dtype=np.float64).ravel()
        sums = np.bincount(on_grid, weights=values, minlength=num_classes)
        counts = np.bincount(on_grid, minlength=num_classes)
        if extra_labels is not None and extra_confidence is not None:
            more = np.asarray(extra_labels).ravel().astype(np.intp)
            weights = np.asarray(extra_confidence, dtype=np.float64).ravel()
            sums += np.bincount(more, weights=weights, minlength=num_classes)
            counts += np.bincount(more, minlength=num_classes)
        return cls(
            np.asarray(pixels, dtype=np.int64),
            sums,
            counts.astype(np.int64),
            float(values.mean()),
        )


STATISTICS_PIXELS = 1 << 20
"""The confidence statistics average at most about this many pixels of an image (a grid, see
:func:`statistics_step`); smaller images count every pixel."""


def statistics_step(height: int, width: int) -> int:
    """The grid step of the confidence statistics: the smallest ``s`` with
    ``ceil(H / s) · ceil(W / s) <= STATISTICS_PIXELS`` (1 up to a megapixel; 4 for 4000 × 3000)."""
    step = 1
    while -(-height // step) * -(-width // step) > STATISTICS_PIXELS:
        step += 1
    return step


def statistics_grid(height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of the statistics grid: every ``s``-th from ``s // 2`` (the centre
    of each ``s × s`` block), ``s`` = :func:`statistics_step`."""
    step = statistics_step(height, width)
    return slice(step // 2, None, step), slice(step // 2, None, step)


def mean_confidence(totals: ClassTotals | np.ndarray | None) -> float | None:
    """The image-level mean confidence (of :class:`ClassTotals`, or of an ``[H, W]`` confidence
    map over the grid of :func:`statistics_grid`), rounded to 6 decimals (``None`` without)."""
    if totals is None:
        return None
    if not isinstance(totals, ClassTotals):
        confidence = np.asarray(totals)
        grid = statistics_grid(*confidence.shape)
        return round(float(confidence[grid].astype(np.float64).mean()), 6)
    return None if totals.image_mean is None else round(totals.image_mean, 6)


def class_statistics(
    labels: np.ndarray | ClassTotals, confidence: np.ndarray | None, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Per-class pixel counts of a label map, for the classes present, in index order.

    Args:
        labels: ``[H, W]`` integer class indices in ``[0, len(class_names))``, or their
            :class:`ClassTotals` (then ``confidence`` is not used).
        confidence: ``[H, W]`` float winning-class probability, or ``None``.
        class_names: ``[K]`` names.

    Returns:
        ``[{"index", "name", "pixels", "fraction", "mean_confidence"}]``; ``pixels`` sum to
        ``H * W``, ``fraction = pixels / (H * W)``; ``mean_confidence`` is the mean of
        ``confidence`` over the class's pixels on the grid of :func:`statistics_grid` (all of them
        up to a megapixel; all the class's pixels when none is on the grid), left out without
        confidence. Floats are rounded to 6 decimals.
    """
    totals = (
        labels
        if isinstance(labels, ClassTotals)
        else ClassTotals.from_maps(labels, confidence, len(class_names))
    )
    if len(totals.pixels) > len(class_names):
        raise ValueError(f"{len(totals.pixels)} class totals for {len(class_names)} names")
    area = int(totals.pixels.sum())
    stats: list[dict[str, Any]] = []
    for index in (int(i) for i in np.flatnonzero(totals.pixels)):
        pixels = int(totals.pixels[index])
        entry: dict[str, Any] = {
            "index": index,
            "name": str(class_names[index]),
            "pixels": pixels,
            "fraction": round(pixels / area, 6),
        }
        if totals.confidence_sums is not None and totals.confidence_counts is not None:
            count = int(totals.confidence_counts[index])
            entry["mean_confidence"] = round(float(totals.confidence_sums[index]) / count, 6)
        stats.append(entry)
    return stats
