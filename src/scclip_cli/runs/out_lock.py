"""One ``scclip segment`` at a time per output folder (per shard): a lock file in ``--out``.

Choice: two runs that would write the same images into one folder do not share the work; the
second stops at once (:class:`~scclip_cli.errors.UsageError`, exit status 2) with a message naming
the process that holds the folder. Sharing by per-image claims would cost a file per image and a
cleanup of claims left by killed runs, for a case (two identical commands) that is a mistake far
more often than a plan; shards are the way to split one folder's work, and they keep working:

- a run takes ``.scclip-run.lock`` (``.scclip-run.shard-I-of-N.lock`` with ``--shard``), created
  with ``O_EXCL`` and holding ``{"pid", "host", "shard"}`` as JSON;
- it then refuses when another live lock in the folder covers some of the same images: any lock
  for an unsharded run, the same shard, or a shard of another count N (the parts then overlap).
  Shards ``1/N ... N/N`` of one count run side by side;
- a lock whose process is dead (same host, no such pid) is stale: it is taken over. A lock of
  another host cannot be checked from here; the message says which file to remove if that run is
  gone;
- the lock is removed when the run ends, also when it fails or is interrupted. When the run created
  the output folder and leaves it empty (an error before any output), the folder goes too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scclip_cli.errors import InputError, UsageError

LOCK_PREFIX = ".scclip-run"
LOCK_SUFFIX = ".lock"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock file."""

    pid: int
    host: str
    shard: tuple[int, int] | None

    def alive(self) -> bool:
        """Whether the holder may still run (a holder on another host is assumed to)."""
        return self.host != socket.gethostname() or process_alive(self.pid)

    def overlaps(self, shard: tuple[int, int] | None) -> bool:
        """Whether a run of ``shard`` would segment some of this holder's images."""
        if self.shard is None or shard is None:
            return True
        return self.shard == shard or self.shard[1] != shard[1]

    def describe(self) -> str:
        part = f", shard {self.shard[0]}/{self.shard[1]}" if self.shard else ""
        return f"process {self.pid} on {self.host}{part}"


def lock_path(out: Path, shard: tuple[int, int] | None) -> Path:
    tag = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return out / f"{LOCK_PREFIX}{tag}{LOCK_SUFFIX}"


def _read_owner(path: Path) -> LockOwner | None:
    """The holder written in ``path``; ``None`` when it is gone or unreadable (half written)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        shard = data.get("shard")
        index_count = (int(shard[0]), int(shard[1])) if shard else None
        return LockOwner(int(data["pid"]), str(data["host"]), index_count)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def out_folder_lock(out: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """Hold ``out`` for one run of ``shard`` (``(I, N)`` or ``None``) while the block runs.

    Raises:
        UsageError: another live run holds the folder for some of the same images.
        InputError: the folder cannot be created or written.
    """
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder {out}: {err.strerror or err}") from None
    path = lock_path(out, shard)
    try:
        _create(path, shard)
        _refuse_overlapping(out, path, shard)
    except BaseException:
        with contextlib.suppress(OSError):
            if _read_owner(path) == _me(shard):
                path.unlink()
        _remove_if_empty(out, created)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        _remove_if_empty(out, created)


def _me(shard: tuple[int, int] | None) -> LockOwner:
    return LockOwner(os.getpid(), socket.gethostname(), shard)


def _create(path: Path, shard: tuple[int, int] | None) -> None:
    """Create the lock file with ``O_EXCL``, taking over a stale one."""
    me = _me(shard)
    text = json.dumps({"pid": me.pid, "host": me.host, "shard": list(shard) if shard else None})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is not None and owner.alive():
                raise _busy(path, owner) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale (or unreadable): the process that wrote it is gone
            continue
        except OSError as err:
            raise InputError(
                f"cannot write to the output folder {path.parent}: {err.strerror or err}"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        return
    raise UsageError(f"cannot take the lock {path}: other runs keep taking it")


def _refuse_overlapping(out: Path, own: Path, shard: tuple[int, int] | None) -> None:
    for other in sorted(out.glob(f"{LOCK_PREFIX}*{LOCK_SUFFIX}")):
        if other == own:
            continue
        owner = _read_owner(other)
        if owner is not None and owner.alive() and owner.overlaps(shard):
            raise _busy(other, owner)


def _busy(path: Path, owner: LockOwner) -> UsageError:
    return UsageError(
        f"{path.parent} is being written by another scclip run ({owner.describe()}); wait for it "
        f"to finish or use another --out (if that run is gone, remove {path})"
    )


def _remove_if_empty(out: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()  # only when empty
