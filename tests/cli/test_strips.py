"""``scclip segment`` on strips (6000 × 40, 30 × 6000, 5000 × 3) with the default protocol: each gets
a label map of its own size and nothing is written to ``failures.jsonl``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from scclip_cli.cli.app import main
from support.image_factory import gradient_rgb, save_rgb

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]


def test_strips_are_segmented_not_failed(tmp_path: Path) -> None:
    sizes = {"wide": (40, 6000), "tall": (6000, 30), "thread": (3, 5000)}
    for name, (height, width) in sizes.items():
        save_rgb(tmp_path / "in" / f"{name}.png", gradient_rgb(height, width, seed=width))
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\nsky\nroad\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["segment", tmp_path / "in", "--vocab", vocab, "--out", out, *TINY]
    assert main([str(a) for a in args]) == 0
    assert (out / "failures.jsonl").read_text(encoding="utf-8") == ""
    for name, (height, width) in sizes.items():
        with Image.open(out / f"{name}.png") as mask:
            assert mask.size == (width, height)
            assert np.asarray(mask).max() < 3
