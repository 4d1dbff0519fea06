"""The per-image statistics of ``scclip segment`` do not depend on ``--save-confidence`` (which
alone makes the segmenter compute the full confidence map of a big image), and what it wrote
reads back into ``scclip eval`` and ``scclip eval --images`` gives the same labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import scclip_cli.files.mask_io as mask_io
from scclip_cli.cli.app import main
from support.image_factory import save_blurred_noise

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "64", "--crop", "64", "--stride", "32", "-q"]


def write_photo(path: Path, seed: int) -> None:
    save_blurred_noise(path, 320, 240, seed)


def test_statistics_are_the_same_with_or_without_the_confidence_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mask_io, "STATISTICS_PIXELS", 3000)  # these photos: sampled statistics
    for seed in (1, 2):
        write_photo(tmp_path / "images" / f"p{seed}.jpg", seed)
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\ncat\ndog\nbird\n", encoding="utf-8")
    common = [str(tmp_path / "images"), "-v", str(vocab), *TINY, *FAST]
    assert main(["segment", *common, "-o", str(tmp_path / "plain")]) == 0
    assert main(["segment", *common, "-o", str(tmp_path / "conf"), "--save-confidence"]) == 0
    for seed in (1, 2):
        plain = json.loads((tmp_path / "plain" / f"p{seed}.json").read_text())
        conf = json.loads((tmp_path / "conf" / f"p{seed}.json").read_text())
        assert plain["classes"] == conf["classes"]
        assert plain["mean_confidence"] == conf["mean_confidence"]
        assert all("mean_confidence" in entry for entry in plain["classes"])
        assert (tmp_path / "conf" / f"p{seed}_conf.png").is_file()
        assert not (tmp_path / "plain" / f"p{seed}_conf.png").exists()
        same = (tmp_path / "plain" / f"p{seed}.png").read_bytes()
        assert same == (tmp_path / "conf" / f"p{seed}.png").read_bytes()
    capsys.readouterr()
    gt = tmp_path / "gt"  # the masks written with the confidence map, as ground truth
    gt.mkdir()
    for seed in (1, 2):
        (gt / f"p{seed}.png").write_bytes((tmp_path / "conf" / f"p{seed}.png").read_bytes())
    # the chain: the folder segment wrote is eval's prediction folder, against the labels that
    # eval --images computes itself (which skip the confidence map entirely)
    report = tmp_path / "eval.json"
    args = ["eval", "--images", str(tmp_path / "images"), "--gt", str(gt)]
    args += ["--vocab", str(vocab), *TINY, *FAST, "--json", str(report)]
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["aAcc"] == pytest.approx(100.0)
    args = ["eval", "--pred", str(tmp_path / "plain"), "--gt", str(gt)]
    assert main([*args, "--vocab", str(vocab), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["aAcc"] == pytest.approx(100.0)
