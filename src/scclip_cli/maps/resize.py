"""Resize an image exactly as the reference does, without OpenCV.

The reference resizes with mmseg ``Resize(scale=(long_side, short_side), keep_ratio=True)``, which
is mmcv's ``imrescale``: the size comes from :func:`rescaled_size` and the pixels from
``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` on the uint8 image. This module reimplements
that OpenCV resize in vectorised numpy integer arithmetic so that our resized pixels are the
reference's, bit for bit:

- Source coordinate of output column ``dx``: ``fx = (dx + 0.5) * (src / dst) - 0.5`` computed in
  float64 and rounded to float32, ``sx = floor(fx)``, weight ``fx - sx`` (float32).
- Columns: a coordinate left of the first pixel (``sx < 0``) or at/after the last one
  (``sx >= src - 1``) takes the border pixel with full weight. Rows: the weights are kept and the
  two row indices are clamped into the image (which gives the same pixel values).
- Weights are fixed point with ``INTER_RESIZE_COEF_BITS = 11`` (``round_half_even(w * 2048)``).
- Horizontal pass: ``S[sx] * a0 + S[sx + 1] * a1`` into int32 (exact).
- Vertical pass: OpenCV's 16-bit vector code, which rounds as
  ``((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2`` (not as the exact
  ``(h0 * b0 + h1 * b1 + 2**21) >> 22`` of its scalar code). Measured: every value of every row goes
  this way in OpenCV 4.10 and 5.0 (x86-64 wheels), row ends included.
- Exactly halving both sides switches OpenCV to its area ("box") path: each output is the
  rounded mean ``(a + b + c + d + 2) >> 2`` of a 2×2 block. That is replicated too.

Not replicated (never used by this tool): OpenCV's IPP / OpenCL / platform-HAL back ends, and other
depths than uint8. ``tests/maps/test_resize.py`` compares against cv2 when it is installed.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

INTER_RESIZE_COEF_BITS = 11
"""Fixed-point precision of OpenCV's 8-bit bilinear weights."""
INTER_RESIZE_COEF_SCALE = 1 << INTER_RESIZE_COEF_BITS
"""2048: a weight of 1.0 in fixed point."""


def rescaled_size(height: int, width: int, short_side: int, long_side: int) -> tuple[int, int]:
    """The size mmcv ``rescale_size(keep_ratio=True)`` gives for ``scale=(long_side, short_side)``.

    ``s = min(long_side / max(h, w), short_side / min(h, w))`` and each side becomes
    ``int(side * s + 0.5)``: the short side reaches ``short_side`` unless that would make the long
    side exceed ``long_side``.

    Returns:
        ``(new_height, new_width)``, each at least 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if short_side < 1 or long_side < 1:
        raise ValueError("short_side and long_side must be positive")
    scale = min(long_side / max(height, width), short_side / min(height, width))
    return max(int(height * scale + 0.5), 1), max(int(width * scale + 0.5), 1)


def _source_positions(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's per-output source index ``floor(f)`` and float32 fraction ``f - floor(f)``.

    Returns:
        ``index`` ``[dst]`` int64 (may be -1 or >= src - 1 at the borders) and ``frac`` ``[dst]``
        float32 in [0, 1).
    """
    inv_scale = dst / src  # OpenCV's inv_scale, then its reciprocal: mirrors its double rounding
    scale = 1.0 / inv_scale
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(f)
    frac = (f - index).astype(np.float32)
    return index.astype(np.int64), frac


def _fixed_point_weights(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(round(2048 * (1 - frac)), round(2048 * frac))`` as OpenCV: float32, half to even.

    Returns:
        Two ``[n]`` int32 arrays.
    """
    one = np.float32(1.0)
    scale = np.float32(INTER_RESIZE_COEF_SCALE)
    w0 = np.rint((one - frac) * scale).astype(np.int32)
    w1 = np.rint(frac * scale).astype(np.int32)
    return w0, w1


def _column_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source columns and fixed-point weights of each output column.

    Returns:
        ``x0, x1`` ``[dst]`` int64 source columns (both inside the image) and ``a0, a1`` ``[dst]``
        int32 weights summing to 2048.
    """
    index, frac = _source_positions(src, dst)
    left = index < 0
    right = index >= src - 1
    frac = np.where(left | right, np.float32(0.0), frac).astype(np.float32)
    index = np.clip(index, 0, src - 1)
    a0, a1 = _fixed_point_weights(frac)
    return index, np.minimum(index + 1, src - 1), a0, a1


def _row_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source rows and fixed-point weights of each output row (rows clamped, weights kept).

    Returns:
        ``y0, y1`` ``[dst]`` int64 source rows and ``b0, b1`` ``[dst]`` int32 weights.
    """
    index, frac = _source_positions(src, dst)
    b0, b1 = _fixed_point_weights(frac)
    return np.clip(index, 0, src - 1), np.clip(index + 1, 0, src - 1), b0, b1


def _horizontal_pass(
    rows: np.ndarray, left: np.ndarray, right: np.ndarray, a0: np.ndarray, a1: np.ndarray
) -> np.ndarray:
    """``rows[:, left] * a0 + rows[:, right] * a1``, exact in int32.

    Args:
        rows: ``[R, W * C]`` uint8 source rows, flattened.
        left, right: ``[out_w * C]`` int64 flat source columns of each output value.
        a0, a1: ``[out_w * C]`` int32 fixed-point weights.

    Returns:
        ``[R, out_w * C]`` int32, values in [0, 255 * 2048].
    """
    out = np.take(rows, left, axis=1).astype(np.int32)
    out *= a0
    second = np.take(rows, right, axis=1).astype(np.int32)
    second *= a1
    out += second
    return out


def _vertical_pass(h0: np.ndarray, h1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Blend horizontally resized rows with the rounding of OpenCV's vector code.

    Args:
        h0, h1: ``[dst_h, dst_w * C]`` int32 rows, values in [0, 255 * 2048]; overwritten.
        b0, b1: ``[dst_h, 1]`` int32 row weights.

    Returns:
        ``[dst_h, dst_w * C]`` uint8.
    """
    # Drop 4 bits to fit int16, keep the high 16 bits of each product, then round away 2 more bits.
    # In place: these arrays are a few MB, and fresh temporaries cost more than the arithmetic.
    h0 >>= 4
    h0 *= b0
    h0 >>= 16
    h1 >>= 4
    h1 *= b1
    h1 >>= 16
    h0 += h1
    h0 += 2
    h0 >>= 2
    np.minimum(h0, 255, out=h0)  # never negative; > 255 only if b0 + b1 exceeded 2048
    return h0.astype(np.uint8)


def _halve(image: np.ndarray) -> np.ndarray:
    """OpenCV's 2× area downscale of uint8: ``(a + b + c + d + 2) >> 2`` over each 2×2 block.

    Args:
        image: ``[2h, 2w, C]`` uint8.

    Returns:
        ``[h, w, C]`` uint8.
    """
    s = image.astype(np.uint16)
    total = s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2] + 2
    return (total >> 2).astype(np.uint8)


class RowSource(Protocol):
    """An image served by rows (e.g. :class:`~scclip_cli.files.image_io.DisplayedImage`): a
    downscale reads only the rows it blends."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        ...

    def rows(self, index: np.ndarray) -> np.ndarray:
        """``[n, W, C]`` uint8: the rows ``index`` (``[n]`` int64)."""
        ...


class _ArrayRows:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.shape = image.shape

    def rows(self, index: np.ndarray) -> np.ndarray:
        return self.image[index]


def resize_bilinear_u8(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)``, reimplemented.

    Only the source rows the output needs go through the (int32) horizontal pass, so a large
    downscale works on about ``2 * out_h * out_w * C`` int32 values, whatever the input size.

    Args:
        image: ``[H, W, C]`` or ``[H, W]`` uint8.
        out_h: output height (>= 1).
        out_w: output width (>= 1).

    Returns:
        ``[out_h, out_w, C]`` (or ``[out_h, out_w]``) uint8, a new array. The input itself is
        returned when the size does not change.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"expected an [H, W] or [H, W, C] uint8 array, got {image.shape} {image.dtype}"
        )
    if (out_h, out_w) == image.shape[:2] and min(out_h, out_w) >= 1:
        return image
    if image.ndim == 2:
        return resize_rows_bilinear_u8(_ArrayRows(image[:, :, None]), out_h, out_w)[:, :, 0]
    return resize_rows_bilinear_u8(_ArrayRows(image), out_h, out_w)


def resize_rows_bilinear_u8(source: RowSource, out_h: int, out_w: int) -> np.ndarray:
    """:func:`resize_bilinear_u8` of an ``[H, W, C]`` uint8 image served by rows, reading only
    the rows the output blends (all of them when the size does not change or halves).

    Returns:
        ``[out_h, out_w, C]`` uint8, the same bits as :func:`resize_bilinear_u8` of the whole
        image.
    """
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size must be positive, got {out_h}x{out_w}")
    src_h, src_w, channels = source.shape
    if src_h < 1 or src_w < 1:
        raise ValueError(f"input size must be positive, got {src_h}x{src_w}")
    if (out_h, out_w) == (src_h, src_w):
        return np.ascontiguousarray(source.rows(np.arange(src_h)))
    if src_h == 2 * out_h and src_w == 2 * out_w:
        return np.ascontiguousarray(_halve(source.rows(np.arange(src_h))))

    x0, x1, a0, a1 = _column_taps(src_w, out_w)
    y0, y1, b0, b1 = _row_taps(src_h, out_h)
    # Work on rows flattened to W * C values, so every operation runs along one long axis.
    offsets = np.arange(channels)
    left = (x0[:, None] * channels + offsets).ravel()  # [out_w * C] flat source columns
    right = (x1[:, None] * channels + offsets).ravel()
    a0 = np.repeat(a0, channels)
    a1 = np.repeat(a1, channels)
    # each source row the output blends goes through the horizontal pass once
    rows, inverse = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    flat = np.ascontiguousarray(source.rows(rows)).reshape(len(rows), src_w * channels)
    horizontal = _horizontal_pass(flat, left, right, a0, a1)
    h0 = np.take(horizontal, inverse[:out_h], axis=0)
    h1 = np.take(horizontal, inverse[out_h:], axis=0)
    return _vertical_pass(h0, h1, b0[:, None], b1[:, None]).reshape(out_h, out_w, channels)


def resize_for_protocol(image: np.ndarray, short_side: int, long_side: int) -> np.ndarray:
    """Resize ``[H, W, C]`` uint8 as mmseg's ``Resize(scale=(long_side, short_side))`` (keep ratio).

    Returns:
        ``[h, w, C]`` uint8 with ``(h, w) = rescaled_size(H, W, short_side, long_side)``; the input
        array itself when the size is unchanged.
    """
    height, width = image.shape[:2]
    new_h, new_w = rescaled_size(height, width, short_side, long_side)
    return resize_bilinear_u8(image, new_h, new_w)


def resize_rows_for_protocol(source: RowSource, short_side: int, long_side: int) -> np.ndarray:
    """:func:`resize_for_protocol` of an image served by rows (see
    :func:`resize_rows_bilinear_u8`): ``[h, w, C]`` uint8, an array of its own."""
    height, width = source.shape[:2]
    new_h, new_w = rescaled_size(height, width, short_side, long_side)
    return resize_rows_bilinear_u8(source, new_h, new_w)
