"""Label Studio: brush RLE, prediction tasks and the labelling configuration.

Brush RLE (what Label Studio's ``BrushLabels`` tool stores in ``value.rle``; not COCO RLE). It
encodes the brush canvas: the ``[H, W, 4]`` RGBA bytes, row-major, flattened, with a brushed pixel
as ``255`` in all four channels and an empty one as ``0``. The bit stream (most significant bit
first, padded with zero bits to whole bytes, given as a list of byte values) is:

- a header: the number of values (``H * W * 4``) in 32 bits, the word size minus one in 5 bits
  (words are 8 bits here), then four run-length field sizes minus one in 4 bits each
  (3, 4, 8, 16 here);
- blocks until every value is given: 1 bit "run" flag, 2 bits choosing one of the four field
  sizes, that many bits holding the block's length minus one, then for a run one word repeated
  ``length`` times (for a non-run, ``length`` words one by one; this encoder only writes runs).

Only runs are written: a mask's values come in runs of at least four equal bytes (one pixel's four
channels), so literal blocks would never be shorter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

RLE_WORD_BITS = 8
RLE_FIELD_BITS = (3, 4, 8, 16)
"""The run-length field sizes written in the header (Label Studio's own choice)."""
_MAX_RUN = 1 << RLE_FIELD_BITS[-1]


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a binary mask (format in the module docstring).

    Args:
        mask: ``[H, W]`` bool.

    Returns:
        The encoded bytes as a list of ints in 0..255 (what ``value.rle`` holds).
    """
    flat = np.asarray(mask, dtype=bool).ravel()
    total = flat.size * 4
    # runs of the pixel mask; each pixel is four equal bytes
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    lengths = np.diff(bounds).astype(np.int64) * 4
    values = np.where(flat[bounds[:-1]], 255, 0).astype(np.int64)
    # split runs longer than the widest field
    pieces = -(-lengths // _MAX_RUN)
    value = np.repeat(values, pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    index_in_run = np.arange(value.size) - first
    run_length = np.repeat(lengths, pieces)
    length = np.minimum(run_length - index_in_run * _MAX_RUN, _MAX_RUN)
    # smallest field that holds length - 1
    field = np.zeros(length.size, dtype=np.int64)
    for bits in RLE_FIELD_BITS[:-1]:
        field += (length - 1) >= (1 << bits)
    field_bits = np.asarray(RLE_FIELD_BITS, dtype=np.int64)[field]
    code = (((4 + field) << field_bits | (length - 1)) << RLE_WORD_BITS) | value  # 1, field, ...
    code_bits = 3 + field_bits + RLE_WORD_BITS
    header = (total << 21) | ((RLE_WORD_BITS - 1) << 16)
    for i, bits in enumerate(RLE_FIELD_BITS):
        header |= (bits - 1) << (12 - 4 * i)
    codes = np.concatenate([[header], code]).astype(np.uint64)
    widths = np.concatenate([[53], code_bits]).astype(np.int64)
    return _pack_bits(codes, widths).tolist()


def _pack_bits(codes: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate ``widths[i]``-bit big-endian ``codes[i]``; pad to whole bytes; uint8."""
    block = np.repeat(np.arange(codes.size), widths)
    start = np.repeat(np.cumsum(widths) - widths, widths)
    shift = (widths[block] - 1 - (np.arange(block.size) - start)).astype(np.uint64)
    bits = ((codes[block] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits)


def decode_brush_rle(rle: Sequence[int]) -> np.ndarray:
    """Decode brush RLE (run and literal blocks) into its flat uint8 values, from the format
    definition in the module docstring. The inverse of :func:`encode_brush_rle` for tests and
    for reading Label Studio's own exports."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    position = 0

    def read(count: int) -> int:
        nonlocal position
        chunk = bits[position : position + count]
        position += count
        return int("".join(map(str, chunk.tolist())) or "0", 2)

    total = read(32)
    word = read(5) + 1
    fields = [read(4) + 1 for _ in range(4)]
    out = np.zeros(total, dtype=np.uint8)
    i = 0
    while i < total:
        is_run = read(1)
        length = read(fields[read(2)]) + 1
        if is_run:
            out[i : i + length] = read(word)
        else:
            for k in range(length):
                out[i + k] = read(word)
        i += length
    return out


def brush_result(
    mask: np.ndarray,
    name: str,
    *,
    from_name: str,
    to_name: str,
    result_id: str,
    score: float | None = None,
) -> dict[str, Any]:
    """One ``brushlabels`` result item of a prediction: the class ``name`` painted over ``mask``
    (``[H, W]`` bool)."""
    height, width = mask.shape
    item: dict[str, Any] = {
        "id": result_id,
        "type": "brushlabels",
        "from_name": from_name,
        "to_name": to_name,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": [name]},
    }
    if score is not None:
        item["score"] = score
    return item


def labelling_config(
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    *,
    from_name: str,
    to_name: str,
) -> str:
    """The labelling-config XML: an ``<Image>`` and ``<BrushLabels>`` with one ``<Label>`` per
    class in its palette colour, every attribute XML-escaped."""
    lines = [
        "<View>",
        f'  <Image name={quoteattr(to_name)} value={quoteattr("$image")} zoom="true"/>',
        f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>",
    ]
    for name, color in zip(class_names, colors, strict=True):
        hex_color = "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color))
        lines.append(f"    <Label value={quoteattr(name)} background={quoteattr(hex_color)}/>")
    lines += ["  </BrushLabels>", "</View>", ""]
    return "\n".join(lines)


def task_json_chunks(tasks: Sequence[dict[str, Any]]) -> str:
    """``tasks`` as a JSON list, one task per line (UTF-8 names kept)."""
    return "[\n" + ",\n".join(json.dumps(t, ensure_ascii=False) for t in tasks) + "\n]\n"
