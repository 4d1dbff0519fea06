"""COCO: masks as compressed RLE (made with pycocotools), images, categories and annotations.

``segmentation`` is ``{"size": [H, W], "counts": "<compressed RLE string>"}``, COCO's own RLE
(column-major runs), with ``area`` and ``bbox`` (``[x, y, width, height]``) computed from it by
pycocotools.

``iscrowd`` is 0 by default: COCO's convention ties RLE to crowd regions, but the importers our
users feed read an RLE ``segmentation`` whatever ``iscrowd`` says (pycocotools' ``annToMask``,
FiftyOne's COCO importer, CVAT/Datumaro, Detectron2's ``load_coco_json``), while Detectron2 and
MMDetection *ignore* ``iscrowd: 1`` annotations when training. ``--iscrowd`` writes 1 instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_PIECES_PER_CALL = 16
"""Pieces stacked per pycocotools call (each a full-size uint8 plane)."""


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a binary mask with its area and box.

    Args:
        mask: ``[H, W]`` bool.

    Returns:
        ``{"segmentation": {"size": [H, W], "counts": str}, "area": int, "bbox": [x, y, w, h]}``.
    """
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    area = int(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    counts = rle["counts"]
    return {
        "segmentation": {
            "size": [int(s) for s in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        },
        "area": area,
        "bbox": bbox,
    }


def coco_rle_pieces(
    labels: np.ndarray, boxes: list[tuple[slice, slice]], count: int
) -> list[dict[str, Any]]:
    """:func:`coco_rle` of each piece ``k`` in ``1..count`` of a ``[H, W]`` int piece map,
    encoded a few at a time (pycocotools takes a ``[H, W, N]`` stack); ``boxes[k - 1]`` bounds
    piece ``k``, so each piece is copied from its box only."""
    from pycocotools import mask as mask_utils

    results: list[dict[str, Any]] = []
    height, width = labels.shape
    for first in range(1, count + 1, _PIECES_PER_CALL):
        last = min(first + _PIECES_PER_CALL, count + 1)
        stack = np.zeros((height, width, last - first), dtype=np.uint8, order="F")
        for k in range(first, last):
            box = boxes[k - 1]
            stack[(*box, k - first)] = labels[box] == k
        rles = mask_utils.encode(stack)
        areas = mask_utils.area(rles)
        bboxes = mask_utils.toBbox(rles)
        for rle, area, bbox in zip(rles, areas, bboxes, strict=True):
            counts = rle["counts"]
            results.append(
                {
                    "segmentation": {
                        "size": [int(v) for v in rle["size"]],
                        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                    },
                    "area": int(area),
                    "bbox": [float(v) for v in bbox],
                }
            )
    return results


def coco_category(index: int, name: str, color: tuple[int, int, int]) -> dict[str, Any]:
    """A category: ``id`` is the class index, ``name`` the legend's; ``color`` is extra
    (FiftyOne and CVAT ignore unknown keys)."""
    return {"id": int(index), "name": name, "supercategory": "", "color": list(color)}
