"""The checksummed, size-bounded cache folder: hits, misses, damage, eviction, sharing."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scclip_cli.errors import UsageError
from scclip_cli.files.cache_store import CacheStore, default_cache_dir, key_of, parse_size

KEY_A = key_of({"a": 1})
KEY_B = key_of({"b": 2})
KEY_C = key_of({"c": 3})


def test_hit_and_miss(tmp_path):
    store = CacheStore(tmp_path)
    assert store.get(KEY_A) is None
    store.put(KEY_A, b"payload")
    assert KEY_A in store and store.get(KEY_A) == b"payload"
    assert store.stats.to_dict() | {} == {
        "hits": 1,
        "misses": 1,
        "corrupt": 0,
        "written": 1,
        "evicted": 0,
    }
    assert store.report()["size_bytes"] == store.path_for(KEY_A).stat().st_size


def test_key_ignores_dict_order_but_not_values():
    assert key_of({"x": 1, "y": [1, 2]}) == key_of({"y": [1, 2], "x": 1})
    assert key_of({"x": 1}) != key_of({"x": 2})


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) - 3],  # truncated payload
        lambda data: data[:20],  # truncated header
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit flipped in the payload
        lambda data: b"NOTMAGIC" + data[8:],
        lambda data: b"",
    ],
)
def test_damaged_entry_is_a_miss_and_is_deleted(tmp_path, damage):
    store = CacheStore(tmp_path)
    store.put(KEY_A, b"some payload bytes")
    path = store.path_for(KEY_A)
    path.write_bytes(damage(path.read_bytes()))
    assert store.get(KEY_A) is None
    assert not path.exists()
    assert store.stats.corrupt == 1 and store.stats.misses == 1 and store.stats.hits == 0
    store.put(KEY_A, b"again")
    assert store.get(KEY_A) == b"again"


def test_eviction_removes_least_recently_used(tmp_path):
    store = CacheStore(tmp_path)
    for key, when in ((KEY_A, 100), (KEY_B, 200)):
        store.put(key, b"x" * 1000)
        os.utime(store.path_for(key), (when, when))
    entry = store.path_for(KEY_A).stat().st_size
    store.get(KEY_A)  # A is now the most recently used
    bounded = CacheStore(tmp_path, max_bytes=2 * entry)
    bounded.put(KEY_C, b"x" * 1000)  # three entries over a two-entry limit: B goes
    assert KEY_A in bounded and KEY_C in bounded and KEY_B not in bounded
    assert bounded.stats.evicted == 1
    assert bounded.size() <= 2 * entry


def test_an_entry_larger_than_the_limit_evicts_the_others_first(tmp_path):
    store = CacheStore(tmp_path, max_bytes=10)
    store.put(KEY_A, b"x" * 100)
    store.put(KEY_B, b"y" * 100)
    assert KEY_A not in store and store.size() <= 10 + 200  # at most the one just written
    assert sum(1 for _ in tmp_path.rglob("*.bin")) <= 1


def test_unwritable_folder_never_stops_the_caller(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = CacheStore(blocker / "cache")
    store.put(KEY_A, b"payload")  # no error
    assert store.get(KEY_A) is None


def test_threads_share_one_folder(tmp_path):
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            store = CacheStore(tmp_path, max_bytes=20_000)
            for i in range(60):
                key = key_of({"i": (i * 7 + seed) % 25})
                payload = key.encode() * 40
                found = store.get(key)
                assert found in (None, payload)
                store.put(key, payload)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not list(tmp_path.rglob(".*tmp*"))  # no temporary file left behind


WRITER = """
import sys
from scclip_cli.files.cache_store import CacheStore, key_of
store = CacheStore(sys.argv[1], max_bytes=30_000)
bad = 0
for i in range(150):
    key = key_of({"i": i % 30})
    payload = key.encode() * 50
    found = store.get(key)
    if found not in (None, payload):
        bad += 1
    store.put(key, payload)
print(bad)
"""


def test_two_processes_share_one_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert outputs == ["0", "0"]  # never a wrong payload
    assert CacheStore(tmp_path).size() <= 30_000 + 4_000


@pytest.mark.parametrize(
    ("text", "size"),
    [("20GB", 20 * 10**9), ("500 mb", 500 * 10**6), ("1.5GiB", 3 * 2**29), ("1000", 1000)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "20XB", "-1GB", "1e3"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "scclip"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == Path.home() / ".cache" / "scclip"
