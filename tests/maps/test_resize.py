"""The resize must reproduce OpenCV's INTER_LINEAR on uint8 (the reference's resize) bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.maps.resize import (
    rescaled_size,
    resize_bilinear_u8,
    resize_for_protocol,
    resize_rows_bilinear_u8,
    resize_rows_for_protocol,
)

GOLDEN = Path(__file__).parents[1] / "data" / "golden"


def pattern(height: int, width: int, channels: int = 3) -> np.ndarray:
    """``[H, W, C]`` uint8 with a busy, fully deterministic pattern (no RNG stream involved)."""
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    return ((37 * y + 101 * x + 59 * c + 7 * x * y + 13 * x * x) % 256).astype(np.uint8)


# cv2.resize(pattern(h, w), (out_w, out_h), interpolation=cv2.INTER_LINEAR), OpenCV 5.0.0 (the
# same with 4.10.0), computed once and pasted here: the tests must not need OpenCV.
CV2_EXPECTED = {
    (5, 7, 8, 11): [
        [
            [0, 59, 118],
            [52, 111, 170],
            [127, 162, 221],
            [216, 89, 147],
            [221, 117, 83],
            [164, 223, 26],
            [123, 182, 148],
            [90, 149, 207],
            [65, 124, 183],
            [55, 114, 173],
            [50, 109, 168],
        ],
        [
            [16, 75, 134],
            [69, 128, 136],
            [136, 182, 139],
            [156, 110, 139],
            [173, 100, 107],
            [189, 136, 51],
            [151, 169, 104],
            [119, 178, 155],
            [97, 156, 204],
            [88, 147, 207],
            [84, 144, 203],
        ],
        [
            [39, 98, 157],
            [95, 146, 96],
            [151, 195, 36],
            [82, 136, 130],
            [109, 81, 140],
            [210, 28, 88],
            [184, 145, 52],
            [160, 204, 88],
            [141, 184, 221],
            [136, 179, 238],
            [134, 177, 236],
        ],
        [
            [62, 121, 180],
            [120, 98, 121],
            [179, 78, 64],
            [112, 123, 160],
            [84, 115, 174],
            [86, 65, 124],
            [165, 82, 91],
            [202, 85, 86],
            [186, 69, 120],
            [183, 66, 125],
            [183, 66, 125],
        ],
        [
            [85, 144, 204],
            [145, 87, 146],
            [207, 33, 85],
            [143, 132, 133],
            [89, 148, 156],
            [42, 101, 160],
            [124, 71, 130],
            [164, 47, 106],
            [150, 33, 92],
            [151, 34, 93],
            [153, 36, 95],
        ],
        [
            [109, 168, 227],
            [170, 112, 171],
            [235, 61, 98],
            [174, 163, 47],
            [123, 181, 88],
            [78, 137, 196],
            [61, 110, 169],
            [46, 89, 148],
            [35, 78, 137],
            [38, 81, 140],
            [42, 85, 144],
        ],
        [
            [132, 191, 106],
            [129, 138, 118],
            [131, 76, 124],
            [165, 89, 67],
            [156, 123, 59],
            [115, 173, 89],
            [90, 149, 155],
            [72, 131, 190],
            [64, 123, 182],
            [70, 128, 187],
            [75, 134, 193],
        ],
        [
            [148, 207, 10],
            [96, 155, 74],
            [49, 85, 144],
            [156, 29, 88],
            [179, 75, 41],
            [140, 199, 2],
            [117, 176, 142],
            [101, 160, 219],
            [95, 154, 213],
            [103, 162, 221],
            [110, 169, 228],
        ],
    ],
    (13, 17, 6, 5): [
        [[138, 176, 116], [117, 176, 176], [158, 68, 127], [147, 117, 176], [147, 86, 145]],
        [[215, 70, 90], [75, 70, 129], [104, 163, 222], [170, 88, 147], [33, 92, 151]],
        [[109, 117, 176], [161, 220, 45], [70, 108, 167], [150, 200, 118], [39, 98, 136]],
        [[156, 198, 65], [55, 114, 173], [229, 54, 113], [126, 176, 94], [67, 108, 163]],
        [[204, 58, 117], [167, 85, 67], [132, 191, 58], [136, 131, 190], [115, 123, 169]],
        [[97, 156, 215], [99, 158, 153], [142, 201, 153], [133, 127, 144], [78, 116, 175]],
    ],
    # Exactly half in both directions: OpenCV switches to its 2×2 box average.
    (8, 6, 4, 3): [
        [[77, 136, 131], [172, 103, 98], [115, 174, 169]],
        [[158, 89, 148], [89, 148, 143], [124, 55, 114]],
        [[111, 170, 101], [198, 65, 60], [133, 192, 123]],
        [[128, 123, 118], [51, 110, 169], [142, 73, 132]],
    ],
}


@pytest.mark.parametrize("case", list(CV2_EXPECTED), ids=lambda c: "{}x{}->{}x{}".format(*c))
def test_matches_hard_coded_opencv_output(case: tuple[int, int, int, int]) -> None:
    h, w, out_h, out_w = case
    expected = np.array(CV2_EXPECTED[case], dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear_u8(pattern(h, w), out_h, out_w), expected)


@pytest.mark.parametrize(
    ("height", "width", "short", "long", "expected"),
    [
        (200, 300, 336, 2048, (336, 504)),  # the golden voc_chelsea case
        (336, 504, 336, 2048, (336, 504)),  # already there
        (512, 683, 336, 2048, (336, 448)),  # 448.22 rounds down
        (4000, 3000, 336, 2048, (448, 336)),  # portrait downscale
        (100, 1000, 336, 2048, (205, 2048)),  # the long side caps the scale: 204.8 → 205
        (1024, 2048, 560, 2048, (560, 1120)),  # cityscapes short side
        (3, 5, 336, 2048, (336, 560)),
        (8, 600, 336, 2048, (27, 2048)),  # extreme aspect: capped by the long side
        (1, 1, 336, 2048, (336, 336)),
    ],
)
def test_rescaled_size_follows_mmcv(
    height: int, width: int, short: int, long: int, expected: tuple[int, int]
) -> None:
    assert rescaled_size(height, width, short, long) == expected


def test_rescaled_size_rejects_empty_sizes() -> None:
    with pytest.raises(ValueError):
        rescaled_size(0, 10, 336, 2048)
    with pytest.raises(ValueError):
        rescaled_size(10, 10, 0, 2048)


def test_golden_image_resizes_to_336_by_504() -> None:
    rgb = np.asarray(Image.open(GOLDEN / "voc_chelsea.png").convert("RGB"))
    assert rgb.shape == (200, 300, 3)
    out = resize_for_protocol(rgb, 336, 2048)
    assert out.shape == (336, 504, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous


def test_same_size_returns_the_input_itself() -> None:
    image = pattern(336, 504)
    assert resize_for_protocol(image, 336, 2048) is image
    assert resize_bilinear_u8(image, 336, 504) is image


def test_grey_and_single_channel_inputs_agree() -> None:
    grey = pattern(9, 14, 1)
    out3 = resize_bilinear_u8(grey, 20, 31)
    out2 = resize_bilinear_u8(grey[:, :, 0], 20, 31)
    assert out3.shape == (20, 31, 1)
    np.testing.assert_array_equal(out2, out3[:, :, 0])


def test_constant_image_stays_constant_and_values_stay_in_range() -> None:
    for value in (0, 1, 127, 254, 255):
        image = np.full((7, 9, 3), value, dtype=np.uint8)
        for size in ((3, 4), (20, 25), (1, 1), (7, 30)):
            assert (resize_bilinear_u8(image, *size) == value).all()


def test_non_contiguous_input_is_accepted() -> None:
    image = pattern(20, 30)
    view = image[::2, ::-1]
    np.testing.assert_array_equal(
        resize_bilinear_u8(view, 15, 21), resize_bilinear_u8(view.copy(), 15, 21)
    )


def test_rejects_wrong_inputs() -> None:
    with pytest.raises(ValueError):
        resize_bilinear_u8(np.zeros((4, 4, 3), dtype=np.float32), 8, 8)
    with pytest.raises(ValueError):
        resize_bilinear_u8(np.zeros((4, 4, 3), dtype=np.uint8), 0, 8)


def test_bit_exact_against_opencv_on_random_shapes() -> None:
    """Up- and downscaling, odd sizes, 1-pixel sides, 1/3/4 channels, the 2× special case.

    OpenCV is the oracle (``opencv-python-headless``, dev extra): a missing OpenCV fails here
    rather than skipping, so the README's bit-exactness claim is checked wherever tests run."""
    import cv2

    rng = np.random.default_rng(2024)
    cases = [tuple(int(v) for v in rng.integers(1, 90, 4)) for _ in range(150)]
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(100, 900, 2))
        cases.append((h, w, *rescaled_size(h, w, 336, 2048)))
        cases.append((h, w, *rescaled_size(h, w, 560, 2048)))
    cases += [(200, 300, 336, 504), (672, 1008, 336, 504), (168, 252, 336, 504), (1, 1, 3, 5)]
    cases += [(2, 2, 1, 1), (1, 9, 1, 4), (9, 1, 4, 1), (8, 600, 27, 2048)]
    for h, w, out_h, out_w in cases:
        channels = int(rng.choice([1, 3, 4]))
        image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        expected = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        got = resize_bilinear_u8(image, out_h, out_w)
        np.testing.assert_array_equal(
            got.reshape(expected.shape), expected, err_msg=f"{h}x{w}x{channels} -> {out_h}x{out_w}"
        )


class _CountingRows:
    """An image served by rows, counting the rows it is asked for."""

    def __init__(self, image: np.ndarray) -> None:
        self.image, self.shape, self.asked = image, image.shape, 0

    def rows(self, index: np.ndarray) -> np.ndarray:
        self.asked += len(index)
        return self.image[index]


@pytest.mark.parametrize(
    ("src", "out"),
    [((300, 400), (33, 45)), ((40, 30), (97, 61)), ((64, 48), (32, 24)), ((20, 20), (20, 20))],
    ids=["down", "up", "halved", "same"],
)
def test_resizing_by_rows_is_resizing_the_array(src: tuple[int, int], out: tuple[int, int]) -> None:
    image = np.random.default_rng(5).integers(0, 256, (*src, 3), dtype=np.uint8)
    source = _CountingRows(image)
    got = resize_rows_bilinear_u8(source, *out)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    assert np.array_equal(got, resize_bilinear_u8(image, *out))
    if src[0] > 2 * out[0]:  # a downscale reads two source rows per output row at most
        assert source.asked <= 2 * out[0]


def test_resize_rows_for_protocol_is_resize_for_protocol() -> None:
    image = np.random.default_rng(6).integers(0, 256, (1000, 700, 3), dtype=np.uint8)
    got = resize_rows_for_protocol(_CountingRows(image), 336, 2048)
    assert np.array_equal(got, resize_for_protocol(image, 336, 2048))
