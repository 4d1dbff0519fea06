"""What a command does when an option is left out is what the library does by default.

Every option of every command, read from the click command Typer builds (the defaults a user
gets), is compared with the default of the same setting in the library function the command
wraps (``export_masks``, ``write_report``, ``embed_vocabulary_file``, ``segment``, ``evaluate``,
``ModelOptions``, ``MethodConfig``, ``CacheOptions``). Options with no library counterpart are
listed in :data:`CLI_ONLY` with their default; a flag is never on unless given. An option that is
neither fails the test, so a new option gets a line here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from scclip_cli.cli.app import app, main


def library_functions() -> dict[str, list[Callable[..., Any]]]:
    """The library callables each command hands its options to."""
    from scclip_cli.config import MethodConfig
    from scclip_cli.model.text_embeddings import embed_vocabulary_file
    from scclip_cli.predict.model_options import ModelOptions
    from scclip_cli.runs.caching import CacheOptions
    from scclip_cli.runs.evaluate import evaluate
    from scclip_cli.runs.export import export_masks
    from scclip_cli.runs.report import write_report
    from scclip_cli.runs.segment import segment

    return {
        "export": [export_masks],
        "report": [write_report],
        "vocab": [embed_vocabulary_file],
        "segment": [ModelOptions, segment, MethodConfig, CacheOptions],
        "eval": [ModelOptions, evaluate, MethodConfig, CacheOptions],
    }


RENAMED = {
    "images": "images_dir",
    "gt": "gt_dir",
    "pred": "pred_dir",
    "cache_dir": "folder",
    "feature_cache": "features",
    "feature_cache_size": "features_size",
}
"""CLI parameter → the library's name for the same setting."""

CLI_ONLY: dict[str, dict[str, Any]] = {
    "export": {"quiet": False},
    "report": {"quiet": False},
    "vocab": {},
    "segment": {
        "jsonl": False,
        "no_cache": False,  # CacheOptions(text=True): text embeddings cached
        # MethodConfig: every part of SC-CLIP on
        "no_anomaly_repair": False,
        "no_attention_enhancement": False,
        "no_feature_aggregation": False,
        "no_multi_level_fusion": False,
        # left to the method's and the engine's defaults (MethodConfig, RayOptions) when not given
        "anomaly_detector": None,
        "pamr_steps": None,
        "pamr_dilations": None,
        "ray_address": None,
        "workers": None,
        "gpus_per_worker": None,
        "cpus_per_worker": None,
    },
    "eval": {
        "merge": False,
        "parts": None,
        "save_confusion": None,
        "json_path": None,
        "chart": None,
        "sweep": None,
        "no_cache": False,
        "no_anomaly_repair": False,
        "no_attention_enhancement": False,
        "no_feature_aggregation": False,
        "no_multi_level_fusion": False,
        # evaluate(protocol_overrides=...) takes the given ones only: the preset's values otherwise
        "short_side": None,
        "crop": None,
        "stride": None,
        "logit_scale": None,
        "prob_threshold": None,
        "area_threshold": None,
        "anomaly_detector": None,
        "pamr_steps": None,
        "pamr_dilations": None,
        "ray_address": None,
        "workers": None,
        "gpus_per_worker": None,
        "cpus_per_worker": None,
    },
}


def cli_defaults(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    """``{command: {parameter: default}}`` of the options a user may leave out."""
    import typer.main

    assert main(["--help"]) == 0  # registers the commands
    capsys.readouterr()
    group: Any = typer.main.get_command(app)
    return {
        name: {p.name: p.default for p in command.params if not p.required}
        for name, command in group.commands.items()
    }


def library_default(functions: list[Callable[..., Any]], name: str) -> Any:
    for function in functions:
        parameter = inspect.signature(function).parameters.get(RENAMED.get(name, name))
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return inspect.Parameter.empty


def test_every_default_is_the_library_default(capsys: pytest.CaptureFixture[str]) -> None:
    functions = library_functions()
    defaults = cli_defaults(capsys)
    assert sorted(defaults) == sorted(functions)
    wrong, unknown = [], []
    for command, options in defaults.items():
        for name, default in options.items():
            if name in CLI_ONLY[command]:
                expected = CLI_ONLY[command][name]
            else:
                expected = library_default(functions[command], name)
            if expected is inspect.Parameter.empty:
                unknown.append(f"{command} {name}")
            elif default != expected or type(default) is not type(expected):
                wrong.append(f"{command} {name}: {default!r} on the command line, {expected!r}")
    assert not unknown, f"options with no library default and not in CLI_ONLY: {unknown}"
    assert not wrong, "\n".join(wrong)


def test_no_flag_is_on_unless_given(capsys: pytest.CaptureFixture[str]) -> None:
    """Off, or ``None`` where the library decides (``--reduce-zero-label``: the dataset's)."""
    import typer.main

    defaults = cli_defaults(capsys)
    group: Any = typer.main.get_command(app)
    on = [
        f"{command} {p.name}"
        for command, click_command in group.commands.items()
        for p in click_command.params
        if getattr(p, "is_flag", False) and defaults[command][p.name] not in (False, None)
    ]
    assert not on, f"flags on by default: {on}"
