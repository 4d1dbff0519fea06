"""Shared fixtures: the golden data folder, the tiny seeded model, and a network-free Hub."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "data" / "golden"

# Runs cache text embeddings in the user's cache folder by default: never the real one in tests
# (set at import, before any session fixture or child process; each test then gets its own).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="scclip-test-cache-")


@pytest.fixture(autouse=True)
def user_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty ``$XDG_CACHE_HOME`` of this test's own; returns the scclip cache folder in it."""
    home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "scclip"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """``tests/data/golden``: the reference outputs (see its README.md)."""
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def tiny_clip():
    """The golden tiny model: ``scclip-tiny`` with recipe weights (seed 7), CPU, float32.

    Shared by the whole session: tests must not change its weights (or must restore them).
    """
    from scclip_cli.model.loading import load_clip

    return load_clip("scclip-tiny", "random:7", device="cpu")


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network and an empty Hugging Face cache: a download attempt fails fast, offline.

    Sets ``HF_HUB_OFFLINE`` (and huggingface_hub's already-read constants), points the cache at an
    empty folder, and makes every socket connection fail. Returns the empty cache folder.
    """
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-home"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache / "hub"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return cache
