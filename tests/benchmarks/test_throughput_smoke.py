"""benchmarks/throughput.py stays runnable: its pieces on the tiny model and two tiny images.

A correctness test only: no timing is asserted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from support.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def throughput():
    return load_benchmark("throughput")


def test_generated_inputs(throughput, tmp_path):
    words = throughput.made_up_words(300)
    assert len(set(words)) == 300 and all(w.isalpha() and w.islower() for w in words)
    assert throughput.made_up_words(20) == words[:20]  # vocabularies are prefixes of each other
    paths = throughput.write_images(tmp_path / "images", 2, 40, 30)
    assert [p.name for p in paths] == ["photo_000.jpg", "photo_001.jpg"]
    image = throughput.synthetic_photo(40, 30, seed=0)
    assert image.shape == (30, 40, 3) and image.std() > 5  # structure, not a flat colour


def test_one_configuration_end_to_end(throughput, tmp_path):
    images = tmp_path / "images"
    throughput.write_images(images, 2, 40, 30)
    pretrained, caches = throughput.prepare_vocabularies(
        tmp_path, [3, 5], "scclip-tiny", "random:7", "cpu", "auto"
    )
    assert Path(pretrained).is_file()  # the seeded weights, written once for the children
    config = throughput.Config(
        name="smoke",
        image_dir=str(images),
        vocab=str(caches[5]),
        model="scclip-tiny",
        pretrained=pretrained,
        batch_size=4,
        phases=("floor", "features", "segment", throughput.ONE_CROP_PHASE),
    )
    # the child's entry point, in this process: config JSON in, result JSON out
    config_path = tmp_path / "config-smoke.json"
    config_path.write_text(json.dumps(dataclasses.asdict(config)))
    throughput.child_main(config_path)
    result = throughput.result_from_dict(json.loads((tmp_path / "result-smoke.json").read_text()))

    # 40×30 resizes to 448×336: 2 × 3 windows per image, batches of 4 across the two images
    assert (result.images, result.crops, result.batches, result.classes) == (2, 12, 3, 5)
    assert set(result.phases) == {"floor", "features", "segment", "segment-1"}
    for phase in result.phases.values():
        assert len(phase.runs) == 1 and phase.seconds > 0 and phase.peak_rss_mib > 0
    table = throughput.main_table(result)
    assert "bare forward" in table and "`scclip segment` end to end" in table
    assert "one crop per forward pass" in table and "× the images per second of one crop" in table
    assert "× floor" in throughput.scaling_table([result], "classes")
    assert "megapixels" in throughput.scaling_table([result], "size")


def test_protocol_batches_follow_the_segmenter(throughput, tiny_clip, tmp_path, monkeypatch):
    import numpy as np
    import torch

    from scclip_cli.files.image_io import read_image_rgb
    from scclip_cli.model.text_embeddings import QueryEmbeddings
    from scclip_cli.predict.segmenter import Segmenter

    features = np.random.default_rng(0).standard_normal((2, tiny_clip.output_dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    embeddings = QueryEmbeddings(("a", "b"), np.arange(2), features.astype(np.float32), {})
    segmenter = Segmenter(tiny_clip, embeddings, batch_size=5)
    paths = throughput.write_images(tmp_path / "images", 2, 40, 30)
    batches = throughput.protocol_batches(segmenter, paths)
    assert [tuple(b.shape) for b in batches] == [
        (5, 3, 224, 224),
        (5, 3, 224, 224),
        (2, 3, 224, 224),
    ]
    # the crops themselves: the ones the segmenter feeds its extractor, in its batches
    fed: list[Any] = []
    extractor = segmenter.extractor

    def recording_extractor(crops):
        fed.append(crops.clone())
        return extractor(crops)

    # the extractor is a property (built on first use): replaced for this test only
    monkeypatch.setattr(Segmenter, "extractor", property(lambda self: recording_extractor))
    list(segmenter.segment_many([read_image_rgb(p) for p in paths]))
    assert len(fed) == len(batches)
    for mine, theirs in zip(batches, fed, strict=True):
        assert torch.equal(mine, theirs)

    # the phases run what they say: the bare tower, then the calibrated features, on the batches
    fed.clear()
    throughput.run_features(segmenter, batches[:1])
    assert len(fed) == 1 and torch.equal(fed[0], batches[0])
    towers: list[Any] = []
    hook = segmenter.clip.model.visual.register_forward_hook(
        lambda module, args, output: towers.append(args[0].clone())
    )
    try:
        throughput.run_floor(segmenter, batches[:1])
    finally:
        hook.remove()
    assert len(towers) == 1 and torch.equal(towers[0], batches[0])
