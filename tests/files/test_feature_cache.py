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
