"""Confusion matrix and mmseg IoUMetric scores against an independent computation (sklearn)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from scclip_cli.errors import EvaluationError
from scclip_cli.maps.metrics import (
    ConfusionMatrix,
    label_problems,
    merge_confusions,
    reduce_zero_label,
)


def reference(preds, gts, k, ignore=255):
    """sklearn's confusion matrix, then IoU / Acc by hand (percent, NaN where undefined)."""
    g = np.concatenate([x.ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    valid = g != ignore
    cm = confusion_matrix(g[valid], p[valid], labels=list(range(k)))
    iou, acc = [], []
    for c in range(k):
        inter = cm[c, c]
        union = cm[c, :].sum() + cm[:, c].sum() - inter
        iou.append(inter / union * 100 if union else math.nan)
        acc.append(inter / cm[c, :].sum() * 100 if cm[c, :].sum() else math.nan)
    defined_iou = [v for v in iou if not math.isnan(v)]
    defined_acc = [v for v in acc if not math.isnan(v)]
    return {
        "cm": cm,
        "iou": iou,
        "acc": acc,
        "mIoU": sum(defined_iou) / len(defined_iou),
        "mAcc": sum(defined_acc) / len(defined_acc),
        "aAcc": np.trace(cm) / cm.sum() * 100,
    }


def assert_scores_equal(metrics, ref):
    for key in ("mIoU", "mAcc", "aAcc"):
        assert metrics[key] == pytest.approx(ref[key], rel=1e-12), key
    for row, iou, acc in zip(metrics["per_class"], ref["iou"], ref["acc"], strict=True):
        for got, want in ((row["iou"], iou), (row["acc"], acc)):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, rel=1e-12)


def make_maps(rng, n=3, k=6, shape=(17, 23)):
    """Random maps where class 5 appears nowhere, class 4 is never predicted, and class 3 is
    predicted but absent from the ground truth; some ground truth is ignored (255)."""
    preds, gts = [], []
    for _ in range(n):
        gt = rng.integers(0, 5, size=shape)  # classes 0..4
        gt[rng.random(shape) < 0.1] = 255
        gt[gt == 3] = 2
        pred = rng.integers(0, 4, size=shape)  # classes 0..3, never 4 or 5
        agree = rng.random(shape) < 0.5
        pred[agree & (gt < 4)] = gt[agree & (gt < 4)]
        preds.append(pred)
        gts.append(gt)
    return preds, gts


def test_scores_equal_independent_computation():
    rng = np.random.default_rng(0)
    preds, gts = make_maps(rng)
    cm = ConfusionMatrix(6)
    for p, g in zip(preds, gts, strict=True):
        cm.update(p, g)
    ref = reference(preds, gts, 6)
    np.testing.assert_array_equal(cm.matrix, ref["cm"])
    m = cm.metrics()
    assert_scores_equal(m, ref)
    rows = m["per_class"]
    assert math.isnan(rows[5]["iou"]) and math.isnan(rows[5]["acc"])  # absent from both sides
    assert rows[4]["iou"] == 0.0 and rows[4]["acc"] == 0.0  # in the ground truth, never predicted
    assert rows[3]["iou"] == 0.0 and math.isnan(rows[3]["acc"])  # predicted, not in the gt
    assert rows[4]["pred_pixels"] == 0 and rows[4]["gt_pixels"] > 0
    assert m["num_images"] == 3
    # NaN classes are left out of the means
    assert m["mIoU"] == pytest.approx(np.mean([r["iou"] for r in rows[:5]]))


def test_ignore_index_pixels_are_not_counted_for_prediction_either():
    gt = np.array([[0, 255], [1, 1]])
    pred = np.array([[0, 1], [1, 0]])
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, [[1, 0], [1, 1]])
    assert cm.metrics()["per_class"][1]["pred_pixels"] == 1


def test_reduce_zero_label_matches_mmseg_uint8_arithmetic():
    gt = np.array([[0, 1, 2], [150, 254, 255]], dtype=np.uint8)
    mmseg = gt.copy()
    mmseg[mmseg == 0] = 255
    mmseg = mmseg - 1
    mmseg[mmseg == 254] = 255
    out = reduce_zero_label(gt)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, mmseg.astype(np.int64))


def test_reduce_zero_label_scores_equal_independent_computation():
    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 5, size=(9, 11)).astype(np.uint8) for _ in range(2)]
    gts[0][0, :] = 255
    preds = [rng.integers(0, 4, size=(9, 11)) for _ in range(2)]
    cm = ConfusionMatrix(4)
    for p, g in zip(preds, gts, strict=True):
        cm.update(p, reduce_zero_label(g))
    reduced = []
    for g in gts:
        r = g.copy()
        r[r == 0] = 255
        r = r - 1
        r[r == 254] = 255
        reduced.append(r.astype(np.int64))
    ref = reference(preds, reduced, 4)
    np.testing.assert_array_equal(cm.matrix, ref["cm"])
    assert_scores_equal(cm.metrics(), ref)


def test_out_of_range_values_are_errors_naming_file_and_value():
    cm = ConfusionMatrix(3)
    with pytest.raises(EvaluationError, match=r"a\.png: prediction value\(s\) 7 outside"):
        cm.update(np.array([[0, 7]]), np.array([[0, 1]]), name="a.png")
    with pytest.raises(EvaluationError, match=r"ground-truth value\(s\) 3, 9 outside"):
        cm.update(np.array([[0, 1, 2]]), np.array([[3, 9, 255]]), name="b.png")
    with pytest.raises(EvaluationError, match="size 2x1 differs"):
        cm.update(np.zeros((1, 2), int), np.zeros((2, 2), int), name="c.png")
    assert cm.num_images == 0 and cm.matrix.sum() == 0
    # gt values equal to the ignore index are fine; a negative prediction is not
    assert label_problems(np.zeros((1, 2), int), np.array([[255, 0]]), 3) == []
    assert label_problems(np.array([[-1, 0]]), np.zeros((1, 2), int), 3)


def test_empty_matrix_scores_are_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing scored is no reason to warn
        m = ConfusionMatrix(2).metrics()
    assert math.isnan(m["mIoU"]) and math.isnan(m["aAcc"])


def test_one_scored_pixel_is_enough_for_every_score():
    """A single pixel of ground truth (class 1, predicted right) among ignored ones."""
    matrix = ConfusionMatrix(3, ("sky", "tree", "road"))
    matrix.update(np.array([[1, 0]]), np.array([[1, 255]]))
    scores = matrix.metrics()
    assert [row["name"] for row in scores["per_class"]] == ["sky", "tree", "road"]
    assert scores["per_class"][1] == {
        "name": "tree",
        "iou": 100.0,
        "acc": 100.0,
        "gt_pixels": 1,
        "pred_pixels": 1,
    }
    assert scores["aAcc"] == 100.0 and scores["mAcc"] == 100.0 and scores["mIoU"] == 100.0


def test_classes_absent_from_both_sides_are_nan_without_a_warning():
    """0 / 0 for a class nobody saw is an expected NaN, not a RuntimeWarning in the user's log."""
    matrix = ConfusionMatrix(3)
    matrix.update(np.array([[0, 1]]), np.array([[0, 1]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = matrix.metrics()
    assert math.isnan(scores["per_class"][2]["iou"]) and math.isnan(scores["per_class"][2]["acc"])
    assert scores["mIoU"] == 100.0


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    preds, gts = make_maps(rng, n=1)
    cm = ConfusionMatrix(6, list("abcdef"), config={"dataset": "x"}, shard=(2, 3))
    cm.update(preds[0], gts[0])
    path = tmp_path / "part.npz"
    cm.save(path)
    back = ConfusionMatrix.load(path)
    np.testing.assert_array_equal(back.matrix, cm.matrix)
    assert back.class_names == tuple("abcdef")
    assert back.config == {"dataset": "x"}
    assert back.num_images == 1 and back.shards == ((2, 3),)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EvaluationError, match=r"junk\.npz"):
        ConfusionMatrix.load(tmp_path / "junk.npz")


def test_merge_sums_and_refuses_duplicates_and_mismatches():
    rng = np.random.default_rng(3)
    preds, gts = make_maps(rng, n=4)
    whole = ConfusionMatrix(6)
    parts = [ConfusionMatrix(6, shard=(i + 1, 2)) for i in range(2)]
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        whole.update(p, g)
        parts[i % 2].update(p, g)
    merged = merge_confusions([("a", parts[0]), ("b", parts[1])])
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    assert merged.num_images == 4 and merged.missing_shards() == []
    with pytest.raises(EvaluationError, match="duplicate shard"):
        merge_confusions([("a", parts[0]), ("a again", parts[0])])
    with pytest.raises(EvaluationError, match="overlap"):
        merge_confusions([("a", parts[0]), ("c", ConfusionMatrix(6, shard=(2, 3)))])
    with pytest.raises(EvaluationError, match="different classes"):
        merge_confusions([("a", parts[0]), ("d", ConfusionMatrix(5, shard=(2, 2)))])
    with pytest.raises(EvaluationError, match=r"different settings \(dataset\)"):
        merge_confusions(
            [("a", parts[0]), ("e", ConfusionMatrix(6, config={"dataset": "y"}, shard=(2, 2)))]
        )
    assert merge_confusions([("a", parts[0])]).missing_shards() == [(2, 2)]


def test_ignore_index_inside_class_range_is_refused():
    with pytest.raises(EvaluationError, match="ignore index 3"):
        ConfusionMatrix(5, ignore_index=3)


def test_merge_keeps_the_first_parts_settings_and_names_the_part_that_does_not_fit():
    """Three shards (the first is not only copied: every part adds), named classes and another
    ignore index survive the merge; a part that does not fit is named, with a preview of both
    class lists."""
    names = ("sky", "tree", "road", "car", "bike")
    parts = [ConfusionMatrix(5, names, ignore_index=254, shard=(i, 3)) for i in (1, 2, 3)]
    for i, part in enumerate(parts):
        part.matrix[i, i] = 10 * (i + 1)
        part.num_images = 1
    merged = merge_confusions([(f"part{i}", p) for i, p in enumerate(parts)])
    assert np.diag(merged.matrix)[:3].tolist() == [10, 20, 30]
    assert merged.class_names == names and merged.ignore_index == 254
    assert merged.num_images == 3 and merged.missing_shards() == []
    other = ConfusionMatrix(5, ("a", "b", "c", "d", "e"), ignore_index=254, shard=(2, 3))
    with pytest.raises(EvaluationError) as err:
        merge_confusions([("first", parts[0]), ("odd.npz", other)])
    assert str(err.value) == (
        "odd.npz has different classes (5: a, b, c, ...) than the first (5: sky, tree, road, ...)"
    )
    with pytest.raises(EvaluationError) as err:
        merge_confusions([("first", parts[0]), ("x.npz", ConfusionMatrix(5, names, shard=(2, 3)))])
    assert str(err.value) == "x.npz uses ignore index 255, the first 254"
    with pytest.raises(EvaluationError, match=r"^nothing to merge$"):
        merge_confusions([])


def test_merging_leaves_the_parts_alone_and_names_every_missing_shard():
    first = ConfusionMatrix(3, shard=(2, 4))
    first.matrix[0, 0] = 5
    second = ConfusionMatrix(3, shard=(4, 4))
    second.matrix[1, 1] = 7
    merged = merge_confusions([("b", first), ("d", second)])
    assert merged.matrix[0, 0] == 5 and merged.matrix[1, 1] == 7
    assert first.matrix[1, 1] == 0 and second.matrix[0, 0] == 0  # inputs unchanged
    assert merged.missing_shards() == [(1, 4), (3, 4)]


def test_another_ignore_index_is_the_one_checked_and_skipped():
    matrix = ConfusionMatrix(3, ("a", "b", "c"), ignore_index=200)
    matrix.update(np.array([[0, 1]]), np.array([[200, 1]]), name="x.png")
    assert matrix.matrix.sum() == 1  # the 200 pixel is not scored, and is no error
    with pytest.raises(EvaluationError) as err:
        matrix.update(np.array([[0, 1]]), np.array([[255, 1]]), name="y.png")
    assert str(err.value) == (
        "ground truth of y.png: ground-truth value(s) 255 outside the class range 0..2 "
        "(ignore index 200)"
    )


def test_update_without_a_name_calls_the_maps_prediction_and_lists_every_problem():
    matrix = ConfusionMatrix(3)
    with pytest.raises(EvaluationError) as err:
        matrix.update(np.array([[0, 7]]), np.array([[9, 1]]))
    assert str(err.value) == (
        "prediction: prediction value(s) 7 outside the class range 0..2; "
        "ground truth of prediction: ground-truth value(s) 9 outside the class range 0..2 "
        "(ignore index 255)"
    )


def test_merging_directly_names_the_confusion_matrix_and_each_differing_setting():
    """Without a name the part is "confusion matrix"; a class list of at most three names is
    shown whole; only the settings that differ are listed."""
    config = {"dataset": "x", "model": "m", "protocol": "p"}
    first = ConfusionMatrix(2, ("sky", "tree"), config=config)
    three = ConfusionMatrix(3, ("sky", "tree", "road"), config=config)
    expected = (
        "confusion matrix has different classes (3: sky, tree, road) than the first (2: sky, tree)"
    )
    for call in (first.check_compatible, first.merge):
        with pytest.raises(EvaluationError) as err:
            call(three)
        assert str(err.value) == expected
    other = ConfusionMatrix(
        2, ("sky", "tree"), config={"dataset": "y", "model": "n", "protocol": "p"}, shard=(1, 2)
    )
    for call in (first.check_compatible, first.merge):
        with pytest.raises(EvaluationError) as err:
            call(other)
        assert str(err.value) == (
            "confusion matrix was made with different settings (dataset, model) than the first"
        )
    assert first.num_images == 0 and first.shards == ((1, 1),)  # a refused merge changes nothing


def test_a_shard_of_another_split_names_all_shards_merged_so_far():
    halves = [("a", ConfusionMatrix(2, shard=(1, 2))), ("b", ConfusionMatrix(2, shard=(2, 2)))]
    third = ConfusionMatrix(2, shard=(3, 3))
    with pytest.raises(EvaluationError) as err:
        merge_confusions([*halves, ("c.npz", third)])
    assert str(err.value) == (
        "c.npz is shard 3/3, which does not split the inputs like shard 1/2, 2/2: "
        "their parts overlap"
    )


def write_matrix_file(path, matrix, **meta):
    """An ``.npz`` as :meth:`ConfusionMatrix.save` writes it, with the given matrix and meta."""
    fields = {
        "format_version": 1,
        "class_names": ["a", "b"],
        "ignore_index": 255,
        "num_images": 1,
        "config": {},
        "shards": [[1, 1]],
    }
    fields.update(meta)
    np.savez(path, matrix=np.asarray(matrix), meta=np.array(json.dumps(fields)))


def test_loading_refuses_missing_newer_and_misshapen_files_with_their_path(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(EvaluationError) as err:
        ConfusionMatrix.load(missing)
    assert str(err.value) == f"{missing}: no such file"
    newer = tmp_path / "newer.npz"
    write_matrix_file(newer, np.zeros((2, 2), np.int64), format_version=2)
    with pytest.raises(EvaluationError) as err:
        ConfusionMatrix.load(newer)
    assert str(err.value) == f"{newer}: unsupported confusion-matrix format 2"
    misshapen = tmp_path / "misshapen.npz"
    write_matrix_file(misshapen, np.zeros((3, 3), np.int64))
    with pytest.raises(EvaluationError) as err:
        ConfusionMatrix.load(misshapen)
    assert str(err.value) == f"{misshapen}: matrix shape (3, 3) does not match 2 classes"


def test_a_file_without_per_image_rows_loads_with_no_rows(tmp_path):
    """Files written before per-image scores were kept have no ``per_image``."""
    path = tmp_path / "older.npz"
    write_matrix_file(path, [[3, 1], [0, 2]])
    back = ConfusionMatrix.load(path)
    assert back.per_image == []
    assert back.matrix.tolist() == [[3, 1], [0, 2]] and back.num_images == 1


def test_a_matrix_stored_in_a_narrow_integer_type_counts_on_past_its_range(tmp_path):
    path = tmp_path / "narrow.npz"
    write_matrix_file(path, np.array([[250, 0], [0, 0]], dtype=np.uint8))
    back = ConfusionMatrix.load(path)
    back.update(np.zeros((2, 5), int), np.zeros((2, 5), int))
    assert back.matrix.tolist() == [[260, 0], [0, 0]]


def test_a_loaded_matrix_keeps_its_ignore_index(tmp_path):
    saved = ConfusionMatrix(3, ("a", "b", "c"), ignore_index=200)
    saved.save(tmp_path / "m.npz")
    back = ConfusionMatrix.load(tmp_path / "m.npz")
    assert back.ignore_index == 200
    back.update(np.array([[0, 1]]), np.array([[200, 1]]))  # 200 is not scored, and no error
    assert back.matrix.sum() == 1


def test_label_problems_name_the_maps_prediction_and_ground_truth_by_default():
    problems = label_problems(np.array([[0, 7]]), np.array([[9, 1]]), 3)
    assert problems == [
        "prediction: prediction value(s) 7 outside the class range 0..2",
        "ground truth: ground-truth value(s) 9 outside the class range 0..2 (ignore index 255)",
    ]
    one_bad_pixel = label_problems(np.array([[5]]), np.array([[0]]), 3)
    assert one_bad_pixel == ["prediction: prediction value(s) 5 outside the class range 0..2"]


def test_label_problems_of_a_map_that_is_not_2d_or_ground_truth_that_is_all_ignored():
    assert label_problems(np.zeros((2, 2), int), np.zeros((2, 2, 3), int), 3) == [
        "prediction: expected [H, W] label maps, got (2, 2) and (2, 2, 3)"
    ]
    assert label_problems(
        np.zeros((2, 2, 3), int), np.zeros((2, 2), int), 3, pred_name="p.png"
    ) == ["p.png: expected [H, W] label maps, got (2, 2, 3) and (2, 2)"]
    all_ignored = np.full((2, 3), 255)
    assert label_problems(np.zeros((2, 3), int), all_ignored, 3) == []


def test_bad_values_are_listed_up_to_five_and_the_class_count_itself_is_out_of_range():
    zeros = np.zeros((1, 6), int)
    assert label_problems(np.array([[0, 3, 1, 2, 0, 0]]), zeros, 3) == [
        "prediction: prediction value(s) 3 outside the class range 0..2"
    ]
    five = np.array([[3, 4, 5, 6, 7, 0]])
    assert label_problems(five, zeros, 3) == [
        "prediction: prediction value(s) 3, 4, 5, 6, 7 outside the class range 0..2"
    ]
    six = np.array([[3, 4, 5, 6, 7, 8]])
    assert label_problems(six, zeros, 3) == [
        "prediction: prediction value(s) 3, 4, 5, 6, 7, ... outside the class range 0..2"
    ]


def test_one_class_is_enough_and_none_is_refused():
    single = ConfusionMatrix(1, ["thing"])
    single.update(np.zeros((2, 2), int), np.array([[0, 0], [255, 0]]))
    assert single.matrix.tolist() == [[3]] and single.metrics()["mIoU"] == 100.0
    with pytest.raises(EvaluationError) as err:
        ConfusionMatrix(0)
    assert str(err.value) == "number of classes must be at least 1, got 0"


def test_class_names_and_ignore_index_are_checked_with_their_messages():
    with pytest.raises(EvaluationError) as err:
        ConfusionMatrix(3, ["a", "b"])
    assert str(err.value) == "2 class names given for 3 classes"
    with pytest.raises(EvaluationError) as err:
        ConfusionMatrix(3, ignore_index=0)
    assert str(err.value) == "ignore index 0 is a class index (0..2)"
    just_past = ConfusionMatrix(3, ignore_index=3)  # one past the last class is not a class
    just_past.update(np.array([[0, 2]]), np.array([[3, 2]]))
    assert just_past.matrix.sum() == 1


def test_the_saved_file_holds_integer_counts_and_a_json_config(tmp_path):
    """Settings that are not JSON types (a path) are kept as text, as they read back."""
    matrix = ConfusionMatrix(2, config={"data": Path("/data/voc"), "scale": 40})
    matrix.update(np.array([[0, 1]]), np.array([[0, 0]]))
    assert matrix.config == {"data": "/data/voc", "scale": 40}
    matrix.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert data["matrix"].dtype == np.int64
        assert data["matrix"].tolist() == [[1, 1], [0, 0]]
    assert ConfusionMatrix.load(tmp_path / "m.npz").config == matrix.config
