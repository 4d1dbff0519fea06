"""One run per output folder (per shard): a second run stops at once naming the first; shards of
one count share a folder; a lock of a dead process is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scclip_cli.errors import UsageError
from scclip_cli.runs.out_lock import lock_path, out_folder_lock


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not this one (the holder of a lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def hold(out: Path, pid: int, shard: tuple[int, int] | None = None) -> Path:
    """A lock file as another run writes it."""
    out.mkdir(parents=True, exist_ok=True)
    path = lock_path(out, shard)
    data = {"pid": pid, "host": socket.gethostname(), "shard": list(shard) if shard else None}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_lock_is_held_during_the_run_and_gone_after(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out_folder_lock(out, None):
        held = json.loads(lock_path(out, None).read_text(encoding="utf-8"))
        assert (held["pid"], held["host"], held["shard"]) == (
            os.getpid(),
            socket.gethostname(),
            None,
        )
        (out / "mask.png").write_bytes(b"x")
    assert sorted(p.name for p in out.iterdir()) == ["mask.png"]

    with pytest.raises(RuntimeError), out_folder_lock(out, (1, 2)):
        raise RuntimeError("the run failed")
    assert not lock_path(out, (1, 2)).exists()  # released on errors too


def test_a_folder_created_for_a_run_that_wrote_nothing_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with pytest.raises(UsageError), out_folder_lock(out, None):
        raise UsageError("a bad model name")
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with out_folder_lock(existing, None):
        pass
    assert existing.is_dir()  # not ours to remove


def test_a_second_run_stops_at_once_naming_the_first(
    tmp_path: Path, other_process: subprocess.Popen[bytes]
) -> None:
    out = tmp_path / "out"
    held = hold(out, other_process.pid)
    busy = rf"process {other_process.pid} on .*remove .*\.lock"
    with pytest.raises(UsageError, match=busy), out_folder_lock(out, None):
        pytest.fail("the block must not run")
    assert held.is_file()  # the other run's lock is left alone
    # an unsharded run overlaps every shard, and the reverse
    with pytest.raises(UsageError, match=str(other_process.pid)), out_folder_lock(out, (2, 3)):
        pass
    assert not lock_path(out, (2, 3)).exists()


def test_shards_of_one_count_share_a_folder_and_other_counts_overlap(
    tmp_path: Path, other_process: subprocess.Popen[bytes]
) -> None:
    out = tmp_path / "out"
    hold(out, other_process.pid, (1, 3))
    with out_folder_lock(out, (2, 3)), out_folder_lock(out, (3, 3)):
        assert lock_path(out, (2, 3)).is_file() and lock_path(out, (3, 3)).is_file()
    for shard in [(1, 3), (1, 2), None]:
        with pytest.raises(UsageError, match="shard 1/3"), out_folder_lock(out, shard):
            pass


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    hold(out, dead.pid)
    hold(out, dead.pid, (1, 2))
    with out_folder_lock(out, None):
        assert json.loads(lock_path(out, None).read_text())["pid"] == os.getpid()
    assert not lock_path(out, None).exists()
