"""What a segmenter computes is what was asked for: without the confidence map the labels and the
statistics are the same bits, and eval asks for labels only."""

from __future__ import annotations

import numpy as np
import pytest

import scclip_cli.files.mask_io as mask_io
from scclip_cli.config import MethodConfig, ProtocolConfig
from scclip_cli.model.text_embeddings import load_vocabulary_embeddings
from scclip_cli.predict.segmenter import Segmenter
from support.image_factory import gradient_rgb


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
