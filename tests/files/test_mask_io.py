"""Label PNGs, overlays, legends, class statistics, the VOC colour map and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.errors import ImageReadError
from scclip_cli.files.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from scclip_cli.files.mask_io import (
    blend_overlay,
    class_statistics,
    color_path_for,
    read_label_png,
    write_label_png,
    write_legend,
    write_overlay_jpg,
)
from scclip_cli.files.palette import voc_colormap


def random_labels(shape: tuple[int, int], num_classes: int, seed: int = 0) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, num_classes, shape)
    labels.flat[:num_classes] = np.arange(num_classes)[: labels.size]  # every class present
    return labels


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- colour map


def test_voc_colormap_starts_like_the_voc_devkit() -> None:
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    expected = [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
        (128, 0, 128),
        (0, 128, 128),
        (128, 128, 128),
        (64, 0, 0),
        (192, 0, 0),
    ]
    assert [tuple(int(v) for v in c) for c in cmap[:10]] == expected
    assert tuple(int(v) for v in cmap[255]) == (224, 224, 192)  # VOC's "void" colour


def test_voc_colormap_beyond_256_continues_with_distinct_colours() -> None:
    big = voc_colormap(5000)
    np.testing.assert_array_equal(big[:256], voc_colormap(256))
    assert len({tuple(c) for c in big.tolist()}) == 5000
    assert voc_colormap(0).shape == (0, 3)
    with pytest.raises(ValueError):
        voc_colormap(-1)


# ----------------------------------------------------------------------------- label PNGs


def test_palette_png_round_trip_keeps_indices_and_colours(tmp_path: Path) -> None:
    labels = random_labels((37, 53), 21)
    path = tmp_path / "sub" / "mask.png"
    assert write_label_png(path, labels, 21) == [path]
    with Image.open(path) as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette()[: 256 * 3], dtype=np.uint8).reshape(256, 3)
        np.testing.assert_array_equal(palette, voc_colormap(256))
        coloured = np.asarray(image.convert("RGB"))  # what any viewer shows
    np.testing.assert_array_equal(coloured, voc_colormap(21)[labels])
    got = read_label_png(path)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, labels)
    assert listing(path.parent) == ["mask.png"]  # no temporary file left behind


def test_256_classes_still_fit_a_palette_png(tmp_path: Path) -> None:
    labels = random_labels((20, 20), 256)
    write_label_png(tmp_path / "m.png", labels, 256)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "m.png"), labels)


def test_300_classes_round_trip_through_16_bit_plus_colour_png(tmp_path: Path) -> None:
    labels = random_labels((30, 40), 300)
    labels[0, 0] = 299
    path = tmp_path / "img.v2.png"
    written = write_label_png(path, labels, 300)
    color = tmp_path / "img.v2_color.png"
    assert written == [path, color] and color_path_for(path) == color
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(read_label_png(path), labels)
    with Image.open(color) as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), voc_colormap(300)[labels])
    assert listing(tmp_path) == ["img.v2.png", "img.v2_color.png"]


@pytest.mark.parametrize(
    ("labels", "num_classes"),
    [
        (np.array([[0, 21]]), 21),  # index out of range
        (np.array([[-1, 0]]), 21),
        (np.zeros((2, 2, 2), dtype=int), 21),  # not [H, W]
        (np.zeros((2, 2), dtype=np.float32), 21),  # not integers
        (np.zeros((2, 2), dtype=int), 70_000),  # too many classes for 16 bits
    ],
)
def test_write_label_png_rejects_bad_labels(
    tmp_path: Path, labels: np.ndarray, num_classes: int
) -> None:
    with pytest.raises(ValueError):
        write_label_png(tmp_path / "m.png", labels, num_classes)
    assert not (tmp_path / "m.png").exists()


def test_read_label_png_accepts_grey_and_refuses_colour(tmp_path: Path) -> None:
    grey = np.array([[0, 1, 2], [3, 254, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "l.png"), grey)
    wide = np.array([[0, 300, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "i16.png"), wide)

    Image.fromarray(voc_colormap(4)[np.array([[0, 1], [2, 3]])]).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="RGB colour image, not a label mask"):
        read_label_png(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_label_png(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError):
        read_label_png(tmp_path / "bad.png")
    Image.fromarray(grey).save(tmp_path / "lossy.jpg")
    with pytest.raises(ImageReadError, match="not a PNG, BMP or TIFF"):
        read_label_png(tmp_path / "lossy.jpg")


# ----------------------------------------------------------------------------- overlay, legend


def test_overlay_blends_colours_over_the_image(tmp_path: Path) -> None:
    rgb = np.full((10, 16, 3), 200, dtype=np.uint8)
    labels = np.zeros((10, 16), dtype=np.int32)
    labels[:, 8:] = 1  # class 1 is (128, 0, 0)
    blended = blend_overlay(rgb, labels, alpha=0.5)
    assert tuple(int(v) for v in blended[0, 0]) == (100, 100, 100)  # class 0: black
    assert tuple(int(v) for v in blended[0, 15]) == (164, 100, 100)
    np.testing.assert_array_equal(blend_overlay(rgb, labels, alpha=0.0), rgb)

    path = tmp_path / "o" / "x_overlay.jpg"
    write_overlay_jpg(path, rgb, labels)
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (16, 10)
    assert listing(path.parent) == ["x_overlay.jpg"]
    with pytest.raises(ValueError):
        write_overlay_jpg(tmp_path / "bad.jpg", rgb, labels[:5])


def test_legend_json_and_png(tmp_path: Path) -> None:
    names = ["background", "cat", "ünïcødé 猫", *[f"class {i}" for i in range(3, 95)]]
    json_path, png_path = write_legend(tmp_path / "out", names)
    entries = json.loads(json_path.read_text(encoding="utf-8"))
    assert [e["name"] for e in entries] == names
    assert entries[1] == {"index": 1, "name": "cat", "color": [128, 0, 0]}
    assert all(e["index"] == i for i, e in enumerate(entries))
    with Image.open(png_path) as image:
        assert image.mode == "RGB"
        tall = image.size
    write_legend(tmp_path / "small", names[:10])
    with Image.open(tmp_path / "small" / "legend.png") as image:
        short = image.size
    assert tall[1] > short[1]  # more rows ...
    assert tall[0] > 2 * short[0]  # ... but 95 classes wrap into 3 columns
    assert listing(tmp_path / "out") == ["legend.json", "legend.png"]


# ----------------------------------------------------------------------------- statistics


def test_class_statistics_count_every_pixel_once() -> None:
    labels = np.array([[0, 0, 2, 2], [2, 2, 2, 5]], dtype=np.int32)
    confidence = np.array([[0.5, 1.0, 0.2, 0.4], [0.6, 0.8, 1.0, 0.9]], dtype=np.float32)
    names = [f"c{i}" for i in range(6)]
    stats = class_statistics(labels, confidence, names)
    assert [s["index"] for s in stats] == [0, 2, 5]  # present classes only, in index order
    assert sum(s["pixels"] for s in stats) == labels.size
    assert stats[0] == {
        "index": 0,
        "name": "c0",
        "pixels": 2,
        "fraction": 0.25,
        "mean_confidence": 0.75,
    }
    assert stats[1]["pixels"] == 5 and stats[1]["mean_confidence"] == pytest.approx(0.6)
    assert "mean_confidence" not in class_statistics(labels, None, names)[0]


def test_class_statistics_on_a_large_map() -> None:
    labels = random_labels((480, 640), 171)
    stats = class_statistics(
        labels, np.ones(labels.shape, np.float32), [str(i) for i in range(171)]
    )
    assert len(stats) == 171
    assert sum(s["pixels"] for s in stats) == 480 * 640
    assert sum(s["fraction"] for s in stats) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError):
        class_statistics(labels, None, ["too", "few"])


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_writes_create_folders_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    atomic_write_json(target, {"x": "ü", "n": [1, 2]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"x": "ü", "n": [1, 2]}
    atomic_write_text(target, "text\n", fsync=True)
    assert target.read_text(encoding="utf-8") == "text\n"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert listing(target.parent) == ["file.json"]


def test_failure_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".new.bin.tmp-")
    assert listing(tmp_path) == []


def test_failure_keeps_the_existing_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "keep.json"
    target.write_text('{"old": true}\n', encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half written", encoding="utf-8")
        raise KeyboardInterrupt
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})  # not serialisable: nothing is written
    assert target.read_text(encoding="utf-8") == '{"old": true}\n'
    assert listing(tmp_path) == ["keep.json"]


def test_block_that_writes_nothing_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x.txt"):
        pass
    assert listing(tmp_path) == []


def test_temporary_names_are_hidden_unique_and_short(tmp_path: Path) -> None:
    names = set()
    long_name = "n" * 250 + ".png"
    for _ in range(20):
        with atomic_path(tmp_path / long_name) as tmp:
            tmp.write_bytes(b"x")
            names.add(tmp.name)
            assert tmp.name.startswith(".") and f"-{os.getpid()}-" in tmp.name
            assert len(tmp.name.encode()) < 255
    assert len(names) == 20
    assert listing(tmp_path) == [long_name]
