"""Window features on disk: round trip, keys, damaged layouts."""

import numpy as np

from scclip_cli.files.feature_cache import FeatureCache, pixels_digest


def _windows(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2, 3, 8)).astype(np.float32) for _ in range(3)]


def test_round_trip_is_exact(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache.key(pixels_digest(np.zeros((3, 4, 5), np.float32)), {"model": "m"})
    windows = _windows()
    cache.put(key, windows)
    found = FeatureCache(tmp_path).get(key)
    assert found is not None and len(found) == 3
    for a, b in zip(found, windows, strict=True):
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes()


def test_keys_depend_on_image_and_context():
    a = np.zeros((3, 4, 5), np.float32)
    b = a.copy()
    b[0, 0, 0] = 1e-7
    assert pixels_digest(a) != pixels_digest(b)
    assert pixels_digest(a) != pixels_digest(a.reshape(3, 5, 4))
    digest = pixels_digest(a)
    assert FeatureCache.key(digest, {"crop": 224}) != FeatureCache.key(digest, {"crop": 336})


def test_payload_with_a_good_checksum_but_a_bad_layout_is_a_miss(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache.key("0" * 64, {})
    cache.store.put(key, b"\x05\x00\x00\x00{bad}")
    assert cache.get(key) is None
    assert key not in cache.store
    report = cache.report()
    assert (report["hits"], report["misses"], report["corrupt"]) == (0, 1, 1)


def test_image_sizes_travel_with_the_windows(tmp_path):
    from scclip_cli.files.feature_cache import ImageSizes

    cache = FeatureCache(tmp_path)
    sizes = ImageSizes(480, 6000, (14, 168), (11, 168))
    cache.put("ab" * 32, _windows(), sizes)
    cache.put("cd" * 32, _windows())
    again = FeatureCache(tmp_path)
    entry = again.get_entry("ab" * 32)
    assert entry is not None and entry.sizes == sizes and len(entry.windows) == 3
    entry = again.get_entry("cd" * 32)
    assert entry is not None and entry.sizes is None


def test_file_keys_depend_on_the_bytes_the_decoder_and_the_context(tmp_path):
    from scclip_cli.files.feature_cache import file_digest

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"\x89PNG one")
    b.write_bytes(b"\x89PNG two")
    assert file_digest(a) != file_digest(b)
    assert file_digest(tmp_path / "missing.png") is None
    digest = file_digest(a)
    assert digest is not None
    key = FeatureCache.file_key(digest, "pillow 1", {"crop": 224})
    assert key != FeatureCache.file_key(digest, "pillow 2", {"crop": 224})
    assert key != FeatureCache.file_key(digest, "pillow 1", {"crop": 336})
    assert key != FeatureCache.key(digest, {"crop": 224})  # never a pixel digest's entry


def test_a_header_with_malformed_sizes_is_damaged(tmp_path):
    import json

    cache = FeatureCache(tmp_path)
    for n, image in enumerate(
        [
            {"height": 4},
            {"height": 4, "width": 5, "pixels": [2], "content": None},
            [1, 2],
            7,
            {"height": 0, "width": 5, "pixels": [2, 3], "content": None},
        ]
    ):
        header = json.dumps({"format": "scclip-window-features/1", "shapes": [], "image": image})
        key = f"{n:02d}" * 32
        cache.store.put(key, len(header).to_bytes(4, "little") + header.encode())
        assert cache.get_entry(key) is None, image
        assert key not in cache.store
    assert cache.report()["corrupt"] == 5
