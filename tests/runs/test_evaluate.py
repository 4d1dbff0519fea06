"""``evaluate``: pairing, checks, injected segmentation sources, sharding, on generated folders."""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix

from scclip_cli.errors import EvaluationError, UsageError
from scclip_cli.maps.metrics import reduce_zero_label
from scclip_cli.runs.evaluate import (
    EvalSample,
    evaluate,
    merge_results,
    pair_predictions,
)

K = 5


def write_label(path: Path, labels: np.ndarray, *, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


def write_image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_pair(rng, shape, k=K):
    """A ground truth with ignored pixels (class k-1 never appears) and a half-right prediction
    that never predicts class k-2."""
    gt = rng.integers(0, k - 1, size=shape)
    gt[rng.random(shape) < 0.1] = 255
    pred = rng.integers(0, k - 2, size=shape)
    right = (rng.random(shape) < 0.6) & (gt < k - 2)
    pred[right] = gt[right]
    return pred, gt


def reference_matrix(preds, gts, k, rzl=False):
    g = np.concatenate([x.ravel() for x in gts]).astype(np.int64)
    p = np.concatenate([x.ravel() for x in preds])
    if rzl:
        g8 = g.astype(np.uint8)
        g8[g8 == 0] = 255
        g8 = g8 - 1
        g8[g8 == 254] = 255
        g = g8.astype(np.int64)
    valid = g != 255
    return confusion_matrix(g[valid], p[valid], labels=list(range(k)))


def reference_miou(cm):
    inter = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - inter
    ious = [i / u * 100 for i, u in zip(inter, union, strict=True) if u > 0]
    return sum(ious) / len(ious)


@pytest.fixture
def folders(tmp_path):
    """pred/ and gt/ with nested folders, decoys in pred/, and the arrays written."""
    rng = np.random.default_rng(0)
    pairs = {}
    for key, shape in (("a", (12, 16)), ("sub/b", (9, 7)), ("sub/deeper/c", (5, 5))):
        pred, gt = make_pair(rng, shape)
        write_label(tmp_path / "pred" / f"{key}.png", pred, palette=True)
        write_label(tmp_path / "gt" / f"{key}.png", gt)
        pairs[key] = (pred, gt)
    # what 'scclip segment' writes beside the masks, and a hidden file: all ignored
    write_label(tmp_path / "pred" / "a_color.png", np.zeros((2, 2)))
    (tmp_path / "pred" / "a.json").write_text("{}")
    (tmp_path / "pred" / "a_overlay.jpg").write_bytes(b"")
    write_label(tmp_path / "pred" / ".hidden.png", np.zeros((2, 2)))
    return tmp_path, pairs


def test_pred_folders_score_like_sklearn(folders):
    root, pairs = folders
    result = evaluate(pred_dir=root / "pred", gt_dir=root / "gt", num_classes=K, progress=False)
    preds = [p for p, _ in pairs.values()]
    gts = [g for _, g in pairs.values()]
    cm = reference_matrix(preds, gts, K)
    np.testing.assert_array_equal(result.confusion.matrix, cm)
    m = result.metrics
    assert m["mIoU"] == pytest.approx(reference_miou(cm), rel=1e-12)
    assert m["num_images"] == 3
    assert math.isnan(m["per_class"][K - 1]["iou"])  # absent from both sides
    assert m["per_class"][K - 2]["iou"] == 0.0  # in the ground truth, never predicted
    assert result.config["num_classes"] == K


def test_reduce_zero_label_applies_to_ground_truth_only(folders):
    root, pairs = folders
    result = evaluate(
        pred_dir=root / "pred", gt_dir=root / "gt", num_classes=K, reduce_zero_label=True
    )
    preds = [p for p, _ in pairs.values()]
    gts = [g for _, g in pairs.values()]
    np.testing.assert_array_equal(
        result.confusion.matrix, reference_matrix(preds, gts, K, rzl=True)
    )
    assert result.config["reduce_zero_label"] is True


def test_vocab_gives_names_and_count(folders, tmp_path):
    root, _ = folders
    vocab = tmp_path / "v.txt"
    vocab.write_text("sky, clouds\nroad\ncar\nperson\ntree\n")
    result = evaluate(pred_dir=root / "pred", gt_dir=root / "gt", vocab=vocab)
    assert [r["name"] for r in result.metrics["per_class"]] == [
        "sky",
        "road",
        "car",
        "person",
        "tree",
    ]
    vocab.write_text("a\nb\n")
    with pytest.raises(EvaluationError, match=r"value\(s\) 2"):
        evaluate(pred_dir=root / "pred", gt_dir=root / "gt", vocab=vocab)


def test_suffixes_are_stripped_for_pairing(tmp_path):
    rng = np.random.default_rng(1)
    pred, gt = make_pair(rng, (4, 6))
    write_label(tmp_path / "pred/frankfurt/f_000_leftImg8bit.png", pred)
    write_label(tmp_path / "gt/frankfurt/f_000_gtFine_labelTrainIds.png", gt)
    write_label(tmp_path / "gt/frankfurt/f_000_gtFine_labelIds.png", gt + 7)  # skipped
    samples = pair_predictions(
        tmp_path / "pred",
        tmp_path / "gt",
        gt_suffix="_gtFine_labelTrainIds",
        pred_suffix="_leftImg8bit",
    )
    assert [s.key for s in samples] == ["frankfurt/f_000"]
    # the suffix may include the extension
    samples = pair_predictions(
        tmp_path / "pred",
        tmp_path / "gt",
        gt_suffix="_gtFine_labelTrainIds.png",
        pred_suffix="_leftImg8bit.png",
    )
    assert samples[0].gt.name == "f_000_gtFine_labelTrainIds.png"


def test_unmatched_files_are_all_listed(folders):
    root, _ = folders
    (root / "pred/sub/b.png").unlink()
    write_label(root / "pred/extra.png", np.zeros((3, 3)))
    with pytest.raises(EvaluationError) as err:
        evaluate(pred_dir=root / "pred", gt_dir=root / "gt", num_classes=K)
    text = str(err.value)
    assert "unmatched files (2)" in text
    assert "missing prediction for ground truth" in text and str(root / "gt/sub/b.png") in text
    assert "no ground truth for prediction" in text and str(root / "pred/extra.png") in text


def test_all_problems_listed_before_scoring(folders):
    root, _pairs = folders
    write_label(root / "pred/a.png", np.zeros((3, 3)))  # size mismatch
    (root / "gt/sub/deeper/c.png").write_bytes(b"not a png")  # unreadable
    with pytest.raises(EvaluationError) as err:
        evaluate(pred_dir=root / "pred", gt_dir=root / "gt", num_classes=K)
    text = str(err.value)
    assert "problems (2)" in text
    assert f"{root / 'pred/a.png'} is 3x3, ground truth {root / 'gt/a.png'} is 16x12" in text
    assert str(root / "gt/sub/deeper/c.png") in text


def test_value_problems_found_in_the_streaming_pass_are_all_listed(folders):
    root, pairs = folders
    pred, _gt = pairs["a"]
    bad_pred = pred.copy()
    bad_pred[0, 0] = 9
    write_label(root / "pred/a.png", bad_pred)
    bad_gt = pairs["sub/b"][1].copy()
    bad_gt[0, 0] = 6
    write_label(root / "gt/sub/b.png", bad_gt)
    with pytest.raises(EvaluationError) as err:
        evaluate(pred_dir=root / "pred", gt_dir=root / "gt", num_classes=K)
    text = str(err.value)
    assert "nothing was scored" in text
    assert f"{root / 'pred/a.png'}: prediction value(s) 9 outside the class range 0..4" in text
    assert f"{root / 'gt/sub/b.png'}: ground-truth value(s) 6 outside" in text


def test_problem_listing_is_capped(tmp_path):
    for i in range(25):
        write_label(tmp_path / "gt" / f"{i:02d}.png", np.zeros((2, 2)))
    (tmp_path / "pred").mkdir()
    with pytest.raises(EvaluationError) as err:
        evaluate(pred_dir=tmp_path / "pred", gt_dir=tmp_path / "gt", num_classes=2)
    text = str(err.value)
    assert "unmatched files (25)" in text and "... and 5 more" in text
    assert text.count("missing prediction") == 20


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--gt is needed"):
        evaluate(pred_dir=tmp_path)
    with pytest.raises(UsageError, match="exactly one of --pred"):
        evaluate(gt_dir=tmp_path)
    with pytest.raises(UsageError, match="--data-root"):
        evaluate(dataset="voc21")
    with pytest.raises(EvaluationError, match="no such folder"):
        evaluate(pred_dir=tmp_path / "x", gt_dir=tmp_path, num_classes=2)


def test_shards_merge_to_the_single_run(tmp_path):
    rng = np.random.default_rng(4)
    for i in range(7):
        pred, gt = make_pair(rng, (6 + i, 5))
        write_label(tmp_path / "pred" / f"{i}.png", pred)
        write_label(tmp_path / "gt" / f"{i}.png", gt)
    kwargs = {"pred_dir": tmp_path / "pred", "gt_dir": tmp_path / "gt", "num_classes": K}
    single = evaluate(**kwargs)
    paths = []
    for i in (1, 2, 3):
        part = evaluate(**kwargs, shard=f"{i}/3")
        assert part.confusion.num_images == len(range(i - 1, 7, 3))
        paths.append(tmp_path / f"part{i}.npz")
        part.confusion.save(paths[-1])
    merged = merge_results(paths)
    np.testing.assert_array_equal(merged.confusion.matrix, single.confusion.matrix)
    assert repr(merged.metrics) == repr(single.metrics)  # NaN-aware equality
    assert merged.notes == []
    with pytest.raises(EvaluationError, match="duplicate shard"):
        merge_results([paths[0], paths[1], paths[0]])
    assert "3/3 not merged" in merge_results(paths[:2]).notes[0]
    # a shard of a different sample list is refused
    other = evaluate(**kwargs, shard="3/3", limit=6)
    other.confusion.save(tmp_path / "other.npz")
    with pytest.raises(EvaluationError, match="different settings"):
        merge_results([paths[0], tmp_path / "other.npz"])


def test_limit_takes_the_first_sorted(folders):
    root, _ = folders
    result = evaluate(pred_dir=root / "pred", gt_dir=root / "gt", num_classes=K, limit=2)
    assert result.metrics["num_images"] == 2
    assert result.config["num_samples"] == 2


class FakeSegmenter:
    """Yields stored label maps for the samples, as a segmentation source."""

    def __init__(self, labels: dict[str, np.ndarray]):
        self.labels = labels
        self.seen: list[str] = []

    def __call__(self, samples):
        for s in samples:
            assert s.image is not None and s.image.is_file()
            self.seen.append(s.key)
            yield s.key, self.labels[s.key]


def test_images_mode_with_injected_source(tmp_path):
    rng = np.random.default_rng(5)
    labels, gts = {}, []
    for key in ("x", "y/z"):
        pred, gt = make_pair(rng, (8, 10))
        write_image(tmp_path / "img" / f"{key}.jpg", (10, 8))
        write_label(tmp_path / "gt" / f"{key}.png", gt)
        labels[key] = pred
        gts.append(gt)
    fake = FakeSegmenter(labels)
    result = evaluate(
        images_dir=tmp_path / "img",
        gt_dir=tmp_path / "gt",
        num_classes=K,
        predict=fake,
        save_pred=tmp_path / "saved",
    )
    assert fake.seen == ["x", "y/z"]
    np.testing.assert_array_equal(
        result.confusion.matrix, reference_matrix(list(labels.values()), gts, K)
    )
    saved = np.asarray(Image.open(tmp_path / "saved/y/z.png"))
    np.testing.assert_array_equal(saved, labels["y/z"])


def test_images_mode_checks_sizes_before_segmenting(tmp_path):
    write_image(tmp_path / "img/x.jpg", (10, 8))
    write_label(tmp_path / "gt/x.png", np.zeros((8, 9)))
    fake = FakeSegmenter({})
    with pytest.raises(EvaluationError, match="size mismatch: image"):
        evaluate(images_dir=tmp_path / "img", gt_dir=tmp_path / "gt", num_classes=2, predict=fake)
    assert fake.seen == []


def test_bad_prediction_from_the_source_stops_at_once(tmp_path):
    for key in ("a", "b"):
        write_image(tmp_path / "img" / f"{key}.png", (4, 3))
        write_label(tmp_path / "gt" / f"{key}.png", np.zeros((3, 4)))
    fake = FakeSegmenter({"a": np.full((3, 4), 7), "b": np.zeros((3, 4), int)})
    with pytest.raises(EvaluationError, match=r"prediction for .*a\.png: prediction value\(s\) 7"):
        evaluate(images_dir=tmp_path / "img", gt_dir=tmp_path / "gt", num_classes=2, predict=fake)
    assert fake.seen == ["a"]


def test_dataset_mode_uses_the_dataset_conventions(tmp_path):
    """VOC20 on a tiny VOC layout: background (0) not scored, 255 ignored, 20 classes."""
    root = tmp_path / "VOCdevkit/VOC2012"
    rng = np.random.default_rng(6)
    labels, gts = {}, []
    keys = ["2007_000001", "2007_000002", "2007_000003"]
    for key in keys:
        gt = rng.integers(0, 21, size=(6, 8))
        gt[0, :] = 255
        pred = rng.integers(0, 20, size=(6, 8))
        write_image(root / "JPEGImages" / f"{key}.jpg", (8, 6))
        write_label(root / "SegmentationClass" / f"{key}.png", gt)
        labels[key] = pred
        gts.append(gt)
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(keys))
    result = evaluate(dataset="voc20", data_root=tmp_path, predict=FakeSegmenter(labels))
    np.testing.assert_array_equal(
        result.confusion.matrix, reference_matrix(list(labels.values()), gts, 20, rzl=True)
    )
    assert result.confusion.class_names[0] == "aeroplane"
    assert result.config["dataset"] == "voc20" and result.config["reduce_zero_label"] is True

    # the same dataset scored from saved predictions, keyed like 'scclip segment' names masks
    for key, pred in labels.items():
        write_label(tmp_path / "masks" / f"{key}.png", pred)
    from_files = evaluate(dataset="voc20", data_root=tmp_path, pred_dir=tmp_path / "masks")
    np.testing.assert_array_equal(from_files.confusion.matrix, result.confusion.matrix)
    (tmp_path / "masks/2007_000002.png").unlink()
    with pytest.raises(EvaluationError, match=r"missing prediction .*2007_000002\.png"):
        evaluate(dataset="voc20", data_root=tmp_path, pred_dir=tmp_path / "masks")

    limited = evaluate(dataset="voc20", data_root=tmp_path, predict=FakeSegmenter(labels), limit=1)
    assert limited.metrics["num_images"] == 1
    assert reduce_zero_label(np.array([0, 1, 255])).tolist() == [255, 0, 255]


def test_sample_is_plain_data():
    s = EvalSample("k", gt=Path("g.png"))
    assert s.pred is None and s.image is None


@pytest.mark.slow
def test_end_to_end_with_the_real_segmenter(tmp_path):
    from scclip_cli.config import ProtocolConfig
    from scclip_cli.predict.segmenter import Segmenter

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("background, sky\ncat\ndog\n")
    # no skip on any error: a missing module or an unimplemented load is a failure here
    seg = Segmenter.load(
        vocab=vocab,
        model="scclip-tiny",
        pretrained="random:7",
        device="cpu",
        protocol=ProtocolConfig(short_side=224),  # one window per image: fast
    )
    rng = np.random.default_rng(7)
    for key in ("p", "q"):
        write_image(tmp_path / "img" / f"{key}.png", (40, 30))
        gt = rng.integers(0, 3, size=(30, 40))
        gt[0] = 255
        write_label(tmp_path / "gt" / f"{key}.png", gt)
    result = evaluate(
        images_dir=tmp_path / "img",
        gt_dir=tmp_path / "gt",
        segmenter=seg,
        save_pred=tmp_path / "saved",
    )
    assert result.metrics["num_images"] == 2
    assert result.confusion.matrix.sum() == 2 * 29 * 40  # the first row is ignored
    assert result.confusion.class_names == ("background", "cat", "dog")
    assert result.config["segmenter"]["model"] == "scclip-tiny"
    # the streamed predictions are what the segmenter gives image by image
    saved = np.asarray(Image.open(tmp_path / "saved/q.png"))
    np.testing.assert_array_equal(saved, seg.segment(tmp_path / "img/q.png").labels)
    again = evaluate(pred_dir=tmp_path / "saved", gt_dir=tmp_path / "gt", vocab=vocab)
    np.testing.assert_array_equal(again.confusion.matrix, result.confusion.matrix)


class FakeEngine:
    """The parts of the Segmenter interface that ``evaluate`` uses."""

    def __init__(self, num_classes: int):
        self.class_names = tuple(f"c{k}" for k in range(num_classes))
        self.calls = 0
        self.asked_for_confidence: list[bool] = []

    def describe(self):
        return {"model": "fake", "device": "cpu", "protocol": {"short_side": 336}}

    def segment_many(self, images, *, confidence=True, statistics=False):
        self.asked_for_confidence.append(confidence)
        for image in images:
            self.calls += 1
            labels = (image[..., 0] % len(self.class_names)).astype(np.int32)
            yield types.SimpleNamespace(labels=labels, class_names=self.class_names)


def test_loaded_segmenter_is_streamed_and_described(tmp_path):
    rng = np.random.default_rng(8)
    preds, gts = [], []
    for key in ("m", "n"):
        write_image(tmp_path / "img" / f"{key}.png", (7, 5))
        rgb = np.asarray(Image.open(tmp_path / "img" / f"{key}.png"))
        preds.append(rgb[..., 0] % 3)
        gts.append(rng.integers(0, 3, size=(5, 7)))
        write_label(tmp_path / "gt" / f"{key}.png", gts[-1])
    engine = FakeEngine(3)
    result = evaluate(
        images_dir=tmp_path / "img",
        gt_dir=tmp_path / "gt",
        segmenter=engine,
        save_pred=tmp_path / "saved",
        shard="1/1",
    )
    assert engine.calls == 2
    assert engine.asked_for_confidence and not any(engine.asked_for_confidence)  # labels only
    np.testing.assert_array_equal(result.confusion.matrix, reference_matrix(preds, gts, 3))
    assert result.confusion.class_names == ("c0", "c1", "c2")
    # the description is recorded, the device only as run information (shards may differ)
    assert result.confusion.config["segmenter"] == {
        "model": "fake",
        "protocol": {"short_side": 336},
    }
    assert result.config["device"] == "cpu"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "saved/n.png")), preds[1])
    with pytest.raises(UsageError, match="--save-pred"):
        evaluate(
            pred_dir=tmp_path / "saved",
            gt_dir=tmp_path / "gt",
            num_classes=3,
            save_pred=tmp_path / "again",
        )


def test_unreadable_image_stops_with_its_name(tmp_path):
    write_image(tmp_path / "img/a.png", (4, 3))
    write_label(tmp_path / "gt/a.png", np.zeros((3, 4)))
    (tmp_path / "img/b.png").write_bytes(b"\x89PNG broken")
    write_label(tmp_path / "gt/b.png", np.zeros((3, 4)))
    with pytest.raises(EvaluationError, match=r"problems \(1\).*\n.*img/b\.png: "):
        evaluate(images_dir=tmp_path / "img", gt_dir=tmp_path / "gt", segmenter=FakeEngine(2))
