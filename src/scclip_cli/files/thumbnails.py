"""Small overlay pictures of a segmented image, for the review page (``scclip report``).

A thumbnail is the image with its class colours blended over it (the colours and blend of
:func:`scclip_cli.files.mask_io.blend_overlay`), scaled so that its longer side is at most
``max_side`` pixels, written as a JPEG. The mask decides the size: the image is scaled to the
mask's shape. When the image cannot be read (moved, deleted, a format Pillow does not know), the
thumbnail shows the class colours alone, so every segmented image gets one.

A thumbnail is *fresh* (:func:`thumbnail_is_fresh`) when it is at least as new as its mask and its
image; a fresh one is reused, so a rerun of the report only draws what changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from scclip_cli.errors import ScclipError
from scclip_cli.files.atomic import atomic_path
from scclip_cli.files.mask_io import blend_overlay, colorize, read_label_png

THUMBNAIL_MAX_SIDE = 256
"""Longer side of a thumbnail, in pixels."""
THUMBNAIL_JPEG_QUALITY = 82
_EXIF_ORIENTATION = 0x0112


def thumbnail_size(width: int, height: int, max_side: int = THUMBNAIL_MAX_SIDE) -> tuple[int, int]:
    """``(width, height)`` scaled down (never up) so the longer side is at most ``max_side``."""
    if width < 1 or height < 1 or max_side < 1:
        raise ValueError(f"bad sizes: {width}x{height}, max side {max_side}")
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail_is_fresh(thumbnail: Path, sources: Iterable[Path | None]) -> bool:
    """Whether ``thumbnail`` exists and is not older than any of the ``sources`` that exist."""
    try:
        made = thumbnail.stat().st_mtime_ns
    except OSError:
        return False
    for source in sources:
        if source is None:
            continue
        try:
            if source.stat().st_mtime_ns > made:
                return False
        except OSError:
            continue  # a source that is gone cannot make the thumbnail stale
    return True


def write_overlay_thumbnail(
    mask: str | os.PathLike[str],
    image: str | os.PathLike[str] | None,
    dest: str | os.PathLike[str],
    *,
    max_side: int = THUMBNAIL_MAX_SIDE,
) -> bool:
    """Draw the overlay thumbnail of one segmented image and write it to ``dest`` (atomically,
    folders created).

    Args:
        mask: the label PNG (class index per pixel, :func:`read_label_png`).
        image: the segmented image, or ``None`` when it is not known.
        dest: the JPEG to write.
        max_side: longer side of the thumbnail.

    Returns:
        Whether the image was drawn under the colours (``False``: colours only).

    Raises:
        ImageReadError: the mask cannot be read.
        OSError: ``dest`` cannot be written.
    """
    from PIL import Image

    labels = read_label_png(mask)  # [H, W] int64
    height, width = labels.shape
    size = thumbnail_size(width, height, max_side)
    small_labels = _nearest(labels, size)  # [h, w] int64
    rgb = _small_rgb(Path(image), size) if image is not None else None
    # [h, w, 3] uint8
    picture = colorize(small_labels) if rgb is None else blend_overlay(rgb, small_labels)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        Image.fromarray(picture).save(tmp, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return rgb is not None


def _nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` labels sampled at the centres of a ``size`` (w, h) grid: ``[h, w]``."""
    height, width = labels.shape
    w, h = size
    rows = ((np.arange(h) + 0.5) * height / h).astype(np.int64)  # [h]
    cols = ((np.arange(w) + 0.5) * width / w).astype(np.int64)  # [w]
    return labels[rows[:, None], cols[None, :]]


def _small_rgb(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The image at ``size`` (w, h), EXIF orientation applied: ``[h, w, 3]`` uint8; ``None`` when
    it cannot be read."""
    from PIL import Image, ImageOps

    from scclip_cli.files.image_io import read_image_rgb

    try:
        with Image.open(path) as opened:
            longest = max(size)
            # JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the thumbnail
            opened.draft("RGB", (longest, longest))
            rotated = opened.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1)
            oriented = ImageOps.exif_transpose(opened) if rotated else opened  # it always copies
            if oriented.mode in ("RGB", "L", "P", "RGBA", "LA", "CMYK", "YCbCr"):
                picture = oriented.convert("RGB")
            else:  # 16-bit, float, ...: the reader that the model uses knows those modes
                picture = Image.fromarray(read_image_rgb(path))
            small = picture.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(small, dtype=np.uint8)
    except (OSError, ValueError, ScclipError, Image.DecompressionBombError):
        return None
