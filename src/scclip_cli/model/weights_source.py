"""Where a pretrained tag's weights come from, whether they are cached, and whether that host answers.

open_clip downloads a tag's weights from the Hugging Face Hub (or, for a few tags, from a plain
URL). Without a network, ``huggingface_hub`` retries each candidate file with growing back-off
before it gives up, so a missing-weights error would come long after the command started. Before
a download, :func:`host_reachable` makes one short TCP connection to the host (or to the proxy
that would carry the request); when it fails, cached weights are used as they are and missing
ones are reported at once. ``HF_HUB_OFFLINE=1`` skips the probe: the Hub's client then reads the
cache only, which is already immediate.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROBE_TIMEOUT_SECONDS = 3.0
"""How long the connection probe (name lookup and TCP connect) may take: long enough for a slow
link to answer, short next to a download."""
HF_BIN_NAME = "open_clip_pytorch_model.bin"
"""open_clip's default file name in a Hub repository (a trailing ``/`` in the tag's ``hf_hub``)."""
HF_SAFETENSORS_NAME = "open_clip_model.safetensors"
"""The safetensors file open_clip looks for first, instead of :data:`HF_BIN_NAME`."""
URL_CACHE_DIR = Path("~/.cache/clip")
"""Where open_clip keeps weights downloaded from a plain URL when no cache folder is given."""


@dataclass(frozen=True)
class WeightsSource:
    """Where one tag's weights are downloaded from and where they would be cached."""

    url: str
    """The URL the download starts at (the Hub's endpoint or the weights' own URL)."""
    hf_repo: str | None = None
    """The Hub repository, when the weights come from the Hub."""
    hf_filenames: tuple[str, ...] = ()
    """Files of ``hf_repo`` open_clip tries, in its order (safetensors first)."""
    url_target: Path | None = None
    """The cached copy of a URL download."""


def offline_mode() -> bool:
    """Whether the Hugging Face client was told not to use the network (``HF_HUB_OFFLINE``)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)


def hf_candidate_files(filename: str) -> tuple[str, ...]:
    """The files open_clip tries for a Hub file name: its safetensors alternative, then itself."""
    if filename == HF_BIN_NAME:
        return (HF_SAFETENSORS_NAME, filename)
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors", filename)
    return (filename,)


def weights_source(cfg: dict[str, Any], cache_dir: str | None) -> WeightsSource | None:
    """Where open_clip's ``download_pretrained(cfg, cache_dir=...)`` would fetch from.

    ``None`` when it would not use the network (a ``file`` entry, or no location at all). The Hub
    is preferred when the tag names a repository, as open_clip does.
    """
    if cfg.get("file"):
        return None
    hub = str(cfg.get("hf_hub") or "")
    if hub:
        from huggingface_hub import constants

        repo, filename = os.path.split(hub)
        return WeightsSource(
            url=constants.ENDPOINT,
            hf_repo=repo,
            hf_filenames=hf_candidate_files(filename or HF_BIN_NAME),
        )
    url = str(cfg.get("url") or "")
    if url:
        folder = Path(cache_dir) if cache_dir else URL_CACHE_DIR.expanduser()
        return WeightsSource(url=url, url_target=folder / os.path.basename(urlsplit(url).path))
    return None


def cached_weights(source: WeightsSource, cache_dir: str | None) -> Path | None:
    """The cached copy of the weights, found without the network, or ``None``."""
    if source.url_target is not None:
        return source.url_target if source.url_target.is_file() else None
    if source.hf_repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in source.hf_filenames:
        found = try_to_load_from_cache(source.hf_repo, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    return None


def probe_address(url: str) -> tuple[str, int]:
    """``(host, port)`` a request to ``url`` connects to first: its proxy's, if one applies."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        default = 443 if proxy_parts.scheme == "https" else 80
        return proxy_parts.hostname or "", proxy_parts.port or default
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to ``url``'s host (or proxy) opens within ``timeout`` seconds.

    The attempt runs on a daemon thread, so a name lookup that hangs (no resolver answering)
    cannot hold the caller past ``timeout`` either.
    """
    host, port = probe_address(url)
    if not host:
        return False
    answer: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=attempt, name="scclip-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])
