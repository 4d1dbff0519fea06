"""Dense window features of images, cached on disk so a rerun with another vocabulary or other
post-processing settings skips the vision model.

One entry per image: the L2-normalised dense features of each of its sliding windows, in window
order, as float32 (exactly what the scores are computed from, so labels from cached features are
the same bits as labels from a fresh forward pass). The entry's key (:meth:`FeatureCache.key`) is
made of the image digest (the resized, normalised pixels the windows are cut from) and a context:
the model identity, its dtype, the method and calibration, and the window geometry. Storage,
checksums, atomic writes, sharing between runs and the size limit are
:class:`~scclip_cli.files.cache_store.CacheStore`'s.

Payload layout::

    header length (4 bytes, little-endian) | header JSON {"format", "shapes": [[gh, gw, D], ...]}
    | float32 data of every window, C order, one after another
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scclip_cli.files.cache_store import CacheStore, key_of

FORMAT = "scclip-window-features/1"
FEATURES_FOLDER = "features"


def pixels_digest(pixels: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes (C order)."""
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Window features per image under ``folder`` (at most ``max_bytes``; ``None``: no limit)."""

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.store = CacheStore(self.folder / FEATURES_FOLDER, max_bytes)
        if max_bytes is not None:
            self.store.evict(max_bytes)  # a smaller limit than the last run's applies at once

    @staticmethod
    def key(image_digest: str, context: Mapping[str, Any]) -> str:
        """The entry key of one image (:func:`pixels_digest`) under one model/method/geometry."""
        return key_of({"format": FORMAT, "image": image_digest, "context": dict(context)})

    def get(self, key: str) -> list[np.ndarray] | None:
        """Each window's ``[gh, gw, D]`` float32 features, or ``None`` (missing or damaged)."""
        payload = self.store.get(key)
        if payload is None:
            return None
        windows = _decode(payload)
        if windows is None:  # checksum fine but not our layout: treat as damaged
            self.store.discard(key)
        return windows

    def put(self, key: str, windows: Sequence[np.ndarray]) -> None:
        """Store each window's features (converted to float32, C order)."""
        self.store.put(key, _encode(windows))

    def report(self) -> dict[str, Any]:
        """Hits, misses, damaged entries, writes, evictions and the size now (JSON-ready)."""
        return self.store.report()


def _encode(windows: Sequence[np.ndarray]) -> bytes:
    arrays = [np.ascontiguousarray(w, dtype=np.float32) for w in windows]
    header = json.dumps({"format": FORMAT, "shapes": [list(a.shape) for a in arrays]}).encode()
    return b"".join([len(header).to_bytes(4, "little"), header, *(a.tobytes() for a in arrays)])


def _decode(payload: bytes) -> list[np.ndarray] | None:
    try:
        size = int.from_bytes(payload[:4], "little")
        header = json.loads(payload[4 : 4 + size])
        shapes = [tuple(int(n) for n in shape) for shape in header["shapes"]]
        if header.get("format") != FORMAT:
            return None
    except (ValueError, KeyError, TypeError):
        return None
    offset = 4 + size
    counts = [int(np.prod(shape)) for shape in shapes]
    if offset + 4 * sum(counts) != len(payload):
        return None
    data = np.frombuffer(payload, dtype=np.float32, offset=offset)
    windows = []
    for shape, count in zip(shapes, counts, strict=True):
        windows.append(data[:count].reshape(shape))
        data = data[count:]
    return windows
