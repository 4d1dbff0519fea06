"""The Python API: load a segmenter once, then segment images or arrays.

    >>> from scclip_cli import Segmenter
    >>> seg = Segmenter.load(vocab="vocab/everyday.txt")            # ViT-B/16, OpenAI weights
    >>> result = seg.segment("photo.jpg")
    >>> result.labels.shape, result.class_names[result.labels[0, 0]]

INTERFACE STUB: implemented in the engine work; signatures are fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scclip_cli.config import CalibrationConfig, ProtocolConfig

if TYPE_CHECKING:
    from scclip_cli.model_loading import LoadedClip
    from scclip_cli.text_embeddings import QueryEmbeddings


@dataclass(frozen=True)
class Segmentation:
    """The result for one image, at the image's original (EXIF-applied) size."""

    labels: np.ndarray
    """[H, W] int32 class index per pixel, in 0..K-1."""
    confidence: np.ndarray
    """[H, W] float32 winning class probability (after the area rule), in [0, 1]."""
    class_names: tuple[str, ...]
    """[K] class names; ``labels`` index into it."""


class Segmenter:
    """SC-CLIP (or a baseline method) bound to one model, one vocabulary and one protocol."""

    def __init__(
        self,
        clip: LoadedClip,
        embeddings: QueryEmbeddings,
        protocol: ProtocolConfig | None = None,
        calibration: CalibrationConfig | None = None,
        method: str = "sc-clip",
        batch_size: int = 16,
    ) -> None:
        raise NotImplementedError

    @classmethod
    def load(
        cls,
        vocab: str | Path | list[str] | QueryEmbeddings,
        model: str = "ViT-B-16-quickgelu",
        pretrained: str = "openai",
        device: str = "auto",
        precision: str = "auto",
        protocol: ProtocolConfig | None = None,
        preset: str | None = None,
        calibration: CalibrationConfig | None = None,
        method: str = "sc-clip",
        batch_size: int = 16,
    ) -> Segmenter:
        """Load the model and embed the vocabulary (a .txt/.npz path, or a list of class lines)."""
        raise NotImplementedError

    @property
    def class_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: model, weights, method, every protocol and calibration constant."""
        raise NotImplementedError

    def segment(self, image: np.ndarray | str | Path) -> Segmentation:
        """Segment one image: an ``[H, W, 3] uint8`` RGB array or a path (read with EXIF applied)."""
        raise NotImplementedError

    def segment_many(self, images: Iterable[np.ndarray]) -> Iterator[Segmentation]:
        """Segment ``[H, W, 3] uint8`` arrays in order, batching crops across images."""
        raise NotImplementedError
