"""The helpers behind the shared options: what the library receives from them."""

from __future__ import annotations

import pytest

from scclip_cli.cli.options import parse_dilations, protocol_overrides
from scclip_cli.errors import ConfigError


def test_dilations_from_text_or_numbers():
    assert parse_dilations("8,16") == (8, 16)
    assert parse_dilations([4, 2]) == (4, 2)  # the Python API passes numbers
    with pytest.raises(ConfigError) as err:
        parse_dilations("8,x")
    assert str(err.value) == (
        "--pamr-dilations expects comma-separated positive integers like 8,16, got '8,x'"
    )


def test_protocol_overrides_keep_only_what_was_given():
    assert protocol_overrides() == {}
    assert protocol_overrides(crop=0, prob_threshold=0.0, area_threshold=None) == {
        "crop": 0,
        "prob_threshold": 0.0,
    }
