"""A folder of checksummed cache entries, shared safely by concurrent runs, bounded by size (LRU).

Each entry is one file ``<folder>/<key[:2]>/<key>.bin``::

    MAGIC (8 bytes) | payload length (8 bytes, little-endian) | blake2b-256 of payload (32 bytes)
    | payload

* Writes are atomic (:mod:`scclip_cli.files.atomic`): a reader sees no entry or a whole one, so two
  runs can share a folder; when both compute the same entry, the last rename wins (same bytes).
* A read checks the magic, the length and the checksum: a corrupt or truncated entry is deleted
  and reported as a miss (never returned, never an error), so the caller recomputes it.
* Recency is the file's modification time, set on every hit; :meth:`CacheStore.evict` deletes the
  least recently used entries until the folder fits its size limit. An entry deleted by another
  run between listing and reading is a miss.

Where the user's cache lives: :func:`default_cache_dir` (``$XDG_CACHE_HOME/scclip``, else
``~/.cache/scclip``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scclip_cli.errors import UsageError
from scclip_cli.files.atomic import atomic_path

MAGIC = b"SCCLIPC1"
_HEADER = len(MAGIC) + 8 + 32
_SUFFIX = ".bin"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})
_UNITS.update({"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12})


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scclip`` when that variable is set (and absolute), else
    ``~/.cache/scclip`` (the XDG base-directory rule)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "scclip"


def parse_size(text: str | int) -> int:
    """Bytes in a size such as ``20GB``, ``500 MB``, ``1.5GiB`` or ``1000000`` (decimal units
    unless ``iB``)."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"a cache size cannot be negative: {text}")
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise UsageError(f"cannot read the size {text!r}; write it like 20GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def key_of(parts: Any) -> str:
    """A hex key (sha256) of a JSON-serialisable description (keys sorted, so order is free)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class CacheStats:
    """What a store saw during one run."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    """Entries found damaged (deleted; also counted as misses)."""
    written: int = 0
    evicted: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


class CacheStore:
    """Checksummed entries under ``folder``, at most ``max_bytes`` in all (``None``: no limit).

    Safe to use from several threads and processes at once.
    """

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.folder = Path(folder).expanduser()
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._lock = threading.Lock()

    def path_for(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{8,128}", key):
            raise ValueError(f"not a cache key: {key!r}")  # a bug, never user input
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def __contains__(self, key: str) -> bool:
        """Whether an entry exists (unverified: :meth:`get` may still find it damaged)."""
        return self.path_for(key).is_file()

    def get(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or ``None`` (missing or damaged: then deleted)."""
        path = self.path_for(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            self._count("misses")
            return None
        payload = _checked_payload(data)
        if payload is None:
            with suppress(OSError):
                path.unlink()
            self._count("corrupt")
            self._count("misses")
            return None
        with suppress(OSError):
            os.utime(path)  # most recently used
        self._count("hits")
        return payload

    def discard(self, key: str) -> None:
        """Delete an entry :meth:`get` returned but the caller found unusable: that read counts as
        a damaged entry and a miss instead of a hit."""
        with suppress(OSError):
            self.path_for(key).unlink()
        with self._lock:
            self.stats.hits -= 1
            self.stats.misses += 1
            self.stats.corrupt += 1

    def put(self, key: str, payload: bytes) -> None:
        """Store ``payload`` under ``key`` atomically, then evict down to the size limit.

        A write that fails (disk full, read-only folder) is skipped: a cache never stops a run.
        """
        digest = hashlib.blake2b(payload, digest_size=32).digest()
        header = MAGIC + len(payload).to_bytes(8, "little") + digest
        try:
            with atomic_path(self.path_for(key)) as tmp, open(tmp, "xb") as handle:
                handle.write(header)
                handle.write(payload)
        except OSError:
            return
        self._count("written")
        if self.max_bytes is not None:
            self.evict(self.max_bytes, keep=key)

    def entries(self) -> list[tuple[float, int, Path]]:
        """``(modification time, size, path)`` of every entry, oldest first."""
        found = []
        for path in self.folder.glob(f"*/*{_SUFFIX}"):
            with suppress(OSError):
                info = path.stat()
                found.append((info.st_mtime, info.st_size, path))
        return sorted(found)

    def size(self) -> int:
        """Bytes in all entries now."""
        return sum(size for _, size, _ in self.entries())

    def evict(self, max_bytes: int, keep: str | None = None) -> None:
        """Delete least recently used entries until at most ``max_bytes`` remain (never ``keep``,
        the entry just written, unless it alone is over the limit)."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        kept = self.path_for(keep) if keep else None
        for _, size, path in [e for e in entries if e[2] != kept] + [
            e for e in entries if e[2] == kept
        ]:
            if total <= max_bytes:
                break
            with suppress(OSError):
                path.unlink()
                self._count("evicted")
            total -= size

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def report(self) -> dict[str, Any]:
        """JSON-ready: the folder, the limit, this run's counts and the size now."""
        return {
            "dir": str(self.folder),
            "max_bytes": self.max_bytes,
            **self.stats.to_dict(),
            "size_bytes": self.size(),
        }


def _checked_payload(data: bytes) -> bytes | None:
    if len(data) < _HEADER or not data.startswith(MAGIC):
        return None
    length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    payload = data[_HEADER:]
    if len(payload) != length:
        return None
    if hashlib.blake2b(payload, digest_size=32).digest() != data[len(MAGIC) + 8 : _HEADER]:
        return None
    return payload
