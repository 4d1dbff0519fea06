"""``scclip eval --pred`` reads a ``scclip segment`` folder as it is: the run's own files (legend,
colour renderings, confidence maps, overlays, shard summaries) are told apart by what they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main
from scclip_cli.errors import EvaluationError
from scclip_cli.files.mask_io import write_confidence_png
from scclip_cli.runs.evaluate import evaluate, pair_predictions
from support.segment_output import make_segment_output

ROOT = Path(__file__).resolve().parents[2]


def write_gt(folder: Path, maps: dict[str, np.ndarray]) -> None:
    for key, labels in maps.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels.astype(np.uint16)).save(folder / f"{key}.png")


def test_sixteen_bit_run_with_every_side_file_pairs_only_the_masks(tmp_path):
    names = [f"class {i}" for i in range(300)]  # > 256: 16-bit masks with <stem>_color.png
    maps = {
        "a": np.arange(48, dtype=np.int64).reshape(6, 8) * 6,
        "sub/b": np.full((5, 7), 299, dtype=np.int64),
    }
    masks = make_segment_output(tmp_path / "masks", names, maps)
    for key, labels in maps.items():
        write_confidence_png(masks / f"{key}_conf.png", np.full(labels.shape, 0.25))
        Image.new("RGB", labels.shape[::-1]).save(masks / f"{key}_overlay.jpg")
    (masks / "summary.shard-1-of-2.json").write_text("{}")
    (masks / "failures.shard-1-of-2.jsonl").write_text("")
    assert (masks / "a_color.png").is_file() and (masks / "legend.png").is_file()
    write_gt(tmp_path / "gt", maps)
    samples = pair_predictions(masks, tmp_path / "gt")
    assert [(s.key, s.pred) for s in samples] == [
        ("a", masks / "a.png"),
        ("sub/b", masks / "sub/b.png"),
    ]
    result = evaluate(pred_dir=masks, gt_dir=tmp_path / "gt", num_classes=300, ignore_index=65535)
    assert result.metrics["aAcc"] == 100.0


def test_a_mask_without_its_record_is_an_incomplete_prediction(tmp_path):
    maps = {"a": np.zeros((4, 4), dtype=np.int64), "b": np.ones((4, 4), dtype=np.int64)}
    masks = make_segment_output(tmp_path / "masks", ["bg", "fg"], maps)
    (masks / "b.json").unlink()
    write_gt(tmp_path / "gt", maps)
    with pytest.raises(EvaluationError, match=r"incomplete prediction .*b\.png"):
        pair_predictions(masks, tmp_path / "gt")


def test_a_plain_folder_of_masks_still_pairs_by_name(tmp_path):
    maps = {"a": np.zeros((4, 4), dtype=np.int64)}
    write_gt(tmp_path / "gt", maps)
    write_gt(tmp_path / "pred", maps)  # no legend.json: not a segment output
    assert [s.key for s in pair_predictions(tmp_path / "pred", tmp_path / "gt")] == ["a"]


@pytest.mark.slow
def test_sharded_run_with_overlays_and_confidence_evaluates_as_is(tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(ROOT / "sample_images", images, ignore=shutil.ignore_patterns("*.md"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("background, sky\nperson\ncat\ncup\n")
    model = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu", "-q"]
    for shard in ("1/2", "2/2"):
        args = ["segment", str(images), "--vocab", str(vocab), "--out", str(tmp_path / "m")]
        rc = main([*args, "--overlay", "--save-confidence", "--shard", shard, *model])
        assert rc == 0
    masks = tmp_path / "m"
    assert len(list(masks.glob("summary.shard-*.json"))) == 2
    gt = {}
    for record in sorted(masks.glob("*.json")):
        data = json.loads(record.read_text())
        if isinstance(data, dict) and "height" in data:  # a per-image record
            gt[record.stem] = np.zeros((data["height"], data["width"]), dtype=np.int64)
            conf = np.asarray(Image.open(masks / f"{record.stem}_conf.png"))
            assert conf.shape == gt[record.stem].shape and conf.dtype == np.uint8
            assert data["mean_confidence"] == pytest.approx(conf.mean() / 255, abs=2e-3)
    assert len(gt) == 4
    write_gt(tmp_path / "gt", gt)
    capsys.readouterr()
    rc = main(["eval", "--pred", str(masks), "--gt", str(tmp_path / "gt"), "--vocab", str(vocab)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "4 images" in out
