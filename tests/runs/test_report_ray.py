"""The review page of runs made by the Ray engine (``segment --engine ray --report``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from scclip_cli.cli.app import main
from support.ray_instance import private_ray_instance
from support.torch_threads import torch_threads

pytestmark = pytest.mark.slow

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "32", "--crop", "32", "--stride", "16"]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    yield from private_ray_instance()


def test_a_ray_run_gets_its_page(ray_instance: Any, tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.jpg", "sub/b.png", "c d.jpg")):
        Image.new("RGB", (40 + i, 32), (60 * i, 120, 200 - 50 * i)).save(images / name)
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\ncat\ndog\n", encoding="utf-8")
    out = tmp_path / "out"
    args = [str(images), "--vocab", str(vocab), "--out", str(out), "-q", *TINY, *FAST]
    with torch_threads(1):
        code = main(["segment", *args, "--engine", "ray", "--workers", "1", "--report"])
    assert code == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    data = json.loads(
        re.search(r'id="report-data">(.*?)</script>', page, re.DOTALL)[1]  # type: ignore[index]
    )
    assert [im["key"] for im in data["images"]] == ["a", "c d", "sub/b"]
    assert all(im["image"] is not None and im["thumb"] for im in data["images"])
    assert ["run.engine.name", "ray"] in data["config"]["rows"]
    assert data["runs"][0]["counts"]["done"] == 3
