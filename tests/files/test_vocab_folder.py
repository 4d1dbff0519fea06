"""One copy of the shipped vocabularies: the package's ``scclip_cli/vocab/`` (installed as package
data), seen from a clone as the repository's top-level ``vocab/`` (a link to it)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from scclip_cli.config import PROTOCOL_PRESETS
from scclip_cli.files.datasets import benchmark_vocab_path

ROOT = Path(__file__).resolve().parents[2]


def installed_vocab_files() -> dict[str, bytes]:
    folder = resources.files("scclip_cli") / "vocab"
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.name.endswith(".txt")}


def test_the_repository_vocab_folder_lists_the_installed_files():
    clone = {p.name: p.read_bytes() for p in (ROOT / "vocab").iterdir() if p.suffix == ".txt"}
    assert clone and clone == installed_vocab_files()


def test_the_repository_vocab_folder_is_the_package_folder_not_a_copy():
    assert (ROOT / "vocab").resolve() == (ROOT / "src" / "scclip_cli" / "vocab").resolve()


def test_every_preset_vocabulary_ships_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "vocab/*.txt" in config["tool"]["setuptools"]["package-data"]["scclip_cli"]
    installed = installed_vocab_files()
    for name, preset in PROTOCOL_PRESETS.items():
        assert preset.vocab_file in installed, name
        assert benchmark_vocab_path(name).read_bytes() == installed[preset.vocab_file]
