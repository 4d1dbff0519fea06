"""The helpers behind the shared options: what the library receives from them."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

from scclip_cli.cli.cache_options import cache_options_from_cli
from scclip_cli.cli.options import (
    SharedOptions,
    engine_from_options,
    method_from_options,
    parse_dilations,
    protocol_overrides,
    shared_options,
)
from scclip_cli.config import MethodConfig
from scclip_cli.errors import ConfigError, UsageError


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

# Every command's shared options, in the order the help lists them; a new shared option
# belongs here too.
SHARED_NAMES = [
    "model",
    "pretrained",
    "device",
    "precision",
    "method",
    "no_anomaly_repair",
    "no_attention_enhancement",
    "no_feature_aggregation",
    "no_multi_level_fusion",
    "adaptive_anomaly_ratio",
    "boundary_aware_repair",
    "anomaly_detector",
    "pamr_steps",
    "pamr_dilations",
    "preset",
    "short_side",
    "crop",
    "stride",
    "logit_scale",
    "prob_threshold",
    "area_threshold",
    "batch_size",
    "shard",
    "quiet",
    "engine",
    "ray_address",
    "workers",
    "gpus_per_worker",
    "cpus_per_worker",
    "feature_cache",
    "feature_cache_size",
    "cache_dir",
    "no_cache",
]


def test_shared_options_stand_where_shared_stood_with_their_option_names():
    wrapped = shared_options(toy_command)
    signature = inspect.signature(wrapped)
    assert list(signature.parameters) == ["name", *SHARED_NAMES, "last"]
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


def test_cluster_options_need_the_cluster_backend_and_reach_it():
    from scclip_cli.runs.ray_engine import RayOptions

    assert engine_from_options("local") == "local"
    with pytest.raises(UsageError) as err:
        engine_from_options("spark")
    assert str(err.value) == "--engine must be one of local, ray, got 'spark'"
    given = {"address": "auto", "workers": 2, "gpus_per_worker": 0.5, "cpus_per_worker": 2.0}
    names = ["--ray-address", "--workers", "--gpus-per-worker", "--cpus-per-worker"]
    for (key, value), name in zip(given.items(), names, strict=True):
        with pytest.raises(UsageError) as err:
            engine_from_options("local", **{key: value})
        assert str(err.value) == f"{name} need --engine ray"
    with pytest.raises(UsageError) as err:
        engine_from_options("local", **given)
    assert str(err.value) == f"{', '.join(names)} need --engine ray"
    assert engine_from_options("ray", **given) == RayOptions(**given)
    assert engine_from_options("ray") == RayOptions(cpus_per_worker=1.0)


def test_cache_options_reach_the_run_and_need_this_process():
    from scclip_cli.runs.caching import CacheOptions

    def options(engine_is_local: bool = True, **given: Any) -> CacheOptions:
        values = {"cache_dir": None, "no_cache": False, "feature_cache": None}
        return cache_options_from_cli(
            **(values | {"feature_cache_size": None} | given), engine_is_local=engine_is_local
        )

    assert options() == CacheOptions()
    got = options(
        cache_dir=Path("c"), no_cache=True, feature_cache=Path("f"), feature_cache_size="1GB"
    )
    assert got == CacheOptions(
        text=False, folder=Path("c"), features=Path("f"), features_size="1GB"
    )
    assert options(False) == CacheOptions()  # nothing given: the cluster runs uncached
    features = "--feature-cache works with the local engine only (drop --engine ray)"
    text = "--cache-dir and --no-cache work with the local engine only"
    for given, message in (
        ({"feature_cache": Path("f")}, features),
        ({"feature_cache": Path("f"), "feature_cache_size": "1GB"}, features),
        ({"feature_cache_size": "1GB"}, features),
        ({"cache_dir": Path("c")}, text),
        ({"no_cache": True}, text),
    ):
        with pytest.raises(UsageError) as err:
            options(False, **given)
        assert str(err.value) == message, given


def test_method_switches_become_the_method_config():
    assert method_from_options("sc-clip") == MethodConfig()
    assert method_from_options("clearclip") == MethodConfig(name="clearclip")
    ablated = method_from_options(
        "sc-clip",
        no_anomaly_repair=True,
        no_attention_enhancement=True,
        no_feature_aggregation=True,
        no_multi_level_fusion=True,
    )
    assert ablated == MethodConfig(
        repair_anomalies=False,
        attention_enhancement=False,
        feature_aggregation=False,
        multi_level_fusion=False,
    )
    extended = method_from_options(
        "sc-clip",
        adaptive_anomaly_ratio=True,
        boundary_aware_repair=True,
        anomaly_detector="token-norm",
        pamr_steps=3,
        pamr_dilations="2,4",
    )
    assert extended == MethodConfig(
        adaptive_anomaly_ratio=True,
        boundary_aware_repair=True,
        anomaly_detector="token-norm",
        pamr_steps=3,
        pamr_dilations=(2, 4),
    )
    assert method_from_options("sc-clip", pamr_dilations=[5]).pamr_dilations == (5,)


def shared_of(*args: str) -> SharedOptions:
    """The :class:`SharedOptions` a command gets from ``args`` on its command line."""
    app = typer.Typer()
    app.command()(shared_options(toy_command))
    RECEIVED.clear()
    assert app(["x", *args], standalone_mode=False) == 7
    return RECEIVED["shared"]


def test_every_shared_option_reaches_its_place(tmp_path: Path):
    from scclip_cli.predict.model_options import ModelOptions
    from scclip_cli.runs.caching import CacheOptions
    from scclip_cli.runs.ray_engine import RayOptions

    model = ["--model", "m", "--pretrained", "p", "--device", "cuda:1", "--precision", "bfloat16"]
    method = ["--method", "sc-clip", "--no-anomaly-repair", "--no-attention-enhancement"]
    method += ["--no-feature-aggregation", "--no-multi-level-fusion", "--adaptive-anomaly-ratio"]
    method += ["--boundary-aware-repair", "--anomaly-detector", "token-norm", "--pamr-steps", "2"]
    method += ["--pamr-dilations", "3,5"]
    protocol = ["--preset", "voc20", "--short-side", "40", "--crop", "32", "--stride", "16"]
    protocol += ["--logit-scale", "33", "--prob-threshold", "0.4", "--area-threshold", "0.2"]
    run = ["--batch-size", "3", "--shard", "2/3", "--quiet", "--cache-dir", str(tmp_path / "c")]
    run += ["--no-cache", "--feature-cache", str(tmp_path / "f"), "--feature-cache-size", "1GB"]
    shared = shared_of(*model, *method, *protocol, *run)
    method_config = MethodConfig(
        repair_anomalies=False,
        attention_enhancement=False,
        feature_aggregation=False,
        multi_level_fusion=False,
        adaptive_anomaly_ratio=True,
        boundary_aware_repair=True,
        anomaly_detector="token-norm",
        pamr_steps=2,
        pamr_dilations=(3, 5),
    )
    assert shared == SharedOptions(
        model=ModelOptions("m", "p", "cuda:1", "bfloat16", method_config, 3),
        preset="voc20",
        protocol_overrides={
            "short_side": 40,
            "crop": 32,
            "stride": 16,
            "logit_scale": 33.0,
            "prob_threshold": 0.4,
            "area_threshold": 0.2,
        },
        engine="local",
        shard="2/3",
        quiet=True,
        caching=CacheOptions(
            text=False, folder=tmp_path / "c", features=tmp_path / "f", features_size="1GB"
        ),
    )
    ray = ["--engine", "ray", "--ray-address", "auto", "--workers", "2"]
    ray += ["--gpus-per-worker", "0.5", "--cpus-per-worker", "2"]
    shared = shared_of(*ray)
    assert shared.engine == RayOptions("auto", 2, 0.5, 2.0)
    assert (shared.caching, shared.model.method_config) == (CacheOptions(), MethodConfig())
