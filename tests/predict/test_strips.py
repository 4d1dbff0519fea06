"""Strips (one side over ~128 times the other): the resize's long-side cap leaves their short side
narrower than one patch; they are padded to one patch and their scores cropped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scclip_cli.config import MethodConfig, ProtocolConfig
from scclip_cli.maps.sliding_window import pad_to_size
from scclip_cli.model.text_embeddings import load_vocabulary_embeddings
from scclip_cli.predict.segmenter import Segmenter
from support.image_factory import gradient_rgb

STRIPS = [(40, 6000), (6000, 30), (3, 5000)]
"""``(height, width)``: resized to 14 × 2048, 2048 × 10 and 1 × 2048 by the default protocol."""


@pytest.fixture(scope="module")
def embeddings(tiny_clip):
    return load_vocabulary_embeddings(["background", "sky", "road"], tiny_clip)


@pytest.mark.parametrize(("height", "width"), STRIPS)
@pytest.mark.parametrize("pamr_steps", [0, 2])
def test_a_strip_gets_a_label_map_of_its_own_size(tiny_clip, embeddings, height, width, pamr_steps):
    segmenter = Segmenter(
        tiny_clip, embeddings, ProtocolConfig(), method=MethodConfig(pamr_steps=pamr_steps)
    )
    image = gradient_rgb(height, width, seed=height)
    prepared = segmenter.prepare(image)
    assert prepared.content is not None and min(prepared.content) < tiny_clip.patch_size
    assert min(prepared.pixels.shape[1:]) == tiny_clip.patch_size
    result = segmenter.segment(image)
    assert result.labels.shape == (height, width) and result.labels.dtype == np.int32
    assert result.confidence.shape == (height, width)
    assert result.labels.min() >= 0 and result.labels.max() < 3
    assert np.all((result.confidence > 0) & (result.confidence <= 1))


def test_images_wider_than_a_patch_are_not_padded(tiny_clip, embeddings):
    prepared = Segmenter(tiny_clip, embeddings).prepare(gradient_rgb(40, 4000))  # 20 × 2048
    assert prepared.content is None and tuple(prepared.pixels.shape) == (3, 20, 2048)


def test_padding_repeats_the_border_and_keeps_the_image_top_left():
    pixels = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    padded = pad_to_size(pixels, 5, 4)
    assert padded.shape == (2, 5, 4)
    assert torch.equal(padded[:, :3], pixels)
    assert torch.equal(padded[:, 3], pixels[:, 2]) and torch.equal(padded[:, 4], pixels[:, 2])
    assert pad_to_size(pixels, 2, 2) is pixels
