"""Dense window features of images, cached on disk so a rerun with another vocabulary or other
post-processing settings skips the vision model.

One entry per image: the L2-normalised dense features of each of its sliding windows, in window
order, as float32 (exactly what the scores are computed from, so labels from cached features are
the same bits as labels from a fresh forward pass). The entry's key is made of the image and a
context: the model identity, its dtype, the method and calibration, and the window geometry. The
image is known by one of two digests:

* an image file's bytes (:meth:`FeatureCache.file_key`), with the decoder's version: a rerun
  over the same files finds each entry before decoding anything, and the entry's image sizes
  (:class:`ImageSizes`) are all the segmenter then needs;
* the resized, normalised pixels the windows are cut from (:meth:`FeatureCache.key`), for arrays
  given to the Python API.

Storage, checksums, atomic writes, sharing between runs and the size limit are
:class:`~scclip_cli.files.cache_store.CacheStore`'s.

Payload layout::

    header length (4 bytes, little-endian)
    | header JSON {"format", "shapes": [[gh, gw, D], ...], "image": ImageSizes fields or null}
    | float32 data of every window, C order, one after another
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scclip_cli.files.cache_store import CacheStore, key_of

FORMAT = "scclip-window-features/1"
FEATURES_FOLDER = "features"
FILE_READ_BUFFER = 1 << 20
"""Bytes read at a time while hashing an image file."""


def pixels_digest(pixels: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes (C order)."""
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """sha256 of a file's bytes, or ``None`` when it cannot be read (the decoder then says why)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(FILE_READ_BUFFER):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageSizes:
    """The sizes of the image an entry's windows were cut from: with them, features found by a
    file's bytes can be post-processed without decoding the file."""

    height: int
    """Original height (EXIF orientation applied)."""
    width: int
    """Original width."""
    pixels: tuple[int, int]
    """``(h, w)`` of the resized (and padded) pixels the windows cover."""
    content: tuple[int, int] | None
    """``(h, w)`` of the resized image inside padded pixels; ``None``: no padding."""

    @classmethod
    def from_json(cls, data: Any) -> ImageSizes | None:
        """The sizes in a header, or ``None`` when they are missing or malformed."""
        try:
            content = data["content"]
            sizes = cls(
                int(data["height"]),
                int(data["width"]),
                _pair(data["pixels"]),
                None if content is None else _pair(content),
            )
        except (KeyError, TypeError, ValueError):
            return None
        numbers = [sizes.height, sizes.width, *sizes.pixels, *(sizes.content or (1, 1))]
        return sizes if min(numbers) > 0 else None


def _pair(value: Any) -> tuple[int, int]:
    first, second = value  # ValueError / TypeError when not two items
    return int(first), int(second)


@dataclass(frozen=True)
class FeatureEntry:
    """One image's cached windows and, when stored with them, its sizes."""

    windows: list[np.ndarray]
    """Each window's ``[gh, gw, D]`` float32 features, in window order (read-only views)."""
    sizes: ImageSizes | None


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

    @staticmethod
    def file_key(digest: str, decoder: str, context: Mapping[str, Any]) -> str:
        """The entry key of an image file (:func:`file_digest` of its bytes) as ``decoder`` (what
        turns the bytes into pixels, with its version) reads it, under one model/method/geometry."""
        return key_of(
            {"format": FORMAT, "file": digest, "decoder": decoder, "context": dict(context)}
        )

    def get(self, key: str) -> list[np.ndarray] | None:
        """Each window's ``[gh, gw, D]`` float32 features, or ``None`` (missing or damaged)."""
        entry = self.get_entry(key)
        return None if entry is None else entry.windows

    def get_entry(self, key: str) -> FeatureEntry | None:
        """The windows stored under ``key`` with the image's sizes when stored, or ``None``
        (missing or damaged)."""
        payload = self.store.get(key)
        if payload is None:
            return None
        entry = _decode(payload)
        if entry is None:  # checksum fine but not our layout: treat as damaged
            self.store.discard(key)
        return entry

    def put(self, key: str, windows: Sequence[np.ndarray], sizes: ImageSizes | None = None) -> None:
        """Store each window's features (converted to float32, C order), and the image's sizes."""
        self.store.put(key, _encode(windows, sizes))

    def report(self) -> dict[str, Any]:
        """Hits, misses, damaged entries, writes, evictions and the size now (JSON-ready)."""
        return self.store.report()


def _encode(windows: Sequence[np.ndarray], sizes: ImageSizes | None) -> bytes:
    arrays = [np.ascontiguousarray(w, dtype=np.float32) for w in windows]
    header = json.dumps(
        {
            "format": FORMAT,
            "shapes": [list(a.shape) for a in arrays],
            "image": None if sizes is None else asdict(sizes),
        }
    ).encode()
    return b"".join([len(header).to_bytes(4, "little"), header, *(a.tobytes() for a in arrays)])


def _decode(payload: bytes) -> FeatureEntry | None:
    try:
        size = int.from_bytes(payload[:4], "little")
        header = json.loads(payload[4 : 4 + size])
        shapes = [tuple(int(n) for n in shape) for shape in header["shapes"]]
        if header.get("format") != FORMAT:
            return None
        image = header.get("image")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    sizes = None if image is None else ImageSizes.from_json(image)
    if image is not None and sizes is None:
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
    return FeatureEntry(windows, sizes)
