"""Cache options of ``segment`` and ``eval`` (``Annotated`` aliases), and the value they make.

Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scclip_cli.errors import UsageError

if TYPE_CHECKING:
    from scclip_cli.runs.caching import CacheOptions

CACHE_PANEL = "Caches"

CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where text embeddings are cached (default $XDG_CACHE_HOME/scclip, i.e. "
        "~/.cache/scclip): a rerun with the same model, vocabulary and templates skips the "
        "text model",
        rich_help_panel=CACHE_PANEL,
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Neither read nor write cached text embeddings",
        rich_help_panel=CACHE_PANEL,
    ),
]
FeatureCacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--feature-cache",
        metavar="DIR",
        help="Cache each image's window features in DIR: a rerun with another vocabulary, "
        "threshold, logit scale or PAMR setting (same model, method and window geometry) skips "
        "the vision model; with an .npz vocabulary and every image cached, no model loads",
        rich_help_panel=CACHE_PANEL,
    ),
]
FeatureCacheSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--feature-cache-size",
        metavar="SIZE",
        help="Bound the feature cache (e.g. 20GB, 500MB): least recently used entries are "
        "evicted beyond it (default: no bound)",
        rich_help_panel=CACHE_PANEL,
    ),
]


def cache_options_from_cli(
    *,
    cache_dir: Path | None,
    no_cache: bool,
    feature_cache: Path | None,
    feature_cache_size: str | None,
    engine_is_local: bool,
) -> CacheOptions:
    """The run's :class:`~scclip_cli.runs.caching.CacheOptions` (checked before any model loads).

    Raises:
        UsageError: cache options with the Ray engine, or a size without a feature cache.
    """
    from scclip_cli.runs.caching import CacheOptions

    if not engine_is_local and (feature_cache is not None or feature_cache_size is not None):
        raise UsageError("--feature-cache works with the local engine only (drop --engine ray)")
    if not engine_is_local and (cache_dir is not None or no_cache):
        raise UsageError("--cache-dir and --no-cache work with the local engine only")
    return CacheOptions(
        text=not no_cache,
        folder=cache_dir,
        features=feature_cache,
        features_size=feature_cache_size,
    )
