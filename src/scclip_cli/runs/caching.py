"""What a run caches, as one value: text embeddings in the user's cache folder, and (opt-in) each
image's window features in a feature-cache folder.

    >>> from scclip_cli.runs.caching import CacheOptions
    >>> segment(["photos/"], "vocab.npz", "masks/", caching=CacheOptions(features="feat-cache/"))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scclip_cli.errors import UsageError

if TYPE_CHECKING:
    from scclip_cli.files.feature_cache import FeatureCache


@dataclass(frozen=True)
class CacheOptions:
    """How a run caches (all defaults: text embeddings cached, no feature cache)."""

    text: bool = True
    """Cache a class list's embeddings under :attr:`folder` (``--no-cache`` turns it off)."""
    folder: str | os.PathLike[str] | None = None
    """The user's cache folder (``--cache-dir``); default ``$XDG_CACHE_HOME/scclip``."""
    features: str | os.PathLike[str] | None = None
    """The feature-cache folder (``--feature-cache``); ``None``: window features not cached."""
    features_size: str | int | None = None
    """Size limit of the feature cache (``--feature-cache-size``, e.g. ``20GB``): least recently
    used entries are evicted beyond it. ``None``: no limit."""

    def __post_init__(self) -> None:
        if self.features_size is not None and self.features is None:
            raise UsageError("--feature-cache-size needs --feature-cache DIR")
        if self.features_size is not None:
            from scclip_cli.files.cache_store import parse_size

            parse_size(self.features_size)  # refused here, before the model loads
        if self.features is not None and Path(self.features).is_file():
            raise UsageError(f"--feature-cache {os.fspath(self.features)} is a file, not a folder")

    def describe(self) -> dict[str, Any]:
        """What ``summary.json`` and the eval JSON record: whether text embeddings are cached, and
        where (``None``: the default folder). The feature cache records itself after the run."""
        return {
            "text_embeddings": self.text,
            "cache_dir": None if self.folder is None else os.fspath(self.folder),
        }

    def open_features(self) -> FeatureCache | None:
        """The feature cache, or ``None`` when not asked for."""
        if self.features is None:
            return None
        from scclip_cli.files.cache_store import parse_size
        from scclip_cli.files.feature_cache import FeatureCache

        size = None if self.features_size is None else parse_size(self.features_size)
        return FeatureCache(self.features, size)

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`~scclip_cli.predict.segmenter.Segmenter.load`."""
        return {
            "text_cache": self.text,
            "cache_dir": None if self.folder is None else Path(self.folder),
            "feature_cache": self.open_features(),
        }


def describe_feature_cache(report: dict[str, Any]) -> str:
    """One line for the user: ``feature cache: 3 hits, 1 miss, 12.5 MB in DIR``."""
    misses = report["misses"]
    text = (
        f"feature cache: {report['hits']} hits, {misses} {'miss' if misses == 1 else 'misses'}, "
        f"{report['size_bytes'] / 1e6:.1f} MB in {report['dir']}"
    )
    if report.get("corrupt"):
        text += f" ({report['corrupt']} damaged entries recomputed)"
    if report.get("evicted"):
        text += f" ({report['evicted']} evicted)"
    return text
