"""Per-image scores kept beside the dataset's confusion matrix (for the report's worst images)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np

from scclip_cli.maps.metrics import ConfusionMatrix, image_scores, merge_confusions


def test_image_scores_are_the_dataset_definitions_on_one_image() -> None:
    # rows = ground truth, columns = prediction; class 2 appears nowhere
    matrix = np.array([[6, 2, 0], [1, 3, 0], [0, 0, 0]])
    scores = image_scores(matrix)
    iou0 = 6 / (8 + 7 - 6) * 100
    iou1 = 3 / (4 + 5 - 3) * 100
    assert [c["index"] for c in scores["classes"]] == [0, 1]  # class 2 has no union: left out
    assert math.isclose(scores["classes"][0]["iou"], iou0)
    assert math.isclose(scores["mIoU"], (iou0 + iou1) / 2)
    assert math.isclose(scores["aAcc"], 9 / 12 * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an image with every pixel ignored is no reason to warn
        empty = image_scores(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(empty["mIoU"]) and math.isnan(empty["aAcc"]) and empty["classes"] == []


def test_an_image_with_one_scored_pixel_has_scores() -> None:
    one = image_scores(np.array([[0, 0], [0, 1]]))  # one pixel of class 1, predicted right
    assert one == {"mIoU": 100.0, "aAcc": 100.0, "classes": [{"index": 1, "iou": 100.0}]}
    wrong = image_scores(np.array([[0, 1], [0, 0]]))  # class 0 predicted as class 1
    assert wrong == {
        "mIoU": 0.0,
        "aAcc": 0.0,
        "classes": [{"index": 0, "iou": 0.0}, {"index": 1, "iou": 0.0}],
    }


def test_each_keyed_image_gets_the_scores_of_its_own_matrix() -> None:
    rng = np.random.default_rng(3)
    pairs = [(rng.integers(0, 4, (6, 9)), rng.integers(0, 4, (6, 9))) for _ in range(3)]
    pairs[1][1][:2] = 255  # ignored ground truth
    cm = ConfusionMatrix(4)
    for i, (pred, gt) in enumerate(pairs):
        cm.add_unchecked(pred, gt, key=f"img{i}")
    cm.add_unchecked(pairs[0][0], pairs[0][1])  # without a key: counted, no row
    assert [row["key"] for row in cm.per_image] == ["img0", "img1", "img2"]
    for row, (pred, gt) in zip(cm.per_image, pairs, strict=True):
        alone = ConfusionMatrix(4)
        alone.add_unchecked(pred, gt)
        assert math.isclose(row["mIoU"], alone.metrics()["mIoU"])
        assert math.isclose(row["aAcc"], alone.metrics()["aAcc"])
    assert cm.num_images == 4


def test_rows_survive_save_load_and_merge(tmp_path) -> None:
    parts = []
    for shard in (1, 2):
        cm = ConfusionMatrix(3, shard=(shard, 2))
        cm.add_unchecked(np.array([[0, 1]]), np.array([[0, 1]]), key=f"s{shard}")
        cm.add_unchecked(np.array([[0, 1]]), np.array([[255, 255]]), key=f"ignored{shard}")
        cm.save(tmp_path / f"{shard}.npz")
        parts.append(ConfusionMatrix.load(tmp_path / f"{shard}.npz"))
    assert parts[0].per_image[0] == {
        "key": "s1",
        "mIoU": 100.0,
        "aAcc": 100.0,
        "classes": [{"index": 0, "iou": 100.0}, {"index": 1, "iou": 100.0}],
    }
    assert math.isnan(parts[0].per_image[1]["mIoU"])  # saved as null, read back as NaN
    merged = merge_confusions([("1", parts[0]), ("2", parts[1])])
    assert [row["key"] for row in merged.per_image] == ["s1", "ignored1", "s2", "ignored2"]


def test_the_saved_rows_are_strict_json(tmp_path) -> None:
    """An image with nothing scored has NaN scores: written as null, as strict JSON readers
    (other languages, ``jq``) refuse NaN."""
    cm = ConfusionMatrix(2)
    cm.add_unchecked(np.array([[0, 1]]), np.array([[255, 255]]), key="blank")
    cm.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        meta = str(data["meta"])

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the saved rows")

    rows = json.loads(meta, parse_constant=refuse)["per_image"]
    assert rows == [{"key": "blank", "mIoU": None, "aAcc": None, "classes": []}]
