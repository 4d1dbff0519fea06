"""Write files atomically: a reader sees the old file or the complete new one, never a partial one.

Each write goes to a hidden temporary file in the destination's folder (``.{name}.tmp-{pid}-{hex}``,
never mistaken for an output), which is renamed over the destination (:func:`os.replace`) only once
it is complete. On any error the temporary file is removed and the destination is left untouched.
With ``fsync=True`` the data (and the folder entry) are flushed to disk before returning, so the new
file also survives a power cut.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

_MAX_NAME_IN_TEMP = 200  # keep temporary names under the usual 255-byte file-name limit


def temporary_path_for(path: Path) -> Path:
    """A fresh hidden temporary path beside ``path``."""
    name = path.name[:_MAX_NAME_IN_TEMP]
    return path.with_name(f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some systems (Windows)
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` when the block succeeds.

    Creates ``path``'s parent folders. If the block raises (or writes nothing), the temporary file
    is removed, ``path`` is untouched and the exception propagates. Close the file before the block
    ends::

        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            f.write(data)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path_for(path)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "xb") as f:
        f.write(data)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = False
) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8, newlines as given)."""
    atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, fsync: bool = False
) -> None:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept, trailing newline) to ``path`` atomically.

    The object is serialised before anything is written: an unserialisable one leaves no trace.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    atomic_write_text(path, text, fsync=fsync)
