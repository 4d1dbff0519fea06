"""Reading images of every kind, refusing broken ones, and the reference's normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import scclip_cli.files.image_io as image_io
from scclip_cli.errors import ImageReadError
from scclip_cli.files.image_io import (
    IMAGE_EXTENSIONS,
    is_image_path,
    normalize_image,
    open_displayed,
    read_image_rgb,
    read_image_size,
)
from support.image_factory import (
    BLUE,
    GREEN,
    RED,
    WHITE,
    ImageZoo,
    exif_rotated_jpeg,
    make_image_zoo,
    png_declaring_size,
    quadrant_rgb,
    save_rgb,
)

GOLDEN = Path(__file__).parents[1] / "data" / "golden"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> ImageZoo:
    return make_image_zoo(tmp_path_factory.mktemp("zoo"))


def corners(rgb: np.ndarray) -> dict[str, tuple[int, ...]]:
    """The colour at each corner of ``[H, W, 3]`` RGB."""
    return {
        "top_left": tuple(int(v) for v in rgb[0, 0]),
        "top_right": tuple(int(v) for v in rgb[0, -1]),
        "bottom_left": tuple(int(v) for v in rgb[-1, 0]),
        "bottom_right": tuple(int(v) for v in rgb[-1, -1]),
    }


def assert_close_colour(got: tuple[int, ...], want: tuple[int, ...], tol: int) -> None:
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= tol, (got, want)


# ----------------------------------------------------------------------------- every kind reads


def test_zoo_has_every_kind(zoo: ImageZoo) -> None:
    assert len(zoo.readable()) >= 19
    assert set(zoo.unreadable()) == {"truncated_jpg", "text_as_jpg", "empty_png"}


def test_every_readable_kind_gives_displayed_size_rgb_uint8(zoo: ImageZoo) -> None:
    for name, path in zoo.readable().items():
        rgb = read_image_rgb(path)
        width, height = zoo.sizes[name]
        assert rgb.shape == (height, width, 3), name
        assert rgb.dtype == np.uint8, name
        assert rgb.flags.c_contiguous and rgb.flags.writeable, name
        assert read_image_size(path) == (width, height), name


def test_every_unreadable_kind_raises_image_read_error(zoo: ImageZoo) -> None:
    reasons = {
        "truncated_jpg": "corrupt or truncated",
        "text_as_jpg": "not a JPEG, PNG, BMP, WebP or TIFF image",
        "empty_png": "empty file",
    }
    for name, path in zoo.unreadable().items():
        with pytest.raises(ImageReadError, match=reasons[name]) as info:
            read_image_rgb(path)
        assert str(path) in str(info.value)
    # The size reader only parses headers; the empty and text files have none.
    for name in ("text_as_jpg", "empty_png"):
        with pytest.raises(ImageReadError):
            read_image_size(zoo[name])


def test_lossless_formats_keep_exact_pixels(zoo: ImageZoo) -> None:
    quad = quadrant_rgb(24, 40)
    for name in ("nested_png", "bmp", "webp", "tiff", "unicode_name_png", "rgba_png"):
        np.testing.assert_array_equal(read_image_rgb(zoo[name]), quad, err_msg=name)


def test_jpeg_and_cmyk_keep_the_corner_colours(zoo: ImageZoo) -> None:
    for name in ("rgb_jpg", "upper_ext_jpg", "cmyk_jpg"):
        got = corners(read_image_rgb(zoo[name]))
        want = {"top_left": RED, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": WHITE}
        for corner, colour in want.items():
            assert_close_colour(got[corner], colour, tol=40)


def test_grey_modes_give_equal_channels(zoo: ImageZoo) -> None:
    grey = read_image_rgb(zoo["gray_png"])
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    np.testing.assert_array_equal(grey[0, :, 0], np.arange(0, 256, 8))
    la = read_image_rgb(zoo["la_png"])  # alpha 7 everywhere: dropped, grey kept
    np.testing.assert_array_equal(la, grey)
    bits = read_image_rgb(zoo["one_bit_png"])
    assert (bits[:, :5] == 0).all() and (bits[:, 5:] == 255).all()


def test_sixteen_bit_uses_the_full_range(zoo: ImageZoo) -> None:
    # stored: 0, 255, 256, 32768, 65280, 65535 → high byte
    rgb = read_image_rgb(zoo["gray16_png"])
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 0, 1, 128, 255, 255])
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_float_image_in_unit_range_scales_to_255(zoo: ImageZoo) -> None:
    rgb = read_image_rgb(zoo["float_tiff"])
    np.testing.assert_array_equal(rgb[0, :, 1], [0, 64, 128, 255])


def test_palette_images_give_palette_colours(zoo: ImageZoo) -> None:
    for name in ("palette_png", "palette_transparent_png"):
        rgb = read_image_rgb(zoo[name])
        assert [tuple(int(v) for v in px) for px in rgb[0]] == [RED, GREEN, BLUE, WHITE], name


def test_alpha_is_dropped_not_composited(zoo: ImageZoo) -> None:
    # rgba.png's alpha runs from 0 (left) to 255 (right); the colours are the quadrants unchanged.
    rgb = read_image_rgb(zoo["rgba_png"])
    assert corners(rgb)["top_left"] == RED


def test_rows_of_every_readable_kind_are_read_image_rgbs_rows(zoo: ImageZoo) -> None:
    # any order, repeats, runs and gaps; RGB/RGBA files are cut by runs, the others converted
    for name, path in zoo.readable().items():
        whole = read_image_rgb(path)
        height = whole.shape[0]
        index = np.array([height - 1, 0, 1, 2, height // 2, 0, height - 1, height // 2 + 2])
        index = index.clip(0, height - 1)  # some are a few pixels high
        with open_displayed(path) as shown:
            assert shown.shape == whole.shape, name
            got = shown.rows(index)
            assert got.dtype == np.uint8 and got.flags.c_contiguous, name
            assert np.array_equal(got, whole[index]), name
            assert np.array_equal(shown.rows(np.arange(height)), whole), name
            assert np.array_equal(shown.rows(np.array([], dtype=np.int64)), whole[:0]), name
            assert np.array_equal(shown.rgb(), whole), name


def test_rows_out_of_the_image_are_refused(zoo: ImageZoo) -> None:
    with open_displayed(zoo["rgb_jpg"]) as shown, pytest.raises(IndexError):
        shown.rows(np.array([0, shown.height]))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8, 2])
def test_rows_follow_the_exif_orientation(tmp_path: Path, orientation: int) -> None:
    path = exif_rotated_jpeg(tmp_path / "o.jpg", quadrant_rgb(24, 40), orientation)
    whole = read_image_rgb(path)
    with open_displayed(path) as shown:
        assert shown.shape == whole.shape
        assert np.array_equal(shown.rows(np.arange(shown.height)[::-3]), whole[::-3])


def test_open_displayed_raises_read_errors_as_read_image_rgb(zoo: ImageZoo) -> None:
    for path in zoo.unreadable().values():
        with pytest.raises(ImageReadError):
            open_displayed(path)


@pytest.mark.parametrize(
    ("orientation", "displayed_size", "red_corner"),
    [
        (1, (40, 24), "top_left"),
        (3, (40, 24), "bottom_right"),  # rotated 180°
        (6, (24, 40), "top_right"),  # rotated 90° clockwise for display
        (8, (24, 40), "bottom_left"),  # rotated 90° counter-clockwise
        (2, (40, 24), "top_right"),  # mirrored
    ],
)
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, displayed_size: tuple[int, int], red_corner: str
) -> None:
    path = exif_rotated_jpeg(tmp_path / "o.jpg", quadrant_rgb(24, 40), orientation)
    rgb = read_image_rgb(path)
    assert (rgb.shape[1], rgb.shape[0]) == displayed_size
    assert read_image_size(path) == displayed_size
    assert_close_colour(corners(rgb)[red_corner], RED, tol=40)


def test_zoo_exif_image_is_displayed_upright(zoo: ImageZoo) -> None:
    with Image.open(zoo["exif_rotated_jpg"]) as stored:
        assert stored.size == (40, 24)
    rgb = read_image_rgb(zoo["exif_rotated_jpg"])
    assert rgb.shape == (40, 24, 3)
    assert_close_colour(corners(rgb)["top_right"], RED, tol=40)


# ----------------------------------------------------------------------------- failures


def test_missing_file_and_folder_are_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image_rgb(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="directory"):
        read_image_rgb(tmp_path)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image_size(tmp_path / "nope.jpg")


def test_other_pillow_formats_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "anim.png"
    Image.fromarray(quadrant_rgb(8, 8)).save(tmp_path / "real.gif")
    path.write_bytes((tmp_path / "real.gif").read_bytes())  # a GIF named .png
    with pytest.raises(ImageReadError, match="not a JPEG"):
        read_image_rgb(path)


def test_header_declaring_a_huge_size_is_refused_without_decoding(tmp_path: Path) -> None:
    path = png_declaring_size(tmp_path / "bomb.png", 100_000, 100_000)  # 10 gigapixels, 70 bytes
    assert path.stat().st_size < 200
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image_rgb(path)
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image_size(path)


def test_our_pixel_limit_applies_per_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 25 MP declared: under Pillow's own limits, so only our check can refuse it. The pixel data is
    # fake, so had it been decoded the error would be "corrupt", not "too many pixels".
    fake = png_declaring_size(tmp_path / "fake.png", 5_000, 5_000)
    real = tmp_path / "real.png"
    Image.new("1", (300, 200), 1).save(real)  # 60 000 px, a few hundred bytes on disk
    assert read_image_rgb(real).shape == (200, 300, 3)
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(ImageReadError, match=r"300x200 = 60,000 > limit 50,000"):
        read_image_rgb(real)
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image_rgb(fake)
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 60_000)
    assert read_image_rgb(real).shape == (200, 300, 3)


def test_pillows_own_bomb_error_is_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "img.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow refuses above 2 000
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image_rgb(path)


def test_truncated_data_is_never_padded(zoo: ImageZoo) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageReadError):
        read_image_rgb(zoo["truncated_jpg"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_fails(tmp_path: Path) -> None:
    path = save_rgb(
        tmp_path / "whole.png",
        np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8),
    )
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image_rgb(cut)


# ----------------------------------------------------------------------------- names, normalisation


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("a.JPEG", True),
        ("dir/b.Png", True),
        ("c.tif", True),
        ("c.TIFF", True),
        ("d.webp", True),
        ("e.bmp", True),
        ("f.gif", False),
        ("g.png.txt", False),
        ("jpg", False),
        ("ünïcødé_猫.png", True),
    ],
)
def test_is_image_path(name: str, expected: bool) -> None:
    assert is_image_path(name) is expected
    assert is_image_path(Path(name)) is expected


def test_extensions_are_lower_case_with_dot() -> None:
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


def test_normalisation_reproduces_the_reference_input_exactly() -> None:
    import torch

    golden = np.load(GOLDEN / "crop.npz")["input"]  # [3, 224, 224] float32
    tensor = normalize_image(read_image_rgb(GOLDEN / "crop.png"))
    assert tensor.dtype == torch.float32
    assert tuple(tensor.shape) == (3, 224, 224)
    assert tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.numpy(), golden)


def test_normalisation_rejects_non_rgb_uint8() -> None:
    with pytest.raises(ValueError):
        normalize_image(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        normalize_image(np.zeros((4, 4, 3), dtype=np.float32))
