"""Missing weights without a network fail at once; cached ones load; online downloads go ahead."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import open_clip.pretrained
import pytest

from scclip_cli.errors import ModelLoadError
from scclip_cli.model import weights_source
from scclip_cli.model.loading import load_clip

VIT_B_16_OPENAI_REPO = "timm/vit_base_patch16_clip_224.openai"


@pytest.fixture
def no_network(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``offline_hub`` (sockets refuse, empty cache) without ``HF_HUB_OFFLINE``: a user whose
    machine has no network but who never told the Hub client so. Returns the empty HF home."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return offline_hub


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replaces open_clip's downloader: records each call and fails it with a known message."""
    calls: list[dict] = []

    def download(cfg: dict, **kwargs: object) -> str:
        calls.append(cfg)
        raise RuntimeError("download attempted")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", download)
    return calls


def test_missing_weights_without_network_fail_at_once_and_say_what_to_do(no_network, downloads):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_clip("ViT-B-16", "openai", device="cpu")
    assert time.monotonic() - start < 10  # generous: the retry loop took about a minute
    message = str(info.value)
    assert "huggingface.co cannot be reached" in message
    assert "--pretrained /path/to/weights.pt" in message and "Hugging Face cache" in message
    assert downloads == []  # no download (and so none of its retries) was attempted


def test_cached_weights_are_used_without_network(no_network, downloads):
    snapshot = "0123456789abcdef0123456789abcdef01234567"
    repo = no_network / "hub" / ("models--" + VIT_B_16_OPENAI_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot)
    weights = repo / "snapshots" / snapshot / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not read weights file") as info:
        load_clip("ViT-B-16", "openai", device="cpu")
    assert str(weights) in str(info.value)  # the cached file was read, not downloaded
    assert downloads == []


def test_a_reachable_host_downloads_as_before(no_network, downloads, monkeypatch):
    monkeypatch.setattr(weights_source, "host_reachable", lambda url, timeout=3.0: True)
    with pytest.raises(ModelLoadError, match="download attempted"):
        load_clip("ViT-B-16", "openai", device="cpu")
    assert len(downloads) == 1 and downloads[0]["hf_hub"].startswith(VIT_B_16_OPENAI_REPO)


def test_hf_hub_offline_skips_the_probe(offline_hub, downloads, monkeypatch):
    def probe(url: str, timeout: float = 3.0) -> bool:
        raise AssertionError("probed although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(weights_source, "host_reachable", probe)
    with pytest.raises(ModelLoadError, match="download attempted"):
        load_clip("ViT-B-16", "openai", device="cpu")
    assert len(downloads) == 1  # the Hub client itself reads the cache only


def test_host_reachable_opens_a_connection_only_where_one_listens():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert weights_source.host_reachable(f"http://127.0.0.1:{port}/weights.bin", timeout=5)
    assert not weights_source.host_reachable(f"http://127.0.0.1:{port}/weights.bin", timeout=5)


def test_probe_goes_to_the_proxy_unless_the_host_bypasses_it(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert weights_source.probe_address("https://huggingface.co/x") == ("huggingface.co", 443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert weights_source.probe_address("https://huggingface.co/x") == ("proxy.example", 3128)
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    assert weights_source.probe_address("https://huggingface.co/x") == ("huggingface.co", 443)


def test_weights_source_follows_open_clips_choice(tmp_path):
    hub = weights_source.weights_source({"hf_hub": "org/repo/", "url": "https://x/y.pt"}, None)
    assert hub is not None and hub.hf_repo == "org/repo"
    assert hub.hf_filenames == ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    url = weights_source.weights_source({"url": "https://host.example/a/b.pt"}, str(tmp_path))
    assert url is not None and url.url_target == tmp_path / "b.pt"
    assert weights_source.cached_weights(url, str(tmp_path)) is None
    (tmp_path / "b.pt").write_bytes(b"x")
    assert weights_source.cached_weights(url, str(tmp_path)) == tmp_path / "b.pt"
    assert weights_source.weights_source({"file": "/w.pt"}, None) is None
