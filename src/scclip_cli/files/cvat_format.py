"""CVAT's "Segmentation mask 1.1" archive (the PASCAL VOC segmentation layout).

::

    labelmap.txt                      # label:color_rgb:parts:actions
    ImageSets/Segmentation/default.txt  # one image stem per line
    SegmentationClass/<stem>.png      # RGB: each pixel the colour of its class in labelmap.txt

``labelmap.txt`` gives each class as ``name:R,G,B::``. The format has no escaping: a name holding
``:`` or a line break would break the file, so those characters are replaced (``:`` by ``꞉``, the
modifier letter colon that looks the same; line breaks by spaces) and the replacement is reported.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

LABELMAP_HEADER = "# label:color_rgb:parts:actions\n"
SEGMENTATION_DIR = "SegmentationClass"
IMAGE_SET = "ImageSets/Segmentation/default.txt"


def cvat_label_name(name: str) -> str:
    """``name`` made safe for ``labelmap.txt`` (see the module docstring)."""
    return " ".join(name.replace(":", "\ua789").splitlines()) or "_"


def labelmap_text(class_names: Sequence[str], colors: Sequence[Sequence[int]]) -> str:
    """``labelmap.txt``: the header and one ``name:R,G,B::`` line per class, in index order."""
    lines = [LABELMAP_HEADER]
    for name, color in zip(class_names, colors, strict=True):
        rgb = ",".join(str(int(c)) for c in color)
        lines.append(f"{cvat_label_name(name)}:{rgb}::\n")
    return "".join(lines)


def color_png_bytes(labels: np.ndarray, colors: np.ndarray) -> bytes:
    """``[H, W]`` class indices → an RGB PNG of the classes' colours (``colors`` ``[K, 3]``
    uint8), as bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(colors, dtype=np.uint8)[labels]).save(buffer, format="PNG")
    return buffer.getvalue()
