"""Overlay thumbnails for the review page: size, colours, fallbacks and freshness."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.errors import ImageReadError
from scclip_cli.files.mask_io import blend_overlay, colorize, write_label_png
from scclip_cli.files.thumbnails import (
    thumbnail_is_fresh,
    thumbnail_size,
    write_overlay_thumbnail,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1000, 500), (256, 128)),
        ((500, 1000), (128, 256)),
        ((100, 50), (100, 50)),
        ((3, 900), (1, 256)),
    ],
)
def test_the_longer_side_is_at_most_256(size, expected) -> None:
    assert thumbnail_size(*size) == expected


def halves(height: int, width: int) -> np.ndarray:
    """Labels: class 1 on the left half, class 2 on the right half."""
    labels = np.ones((height, width), dtype=np.int64)
    labels[:, width // 2 :] = 2
    return labels


def test_thumbnail_blends_the_class_colours_over_the_scaled_image(tmp_path: Path) -> None:
    rgb = np.zeros((200, 600, 3), dtype=np.uint8)
    rgb[..., 2] = 200  # blue everywhere
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    write_label_png(tmp_path / "mask.png", halves(200, 600), 3)
    drew_image = write_overlay_thumbnail(
        tmp_path / "mask.png", tmp_path / "photo.png", tmp_path / "t" / "thumb.jpg"
    )
    assert drew_image
    thumb = np.asarray(Image.open(tmp_path / "t" / "thumb.jpg").convert("RGB")).astype(int)
    assert thumb.shape == (85, 256, 3)
    expected = blend_overlay(np.full((85, 256, 3), (0, 0, 200), np.uint8), halves(85, 256))
    # away from the class border, within JPEG's error
    assert np.abs(thumb[10:-10, 10:110] - expected[10:-10, 10:110]).max() < 12
    assert np.abs(thumb[10:-10, 150:-10] - expected[10:-10, 150:-10]).max() < 12


def test_without_a_readable_image_the_thumbnail_shows_the_colours(tmp_path: Path) -> None:
    write_label_png(tmp_path / "mask.png", halves(40, 60), 3)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    for image in (None, tmp_path / "broken.jpg", tmp_path / "gone.jpg"):
        dest = tmp_path / "thumb.jpg"
        assert not write_overlay_thumbnail(tmp_path / "mask.png", image, dest)
        thumb = np.asarray(Image.open(dest).convert("RGB")).astype(int)
        assert thumb.shape == (40, 60, 3)  # small masks are not enlarged
        assert np.abs(thumb[5:-5, 5:25] - colorize(np.array([[1]]))[0, 0]).max() < 12


def test_the_mask_decides_the_size(tmp_path: Path) -> None:
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(tmp_path / "photo.jpg")
    write_label_png(tmp_path / "mask.png", halves(100, 300), 3)
    write_overlay_thumbnail(tmp_path / "mask.png", tmp_path / "photo.jpg", tmp_path / "t.jpg")
    assert Image.open(tmp_path / "t.jpg").size == (256, 85)


def test_an_unreadable_mask_raises(tmp_path: Path) -> None:
    (tmp_path / "mask.png").write_bytes(b"garbage")
    with pytest.raises(ImageReadError):
        write_overlay_thumbnail(tmp_path / "mask.png", None, tmp_path / "t.jpg")
    assert not (tmp_path / "t.jpg").exists()


def test_a_thumbnail_is_fresh_until_a_source_is_newer(tmp_path: Path) -> None:
    mask, image, thumb = tmp_path / "m.png", tmp_path / "i.jpg", tmp_path / "t.jpg"
    for path in (mask, image, thumb):
        path.write_bytes(b"x")
    os.utime(mask, ns=(1_000, 1_000))
    os.utime(image, ns=(2_000, 2_000))
    os.utime(thumb, ns=(2_000, 2_000))
    assert thumbnail_is_fresh(thumb, (mask, image, None, tmp_path / "missing.jpg"))
    os.utime(mask, ns=(3_000, 3_000))
    assert not thumbnail_is_fresh(thumb, (mask, image))
    assert not thumbnail_is_fresh(tmp_path / "no-thumb.jpg", (mask,))


def test_the_image_is_turned_as_its_exif_orientation_says(tmp_path: Path) -> None:
    from support.image_factory import exif_rotated_jpeg, quadrant_rgb

    stored = quadrant_rgb(24, 40)  # [24, 40]: displayed turned 90° clockwise, 24 wide, 40 tall
    exif_rotated_jpeg(tmp_path / "turned.jpg", stored)
    write_label_png(tmp_path / "mask.png", np.zeros((40, 24), dtype=np.int64), 2)
    assert write_overlay_thumbnail(
        tmp_path / "mask.png", tmp_path / "turned.jpg", tmp_path / "t.jpg"
    )
    thumb = np.asarray(Image.open(tmp_path / "t.jpg").convert("RGB")).astype(int)
    displayed = np.rot90(stored, k=-1).astype(int)  # [40, 24]
    expected = displayed // 2  # class 0 is black: the overlay halves the image
    for y, x in ((8, 6), (8, 18), (32, 6), (32, 18)):  # the four quadrants' centres
        assert np.abs(thumb[y, x] - expected[y, x]).max() < 20, (y, x)
