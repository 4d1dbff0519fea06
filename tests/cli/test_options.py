"""The helpers behind the shared options: what the library receives from them."""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any

import pytest
import typer

from scclip_cli.cli.options import (
    SharedOptions,
    _shared_parameters,
    parse_dilations,
    protocol_overrides,
    shared_options,
)
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


def toy_command(
    name: Annotated[str, typer.Argument()],
    shared: SharedOptions,
    last: Annotated[bool, typer.Option("--final", "-f")] = False,
) -> int:
    """A command with the shared options (for :func:`shared_options`)."""
    RECEIVED.update(name=name, shared=shared, last=last)
    return 7


def toy_without_return(shared: SharedOptions):  # no return annotation, on purpose
    RECEIVED.update(shared=shared)


RECEIVED: dict[str, Any] = {}


def test_shared_options_stand_where_shared_stood_with_their_option_names():
    wrapped = shared_options(toy_command)
    signature = inspect.signature(wrapped)
    shared_names = list(inspect.signature(_shared_parameters).parameters)
    assert list(signature.parameters) == ["name", *shared_names, "last"]
    assert signature.return_annotation is int
    assert typing.get_type_hints(wrapped)["return"] is int
    bare = shared_options(toy_without_return)
    assert inspect.signature(bare).return_annotation is inspect.Signature.empty
    assert typing.get_type_hints(bare)["return"] is Any

    app = typer.Typer()
    app.command()(wrapped)
    RECEIVED.clear()
    args = ["x", "-m", "scclip-tiny", "-p", "random:3", "-b", "2", "-q", "--no-cache", "-f"]
    assert app(args, standalone_mode=False) == 7
    shared = RECEIVED["shared"]
    assert (RECEIVED["name"], RECEIVED["last"]) == ("x", True)
    assert (shared.model.model, shared.model.pretrained, shared.model.batch_size) == (
        "scclip-tiny",
        "random:3",
        2,
    )
    assert shared.quiet is True and shared.caching.text is False
