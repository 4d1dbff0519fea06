"""Which model runs and how: one frozen value shared by ``segment``, ``evaluate`` and the engines.

    >>> options = ModelOptions("scclip-tiny", pretrained="random:7", device="cpu")
    >>> segmenter = options.load("vocab/voc21.txt", protocol)

Picklable, so a Ray worker gets the same value and loads its own segmenter from it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scclip_cli.config import DEFAULT_MODEL, DEFAULT_PRETRAINED, MethodConfig, ProtocolConfig
from scclip_cli.errors import UsageError

if TYPE_CHECKING:
    from scclip_cli.model.text_embeddings import QueryEmbeddings
    from scclip_cli.predict.segmenter import Segmenter


@dataclass(frozen=True)
class ModelOptions:
    """The model, its weights, where and in which precision it runs, the method, the batch size."""

    model: str = DEFAULT_MODEL
    """open_clip model name, a model-config JSON, or ``scclip-tiny``."""
    pretrained: str = DEFAULT_PRETRAINED
    """open_clip pretrained tag, a local checkpoint, or ``random[:SEED]``."""
    device: str = "auto"
    precision: str = "auto"
    method: str | MethodConfig = "sc-clip"
    """A method name, or a full :class:`MethodConfig` (ablations, extensions)."""
    batch_size: int | None = None
    """Crops per forward pass; ``None``: :func:`~scclip_cli.predict.segmenter.default_batch_size`
    of the device."""

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")

    @property
    def method_config(self) -> MethodConfig:
        """:attr:`method` as a :class:`MethodConfig` (an unknown name raises ``ConfigError``)."""
        return MethodConfig(name=self.method) if isinstance(self.method, str) else self.method

    def without_gpu(self) -> ModelOptions:
        """These options for a process that has no GPU reserved: ``auto`` becomes ``cpu``."""
        return dataclasses.replace(self, device="cpu") if self.device == "auto" else self

    def load(
        self,
        vocab: str | os.PathLike[str] | Path | list[str] | QueryEmbeddings,
        protocol: ProtocolConfig | None = None,
        *,
        preset: str | None = None,
        protocol_overrides: dict[str, object] | None = None,
        **caching: Any,
    ) -> Segmenter:
        """Load the model and embed ``vocab`` (:meth:`Segmenter.load`: ``protocol`` wins over
        ``preset``, whose values are those of the loaded model's backbone; ``caching``: its cache
        arguments, ``text_cache``, ``cache_dir``, ``feature_cache``)."""
        from scclip_cli.predict.segmenter import Segmenter

        return Segmenter.load(
            vocab if not isinstance(vocab, os.PathLike) else Path(vocab),
            model=self.model,
            pretrained=self.pretrained,
            device=self.device,
            precision=self.precision,
            preset=preset,
            protocol=protocol,
            protocol_overrides=protocol_overrides,
            method=self.method_config,
            batch_size=self.batch_size,
            **caching,
        )
