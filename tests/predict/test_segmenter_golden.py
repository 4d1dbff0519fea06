"""The whole protocol against the authors' code: windows, averaging, upsampling, post-processing."""

import json

import numpy as np
import pytest
from PIL import Image

from scclip_cli.config import ProtocolConfig, resolve_protocol
from scclip_cli.model.text_embeddings import QueryEmbeddings
from scclip_cli.predict.segmenter import Segmenter

LOGIT_ATOL = 2e-5
MARGIN = 1e-5


def _image(golden_dir, name):
    return np.asarray(Image.open(golden_dir / name).convert("RGB"))


def _prototypes(golden, query_class):
    k = int(query_class.max()) + 1
    return QueryEmbeddings(
        class_names=tuple(f"class{i}" for i in range(k)),
        query_class=query_class.astype(np.int64),
        features=golden["query_features"].astype(np.float32),
        identity={},
    )


def _settings(golden_dir, case):
    s = json.loads((golden_dir / "meta.json").read_text())[case]["settings"]
    assert s["slide_crop"] == 224 and s["slide_stride"] == 112
    return ProtocolConfig(
        logit_scale=s["logit_scale"],
        prob_threshold=s.get("prob_thd", 0.0),
        area_threshold=s.get("area_thd"),
    )


@pytest.mark.parametrize("case", ["proto_mosaic_336", "post_mosaic_336"])
def test_mosaic_protocol_parity(tiny_clip, golden_dir, case):
    golden = np.load(golden_dir / f"{case}.npz")
    seg = Segmenter(
        tiny_clip,
        _prototypes(golden, golden["query_class"]),
        _settings(golden_dir, case),
        batch_size=3,
    )
    image = _image(golden_dir, f"{case}.png")
    np.testing.assert_allclose(seg.scores(image), golden["logits"], atol=LOGIT_ATOL, rtol=0)
    result = seg.segment(image)
    confident = golden["margin"] > MARGIN
    assert result.labels.shape == golden["pred"].shape
    assert np.array_equal(result.labels[confident], golden["pred"][confident].astype(np.int32))
    assert set(np.unique(result.labels)) == set(np.unique(golden["pred"]))


def test_voc_chelsea_with_text_and_resize(tiny_clip, golden_dir):
    """Real resize (200×300 → 336×504, OpenCV-exact), the voc21 text embeddings and voc21 settings."""
    golden = np.load(golden_dir / "voc_chelsea.npz")
    protocol = resolve_protocol("voc21")
    assert protocol == _settings(golden_dir, "voc_chelsea")
    seg = Segmenter.load(
        vocab=golden_dir / "voc21.txt",
        model="scclip-tiny",
        pretrained="random:7",
        device="cpu",
        protocol=protocol,
    )
    image = _image(golden_dir, "voc_chelsea.png")
    np.testing.assert_allclose(seg.scores(image), golden["logits"], atol=LOGIT_ATOL, rtol=0)
    result = seg.segment(image)
    confident = golden["margin"] > MARGIN
    assert np.array_equal(result.labels[confident], golden["pred"][confident].astype(np.int32))


def test_batch_size_and_image_mixing_change_nothing(tiny_clip, golden_dir):
    golden = np.load(golden_dir / "proto_mosaic_336.npz")
    emb = _prototypes(golden, golden["query_class"])
    rng = np.random.default_rng(0)
    images = [
        _image(golden_dir, "proto_mosaic_336.png"),
        rng.integers(0, 255, (120, 500, 3), dtype=np.uint8),  # wide: resized to 336 x 1400
        _image(golden_dir, "voc_chelsea.png"),
        rng.integers(0, 255, (7, 9, 3), dtype=np.uint8),
    ]
    protocol = ProtocolConfig(logit_scale=40)
    single = Segmenter(tiny_clip, emb, protocol, batch_size=1)
    one_by_one = [single.segment(im) for im in images]
    batched = list(Segmenter(tiny_clip, emb, protocol, batch_size=5).segment_many(images))
    assert len(batched) == len(images)
    for a, b, im in zip(one_by_one, batched, images, strict=True):
        assert a.labels.shape == im.shape[:2]
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
        # Batched matrix products differ from single ones in the last float32 bits only: labels
        # agree wherever the best two queries are more than float noise apart.
        top2 = np.sort(single.scores(im), axis=0)[-2:]
        decided = (top2[1] - top2[0]) > MARGIN
        assert np.array_equal(a.labels[decided], b.labels[decided])
        assert (a.labels != b.labels).mean() < 1e-4


def test_batch_size_defaults_to_the_devices_and_is_recorded(tiny_clip, golden_dir):
    from scclip_cli.errors import ConfigError
    from scclip_cli.predict.segmenter import CPU_BATCH_SIZE, GPU_BATCH_SIZE, default_batch_size

    golden = np.load(golden_dir / "proto_mosaic_336.npz")
    emb = _prototypes(golden, golden["query_class"])
    assert (default_batch_size("cpu"), default_batch_size("cuda")) == (4, 16)
    assert CPU_BATCH_SIZE == 4 and GPU_BATCH_SIZE == 16
    segmenter = Segmenter(tiny_clip, emb)  # tiny_clip is on the CPU
    assert segmenter.batch_size == CPU_BATCH_SIZE
    assert segmenter.describe()["batch_size"] == CPU_BATCH_SIZE
    assert Segmenter(tiny_clip, emb, batch_size=7).describe()["batch_size"] == 7
    with pytest.raises(ConfigError):
        Segmenter(tiny_clip, emb, batch_size=0)
