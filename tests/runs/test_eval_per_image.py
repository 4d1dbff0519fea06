"""``scclip eval``'s JSON lists each image's scores (for ``scclip report --eval``), and keeps the
dataset scores it had."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from scclip_cli.runs.eval_report import report_json, write_json
from scclip_cli.runs.evaluate import evaluate

K = 4


def write_label(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def make_folders(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    pairs = {}
    for key in ("z_last", "a/first", "m"):
        gt = rng.integers(0, K, (8, 10))
        pred = gt.copy()
        wrong = rng.random(gt.shape) < {"z_last": 0.1, "a/first": 0.5, "m": 0.3}[key]
        pred[wrong] = (pred[wrong] + 1) % K
        write_label(root / "pred" / f"{key}.png", pred)
        write_label(root / "gt" / f"{key}.png", gt)
        pairs[key] = (pred, gt)
    return pairs


def test_per_image_rows_score_each_image_alone(tmp_path: Path) -> None:
    pairs = make_folders(tmp_path)
    result = evaluate(pred_dir=tmp_path / "pred", gt_dir=tmp_path / "gt", num_classes=K)
    data = report_json(result)
    assert [row["key"] for row in data["per_image"]] == ["a/first", "m", "z_last"]  # by key
    for row in data["per_image"]:
        single = tmp_path / "single" / row["key"].replace("/", "_")
        pred, gt = pairs[row["key"]]
        write_label(single / "pred" / "x.png", pred)
        write_label(single / "gt" / "x.png", gt)
        alone = evaluate(pred_dir=single / "pred", gt_dir=single / "gt", num_classes=K)
        assert math.isclose(row["mIoU"], alone.metrics["mIoU"])
        assert math.isclose(row["aAcc"], alone.metrics["aAcc"])
        per_class = alone.metrics["per_class"]
        assert {c["index"]: c["iou"] for c in row["classes"]} == {
            k: c["iou"] for k, c in enumerate(per_class) if not math.isnan(c["iou"])
        }


def test_the_dataset_scores_are_unchanged(tmp_path: Path) -> None:
    make_folders(tmp_path)
    result = evaluate(pred_dir=tmp_path / "pred", gt_dir=tmp_path / "gt", num_classes=K)
    write_json(result, tmp_path / "eval.json")
    data = json.loads((tmp_path / "eval.json").read_text())
    metrics = result.metrics
    assert list(data)[:6] == ["mIoU", "mAcc", "aAcc", "per_class", "num_images", "config"]
    assert data["mIoU"] == metrics["mIoU"] and data["num_images"] == 3
    assert data["per_class"] == [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in metrics["per_class"]
    ]
