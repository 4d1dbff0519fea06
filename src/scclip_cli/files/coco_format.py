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


def coco_category(index: int, name: str, color: tuple[int, int, int]) -> dict[str, Any]:
    """A category: ``id`` is the class index, ``name`` the legend's; ``color`` is extra
    (FiftyOne and CVAT ignore unknown keys)."""
    return {"id": int(index), "name": name, "supercategory": "", "color": list(color)}
