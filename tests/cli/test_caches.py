"""``--feature-cache``, ``--feature-cache-size``, ``--cache-dir`` and ``--no-cache`` end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main
from scclip_cli.files import image_io
from scclip_cli.model import loading
from support.torch_threads import torch_threads

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "64", "--crop", "64", "--stride", "32"]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((70 + 5 * i, 50), Image.Resampling.BILINEAR)
        image.save(folder / f"p{i}.png")
    return folder


def _vocab(tmp_path: Path, name: str, lines: str) -> Path:
    path = tmp_path / f"{name}.txt"
    path.write_text(lines)
    out = tmp_path / f"{name}.npz"
    assert main(["vocab", str(path), "--out", str(out), *TINY]) == 0
    return out


def _masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("p*.png"))}


def test_segment_with_feature_cache(tmp_path, photos, monkeypatch):
    first = _vocab(tmp_path, "a", "background\ncat\ndog\n")
    second = _vocab(tmp_path, "b", "background\ntree\ncar\nsky\n")
    cache = tmp_path / "features"
    segment = ["segment", str(photos), *TINY, *FAST, "--quiet"]
    assert main([*segment, "--vocab", str(first), "--out", str(tmp_path / "plain")]) == 0
    cold_args = ["--vocab", str(first), "--out", str(tmp_path / "cold")]
    assert main([*segment, *cold_args, "--feature-cache", str(cache)]) == 0
    cold = json.loads((tmp_path / "cold/summary.json").read_text())["feature_cache"]
    assert (cold["hits"], cold["misses"], cold["written"]) == (0, 3, 3)
    assert _masks(tmp_path / "cold") == _masks(tmp_path / "plain")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although every image was cached")

    monkeypatch.setattr(loading, "load_clip", no_model)
    monkeypatch.setattr(image_io, "read_image_rgb", _no_decoding)
    for vocab, out in ((first, "warm"), (second, "other-vocab")):
        args = ["--vocab", str(vocab), "--out", str(tmp_path / out), "--feature-cache", str(cache)]
        assert main([*segment, *args, "--prob-threshold", "0.2"]) == 0
        warm = json.loads((tmp_path / out / "summary.json").read_text())["feature_cache"]
        assert (warm["hits"], warm["misses"]) == (3, 0)
        assert warm["size_bytes"] == cold["size_bytes"]
    monkeypatch.undo()
    args = ["--vocab", str(second), "--out", str(tmp_path / "b-plain"), "--prob-threshold", "0.2"]
    assert main([*segment, *args]) == 0
    assert _masks(tmp_path / "other-vocab") == _masks(tmp_path / "b-plain")
    # the records of images never decoded (sizes from the cache) are those of a plain run
    assert _records(tmp_path / "other-vocab") == _records(tmp_path / "b-plain")


def _records(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("p*.json"))}


def _no_decoding(*args, **kwargs):
    raise AssertionError("an image was decoded although its features were cached")


def test_feature_cache_size_bounds_the_folder(tmp_path, photos):
    vocab = _vocab(tmp_path, "a", "background\ncat\n")
    cache = tmp_path / "features"
    base = ["segment", str(photos), *TINY, *FAST, "--quiet", "--vocab", str(vocab)]
    assert main([*base, "--out", str(tmp_path / "o1"), "--feature-cache", str(cache)]) == 0
    entry = max(p.stat().st_size for p in cache.rglob("*.bin"))
    limit = str(2 * entry)
    args = ["--out", str(tmp_path / "o2"), "--feature-cache", str(cache), "--overwrite"]
    assert main([*base, *args, "--feature-cache-size", limit]) == 0
    report = json.loads((tmp_path / "o2/summary.json").read_text())["feature_cache"]
    assert report["size_bytes"] <= 2 * entry and len(list(cache.rglob("*.bin"))) <= 2
    assert report["max_bytes"] == 2 * entry


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--feature-cache-size", "1GB"], "needs --feature-cache"),
        (["--feature-cache", "{tmp}/f", "--feature-cache-size", "lots"], "cannot read the size"),
        (["--feature-cache", "{tmp}/f", "--engine", "ray"], "local engine"),
    ],
)
def test_bad_cache_options_are_usage_errors(tmp_path, photos, capsys, extra, message):
    vocab = tmp_path / "v.txt"
    vocab.write_text("background\ncat\n")
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    base = ["segment", str(photos), *TINY, "--vocab", str(vocab), "--out", str(tmp_path / "o")]
    assert main([*base, *extra]) == 2
    assert message in capsys.readouterr().err


def test_text_embeddings_cached_unless_no_cache(tmp_path, photos, user_cache_dir):
    vocab = tmp_path / "v.txt"
    vocab.write_text("background\ncat\n")
    base = ["segment", str(photos), *TINY, *FAST, "--quiet", "--vocab", str(vocab)]
    assert main([*base, "--out", str(tmp_path / "o1"), "--no-cache"]) == 0
    assert not user_cache_dir.exists()
    assert main([*base, "--out", str(tmp_path / "o2")]) == 0
    assert len(list((user_cache_dir / "text").rglob("*.bin"))) == 1
    elsewhere = tmp_path / "elsewhere"
    assert main([*base, "--out", str(tmp_path / "o3"), "--cache-dir", str(elsewhere)]) == 0
    assert len(list((elsewhere / "text").rglob("*.bin"))) == 1
    assert _masks(tmp_path / "o1") == _masks(tmp_path / "o2") == _masks(tmp_path / "o3")


def test_eval_images_with_feature_cache(tmp_path, photos, monkeypatch):
    vocab = _vocab(tmp_path, "a", "background\ncat\ndog\n")
    gt = tmp_path / "gt"
    gt.mkdir()
    for image in photos.glob("*.png"):
        w, h = Image.open(image).size
        Image.fromarray(np.ones((h, w), np.uint8)).save(gt / image.name)
    cache = tmp_path / "features"
    base = ["eval", "--images", str(photos), "--gt", str(gt), "--vocab", str(vocab), *TINY, *FAST]
    reports = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.json"
        assert main([*base, "--feature-cache", str(cache), "--json", str(out), "--quiet"]) == 0
        reports.append(json.loads(out.read_text()))
        monkeypatch.setattr(image_io, "read_image_rgb", _no_decoding)  # the second run hits
    assert reports[0]["mIoU"] == reports[1]["mIoU"]
    first, second = (r["config"]["feature_cache"] for r in reports)
    assert (first["misses"], second["hits"], second["misses"]) == (3, 3, 0)
