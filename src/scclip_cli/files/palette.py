"""The PASCAL VOC colour map: a distinct colour for every class index.

Index ``i`` gets its colour by spreading its bits over the three channels, high bits first:
bit ``3k`` of ``i`` goes to bit ``7 - k`` of red, bit ``3k + 1`` to green, bit ``3k + 2`` to blue.
So class 0 is black, 1 is (128, 0, 0), 2 is (0, 128, 0), 3 is (128, 128, 0), ... exactly as the VOC
development kit (and mmseg / torchvision's VOC palettes) colour them. The scheme takes 24 bits of
the index, so the first 2**24 indices (beyond 256 too) all get different colours.
"""

from __future__ import annotations

import numpy as np

MAX_COLORS = 1 << 24
"""Indices below this get distinct colours."""


def voc_colormap(n: int = 256) -> np.ndarray:
    """The colours of class indices ``0 .. n - 1``.

    Args:
        n: number of colours, 0 to :data:`MAX_COLORS`.

    Returns:
        ``[n, 3]`` uint8 RGB.
    """
    if not 0 <= n <= MAX_COLORS:
        raise ValueError(f"the VOC colour map has {MAX_COLORS} colours; asked for {n}")
    index = np.arange(n, dtype=np.int64)
    colors = np.zeros((n, 3), dtype=np.int64)
    for k in range(8):  # bit group k of the index → bit 7 - k of each channel
        for channel in range(3):
            colors[:, channel] |= ((index >> (3 * k + channel)) & 1) << (7 - k)
    return colors.astype(np.uint8)
