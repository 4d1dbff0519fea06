"""What a segmenter computes is what was asked for: without the confidence map the labels and the
statistics are the same bits, and eval asks for labels only."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import scclip_cli.files.mask_io as mask_io
from scclip_cli.config import MethodConfig, ProtocolConfig
from scclip_cli.files.image_io import read_image_rgb
from scclip_cli.model.text_embeddings import load_vocabulary_embeddings
from scclip_cli.predict.segmenter import Segmenter
from support.image_factory import exif_rotated_jpeg, gradient_rgb, save_rgb


@pytest.fixture(scope="module")
def embeddings(tiny_clip):
    return load_vocabulary_embeddings(["background", "sky", "road", "tree"], tiny_clip)


@pytest.mark.parametrize(
    "protocol",
    [ProtocolConfig(), ProtocolConfig(prob_threshold=0.3, area_threshold=0.1)],
    ids=["default", "thresholds"],
)
@pytest.mark.parametrize("sampled", [False, True], ids=["every pixel", "grid"])
def test_labels_and_statistics_are_the_same_bits_without_the_confidence_map(
    tiny_clip, embeddings, protocol, sampled, monkeypatch
):
    if sampled:  # these small images then take the sampled statistics of big photos
        monkeypatch.setattr(mask_io, "STATISTICS_PIXELS", 500)
    segmenter = Segmenter(tiny_clip, embeddings, protocol)
    images = [gradient_rgb(300, 400, seed=1), gradient_rgb(257, 301, seed=2)]
    full = list(segmenter.segment_many(images, statistics=True))
    labels_only = list(segmenter.segment_many(images, confidence=False, statistics=True))
    for a, b in zip(full, labels_only, strict=True):
        assert a.confidence is not None
        # every pixel counts: the statistics need the map, which is then returned too
        assert (b.confidence is None) == sampled
        np.testing.assert_array_equal(a.labels, b.labels)
        ta, tb = a.class_totals(), b.class_totals()
        assert (ta.confidence_sums is not None) and (tb.confidence_sums is not None)
        np.testing.assert_array_equal(ta.pixels, tb.pixels)
        np.testing.assert_array_equal(ta.confidence_sums, tb.confidence_sums)
        assert ta.image_mean == tb.image_mean
        assert (a.totals is not None) == sampled  # computed on the grid only when sampled
    bare = next(iter(segmenter.segment_many(images[:1], confidence=False)))
    assert bare.confidence is None
    np.testing.assert_array_equal(bare.labels, full[0].labels)
    default = next(iter(segmenter.segment_many(images[:1])))
    np.testing.assert_array_equal(default.labels, full[0].labels)
    np.testing.assert_array_equal(default.confidence, full[0].confidence)


def test_a_segmenter_that_refines_with_pamr_still_returns_what_it_computed(tiny_clip, embeddings):
    segmenter = Segmenter(
        tiny_clip, embeddings, ProtocolConfig(), method=MethodConfig(pamr_steps=2)
    )
    image = gradient_rgb(120, 160, seed=3)
    full = segmenter.segment(image)
    labels_only = next(iter(segmenter.segment_many([image], confidence=False)))
    np.testing.assert_array_equal(full.labels, labels_only.labels)
    assert labels_only.confidence is not None  # the canvas route computes it anyway


def test_reading_a_file_prepares_the_pixels_of_its_whole_array(tiny_clip, embeddings, tmp_path):
    # read() resizes from the rows it needs, or from the whole array when the RGB is kept too
    segmenter = Segmenter(tiny_clip, embeddings, ProtocolConfig())
    rgb = gradient_rgb(500, 700, seed=4)
    paths = [
        save_rgb(tmp_path / "photo.jpg", rgb, quality=90),
        exif_rotated_jpeg(tmp_path / "rotated.jpg", rgb, orientation=6),
        save_rgb(tmp_path / "alpha.png", np.dstack([rgb, rgb[..., :1]])),
    ]
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    paths.append(tmp_path / "grey.png")
    for path in paths:
        expected = segmenter.prepare(read_image_rgb(path))
        for keep_rgb in (False, True):
            read = segmenter.read(path, keep_rgb=keep_rgb)
            assert (read.rgb is not None) == keep_rgb
            assert (read.image.height, read.image.width) == (expected.height, expected.width)
            assert read.image.pixels.equal(expected.pixels), (path.name, keep_rgb)
