"""Threshold sweeps: parsing, the table, and a sweep equal to separate runs with each setting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main
from scclip_cli.errors import UsageError
from scclip_cli.runs.sweep import combinations, format_sweep, parse_sweep, sweep_rows
from support.torch_threads import torch_threads

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "64", "--crop", "64", "--stride", "32"]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def test_parse_and_combine():
    axes = parse_sweep(
        ["prob-threshold=0,0.1,0.2", "--logit-scale=40,50", "area-threshold=none,0.01"]
    )
    assert axes == {
        "prob_threshold": (0.0, 0.1, 0.2),
        "logit_scale": (40.0, 50.0),
        "area_threshold": (None, 0.01),
    }
    combos = combinations(axes)
    assert len(combos) == 12
    assert combos[0] == {"prob_threshold": 0.0, "logit_scale": 40.0, "area_threshold": None}
    assert combos[1] == {"prob_threshold": 0.0, "logit_scale": 40.0, "area_threshold": 0.01}


@pytest.mark.parametrize(
    "spec",
    [
        ["crop=1,2"],
        ["prob-threshold"],
        ["prob-threshold=a"],
        ["prob-threshold=0,0"],
        ["logit-scale=1", "logit-scale=2"],
        ["prob-threshold=nan"],
        ["logit-scale=none"],
    ],
)
def test_bad_sweeps_are_usage_errors(spec):
    with pytest.raises(UsageError):
        parse_sweep(spec)


def test_rows_mark_the_first_best():
    settings = [{"prob_threshold": 0.0}, {"prob_threshold": 0.1}, {"prob_threshold": 0.2}]
    metrics = [{"mIoU": m, "mAcc": 1.0, "aAcc": 2.0} for m in (10.0, 30.0, 30.0)]
    rows = sweep_rows(settings, metrics)
    assert [r["best"] for r in rows] == [False, True, False]
    assert rows[1]["settings"] == {"prob-threshold": 0.1}
    table = format_sweep(rows)
    assert "*best" in table.splitlines()[2] and "prob-threshold" in table.splitlines()[0]


def _dataset(tmp_path: Path) -> tuple[Path, Path, Path]:
    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(base).resize((72, 56), Image.Resampling.BILINEAR).save(images / f"s{i}.png")
        labels = rng.integers(0, 3, size=(56, 72), dtype=np.uint8)
        labels[:, :20] = 0
        Image.fromarray(labels).save(gt / f"s{i}.png")
    text = tmp_path / "v.txt"
    text.write_text("background\ncat\ndog\n")
    vocab = tmp_path / "v.npz"
    assert main(["vocab", str(text), "--out", str(vocab), *TINY]) == 0
    return images, gt, vocab


def test_sweep_equals_separate_runs(tmp_path, capsys):
    images, gt, vocab = _dataset(tmp_path)
    base = ["eval", "--images", str(images), "--gt", str(gt), "--vocab", str(vocab), *TINY, *FAST]
    base += ["--quiet"]
    sweep = ["--sweep", "prob-threshold=0,0.4,0.6", "--sweep", "logit-scale=40,100"]
    out = tmp_path / "sweep.json"
    assert main([*base, *sweep, "--json", str(out), "--feature-cache", str(tmp_path / "fc")]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = report["config"]["sweep"]
    assert len(rows) == 6 and sum(r["best"] for r in rows) == 1
    assert "*best" in printed
    for row in rows:
        settings = row["settings"]
        single = tmp_path / "single.json"
        args = ["--prob-threshold", str(settings["prob-threshold"])]
        args += ["--logit-scale", str(settings["logit-scale"]), "--json", str(single)]
        assert main([*base, *args]) == 0
        alone = json.loads(single.read_text())
        assert (alone["mIoU"], alone["mAcc"], alone["aAcc"]) == (
            row["mIoU"],
            row["mAcc"],
            row["aAcc"],
        )
        if row["best"]:
            assert alone["per_class"] == report["per_class"]
    assert len({r["mIoU"] for r in rows}) > 1  # the settings change the labels


def test_sweep_needs_images(tmp_path, capsys):
    _images, gt, vocab = _dataset(tmp_path)
    args = ["eval", "--pred", str(gt), "--gt", str(gt), "--vocab", str(vocab)]
    assert main([*args, "--sweep", "prob-threshold=0,0.1"]) == 2
    assert "--images or --dataset" in capsys.readouterr().err
