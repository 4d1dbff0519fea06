"""The Segmenter with a feature cache: same labels, the model skipped on hits, keys that miss."""

import dataclasses

import pytest

from scclip_cli.config import ConfigError, MethodConfig, ProtocolConfig
from scclip_cli.files.feature_cache import FeatureCache
from scclip_cli.files.vocabulary import parse_vocabulary
from scclip_cli.model.text_embeddings import embed_vocabulary, save_embeddings
from scclip_cli.predict.segmenter import Segmenter
from support.image_factory import gradient_rgb, quadrant_rgb

PROTOCOL = ProtocolConfig(short_side=224, crop=224, stride=112)
TEMPLATES = ("a photo of a {}.",)


@pytest.fixture(scope="module")
def embeddings(tiny_clip):
    vocab = parse_vocabulary(["background", "sky, cloud", "grass", "road", "dog"])
    return embed_vocabulary(tiny_clip, vocab, TEMPLATES)


@pytest.fixture(scope="module")
def other_embeddings(tiny_clip):
    vocab = parse_vocabulary(["background", "wall", "tree", "car"])
    return embed_vocabulary(tiny_clip, vocab, TEMPLATES)


IMAGES = [gradient_rgb(90, 150, seed=1), quadrant_rgb(120, 100), gradient_rgb(100, 100, seed=2)]


def _labels(segmenter):
    return [(r.labels.tobytes(), r.confidence.tobytes()) for r in segmenter.segment_many(IMAGES)]


class _NoModel:
    def __call__(self, *args, **kwargs):
        raise AssertionError("the vision model ran on a cache hit")


def test_labels_identical_without_cache_cold_and_warm(tiny_clip, embeddings, tmp_path):
    plain = _labels(Segmenter(tiny_clip, embeddings, PROTOCOL, batch_size=2))
    cache = FeatureCache(tmp_path)
    cold = Segmenter(tiny_clip, embeddings, PROTOCOL, batch_size=2, feature_cache=cache)
    assert _labels(cold) == plain
    assert cache.report()["misses"] == 3 and cache.report()["written"] == 3
    warm_cache = FeatureCache(tmp_path)
    warm = Segmenter(tiny_clip, embeddings, PROTOCOL, batch_size=2, feature_cache=warm_cache)
    warm._extractor = _NoModel()  # any forward pass fails the test
    assert _labels(warm) == plain
    assert (warm_cache.report()["hits"], warm_cache.report()["misses"]) == (3, 0)


def test_other_vocabulary_and_post_processing_hit(
    tiny_clip, embeddings, other_embeddings, tmp_path
):
    Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path)).segment(
        IMAGES[0]
    )
    changed = dataclasses.replace(
        PROTOCOL, logit_scale=55.0, prob_threshold=0.3, area_threshold=0.01
    )
    pamr = MethodConfig(pamr_steps=2)
    cache = FeatureCache(tmp_path)
    seg = Segmenter(
        tiny_clip, other_embeddings, changed, method=pamr, feature_cache=cache, batch_size=3
    )
    seg._extractor = _NoModel()
    cached = seg.segment(IMAGES[0])
    fresh = Segmenter(tiny_clip, other_embeddings, changed, method=pamr).segment(IMAGES[0])
    assert cache.report()["hits"] == 1
    assert cached.labels.tobytes() == fresh.labels.tobytes()


@pytest.mark.parametrize(
    "change",
    [
        {"protocol": dataclasses.replace(PROTOCOL, stride=56)},
        {"protocol": dataclasses.replace(PROTOCOL, short_side=256)},
        {"method": "clearclip"},
        {"method": MethodConfig(repair_anomalies=False)},
    ],
)
def test_method_or_geometry_change_misses(tiny_clip, embeddings, tmp_path, change):
    Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path)).segment(
        IMAGES[1]
    )
    cache = FeatureCache(tmp_path)
    options = {"protocol": PROTOCOL, **change}
    Segmenter(tiny_clip, embeddings, feature_cache=cache, **options).segment(IMAGES[1])
    assert (cache.report()["hits"], cache.report()["misses"]) == (0, 1)


def test_another_model_misses(tiny_clip, embeddings, tmp_path):
    from scclip_cli.model.loading import load_clip

    Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path)).segment(
        IMAGES[1]
    )
    other = load_clip("scclip-tiny", "random:8", device="cpu")
    cache = FeatureCache(tmp_path)
    Segmenter(other, embeddings, PROTOCOL, feature_cache=cache).segment(IMAGES[1])
    assert (cache.report()["hits"], cache.report()["misses"]) == (0, 1)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_entry_is_recomputed(tiny_clip, embeddings, tmp_path, damage):
    plain = Segmenter(tiny_clip, embeddings, PROTOCOL).segment(IMAGES[2])
    Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path)).segment(
        IMAGES[2]
    )
    (entry,) = tmp_path.rglob("*.bin")
    data = entry.read_bytes()
    entry.write_bytes(data[:-100] if damage == "truncate" else data[:-5] + b"\x00" + data[-4:])
    cache = FeatureCache(tmp_path)
    again = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=cache).segment(IMAGES[2])
    assert again.labels.tobytes() == plain.labels.tobytes()
    report = cache.report()
    assert (report["corrupt"], report["misses"], report["written"]) == (1, 1, 1)
    assert FeatureCache(tmp_path).get(cache.key("0" * 64, {})) is None  # cache still usable


def test_all_hits_with_embedded_vocabulary_load_no_model(tiny_clip, embeddings, tmp_path):
    vocab = tmp_path / "vocab.npz"
    save_embeddings(embeddings, vocab)
    cache_dir = tmp_path / "features"
    options = {
        "model": "scclip-tiny",
        "pretrained": "random:7",
        "device": "cpu",
        "protocol": PROTOCOL,
    }
    first = Segmenter.load(vocab, feature_cache=FeatureCache(cache_dir), **options)
    assert not first.model_loaded
    labels = [r.labels.tobytes() for r in first.segment_many(IMAGES)]
    assert first.model_loaded  # every image missed: the model loaded for them
    again = Segmenter.load(vocab, feature_cache=FeatureCache(cache_dir), **options)
    assert [r.labels.tobytes() for r in again.segment_many(IMAGES)] == labels
    assert not again.model_loaded
    assert again.describe()["model_identity"] == dict(tiny_clip.identity)


def test_variants_equal_separate_segmenters(tiny_clip, embeddings, tmp_path):
    protocols = [
        dataclasses.replace(PROTOCOL, logit_scale=scale, prob_threshold=prob)
        for scale in (40.0, 90.0)
        for prob in (0.0, 0.5)
    ]
    seg = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path))
    variants = list(seg.segment_variants(IMAGES, protocols))
    assert len(variants) == len(IMAGES)
    for index, protocol in enumerate(protocols):
        alone = Segmenter(tiny_clip, embeddings, protocol).segment_many(IMAGES)
        for per_image, result in zip(variants, alone, strict=True):
            assert per_image[index].labels.tobytes() == result.labels.tobytes()
            assert per_image[index].confidence.tobytes() == result.confidence.tobytes()
    with pytest.raises(ConfigError):
        next(seg.segment_variants(IMAGES, [dataclasses.replace(PROTOCOL, stride=56)]))


# ----------------------------------------------------------------- image files, found by their bytes
def _photo_files(folder):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    paths = []
    for index, image in enumerate(IMAGES):
        path = folder / f"p{index}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def _no_decoding(*args, **kwargs):
    raise AssertionError("an image file was decoded although its features were cached")


def test_a_file_whose_features_are_cached_is_not_decoded(
    tiny_clip, embeddings, other_embeddings, tmp_path, monkeypatch
):
    from scclip_cli.files import image_io
    from scclip_cli.predict.segmenter import CachedImage, PreparedImage

    paths = _photo_files(tmp_path / "photos")
    cold = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path / "f"))
    first = [cold.read(path) for path in paths]
    assert all(isinstance(r.image, PreparedImage) and r.image.cache_key for r in first)
    assert all(r.image.cached_windows is None for r in first)  # looked up by the reader: a miss
    list(cold.segment_many(r.image for r in first))
    assert cold.feature_cache.report()["written"] == 3

    plain = Segmenter(tiny_clip, other_embeddings, PROTOCOL).segment_many(IMAGES)
    cache = FeatureCache(tmp_path / "f")
    warm = Segmenter(tiny_clip, other_embeddings, PROTOCOL, feature_cache=cache)
    warm._extractor = _NoModel()
    monkeypatch.setattr(image_io, "read_image_rgb", _no_decoding)
    read = [warm.read(path) for path in paths]
    for result, image in zip(read, IMAGES, strict=True):
        assert isinstance(result.image, CachedImage) and result.rgb is None
        assert (result.image.height, result.image.width) == image.shape[:2]
    for mine, fresh in zip(warm.segment_many(r.image for r in read), plain, strict=True):
        assert mine.labels.tobytes() == fresh.labels.tobytes()
        assert mine.confidence.tobytes() == fresh.confidence.tobytes()
    assert (cache.report()["hits"], cache.report()["misses"]) == (3, 0)
    assert warm.segment(paths[1]).labels.tobytes() == plain_one(tiny_clip, other_embeddings)


def plain_one(clip, embeddings):
    return Segmenter(clip, embeddings, PROTOCOL).segment(IMAGES[1]).labels.tobytes()


@pytest.mark.parametrize("need", ["rgb", "pamr"])
def test_a_cached_file_is_decoded_when_its_pixels_are_needed(tiny_clip, embeddings, tmp_path, need):
    from scclip_cli.predict.segmenter import PreparedImage

    (path, *_) = _photo_files(tmp_path / "photos")
    method = MethodConfig(pamr_steps=2) if need == "pamr" else MethodConfig()
    Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path / "f")).segment(
        path
    )
    cache = FeatureCache(tmp_path / "f")
    seg = Segmenter(tiny_clip, embeddings, PROTOCOL, method=method, feature_cache=cache)
    seg._extractor = _NoModel()  # the features still come from the cache
    result = seg.read(path, keep_rgb=need == "rgb")
    assert isinstance(result.image, PreparedImage) and result.image.cached_windows is not None
    assert (result.rgb is not None) == (need == "rgb")
    mine = next(iter(seg.segment_many([result.image])))
    fresh = Segmenter(tiny_clip, embeddings, PROTOCOL, method=method).segment(IMAGES[0])
    assert mine.labels.tobytes() == fresh.labels.tobytes()
    assert cache.report()["hits"] == 1


def test_a_changed_file_or_decoder_misses(tiny_clip, embeddings, tmp_path, monkeypatch):
    from PIL import Image

    from scclip_cli.files import image_io

    (path, *_) = _photo_files(tmp_path / "photos")
    Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path / "f")).segment(
        path
    )
    Image.fromarray(IMAGES[2]).save(path)  # the same name, other pixels
    cache = FeatureCache(tmp_path / "f")
    again = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=cache).segment(path)
    assert (cache.report()["hits"], cache.report()["misses"]) == (0, 1)
    assert again.labels.tobytes() == plain_labels(tiny_clip, embeddings, IMAGES[2])

    monkeypatch.setattr(image_io, "READER_VERSION", image_io.READER_VERSION + 1)
    cache = FeatureCache(tmp_path / "f")
    Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=cache).segment(path)
    assert (cache.report()["hits"], cache.report()["misses"]) == (0, 1)


def plain_labels(clip, embeddings, image):
    return Segmenter(clip, embeddings, PROTOCOL).segment(image).labels.tobytes()


@pytest.mark.parametrize("damage", ["truncate", "other windows"])
def test_a_damaged_or_foreign_entry_of_a_file_is_recomputed(
    tiny_clip, embeddings, tmp_path, damage
):
    from scclip_cli.files.feature_cache import ImageSizes
    from scclip_cli.predict.segmenter import PreparedImage

    (path, *_) = _photo_files(tmp_path / "photos")
    seg = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path / "f"))
    key = seg.read(path).image.cache_key
    seg.segment(path)
    (entry,) = (tmp_path / "f").rglob("*.bin")
    assert entry.stem == key
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:-100])
    else:  # a layout that checks out but holds one window too few
        windows = FeatureCache(tmp_path / "f").get(key)
        sizes = ImageSizes(*IMAGES[0].shape[:2], seg.prepare(IMAGES[0]).pixels_size, None)
        FeatureCache(tmp_path / "f").put(key, windows[:-1], sizes)
    cache = FeatureCache(tmp_path / "f")
    again = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=cache)
    read = again.read(path)
    assert isinstance(read.image, PreparedImage) and read.image.cached_windows is None
    labels = next(iter(again.segment_many([read.image]))).labels
    assert labels.tobytes() == plain_labels(tiny_clip, embeddings, IMAGES[0])
    report = cache.report()
    assert (report["corrupt"], report["misses"], report["written"]) == (1, 1, 1)
    assert FeatureCache(tmp_path / "f").get(key) is not None  # stored again, whole


def test_an_unreadable_file_is_the_decoders_to_report(tiny_clip, embeddings, tmp_path):
    from scclip_cli.errors import ImageReadError

    seg = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path / "f"))
    with pytest.raises(ImageReadError, match=r"missing\.png"):
        seg.read(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=r"bad\.png"):
        seg.read(tmp_path / "bad.png")


def test_a_file_changed_while_it_is_read_is_not_stored_under_its_old_bytes(
    tiny_clip, embeddings, tmp_path, monkeypatch
):
    from PIL import Image

    from scclip_cli.files import image_io

    (path, *_) = _photo_files(tmp_path / "photos")
    decode = image_io.open_displayed

    def decode_after_a_change(file):
        Image.fromarray(IMAGES[2]).save(file)  # another process rewrites the photo meanwhile
        return decode(file)

    monkeypatch.setattr(image_io, "open_displayed", decode_after_a_change)
    cache = FeatureCache(tmp_path / "f")
    seg = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=cache)
    read = seg.read(path)
    assert read.image.cache_key is None  # looked up by its pixels instead, in segment_many
    labels = next(iter(seg.segment_many([read.image]))).labels
    assert labels.tobytes() == plain_labels(tiny_clip, embeddings, IMAGES[2])
    monkeypatch.undo()
    Image.fromarray(IMAGES[0]).save(path)  # the old bytes again: their key holds nothing
    again = FeatureCache(tmp_path / "f")
    result = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=again).segment(path)
    assert result.labels.tobytes() == plain_labels(tiny_clip, embeddings, IMAGES[0])
    assert (again.report()["hits"], again.report()["misses"]) == (0, 1)


def test_an_image_read_without_pixels_is_refused_where_pamr_needs_them(
    tiny_clip, embeddings, tmp_path
):
    from scclip_cli.predict.segmenter import CachedImage

    (path, *_) = _photo_files(tmp_path / "photos")
    seg = Segmenter(tiny_clip, embeddings, PROTOCOL, feature_cache=FeatureCache(tmp_path / "f"))
    seg.segment(path)
    cached = seg.read(path).image
    assert isinstance(cached, CachedImage)
    pamr = Segmenter(tiny_clip, embeddings, PROTOCOL, method=MethodConfig(pamr_steps=2))
    with pytest.raises(ConfigError, match="PAMR needs the image's pixels"):
        next(iter(pamr.segment_many([cached])))
