"""``scclip eval`` through the CLI entry point: tables, JSON, chart, sharding and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main

K = 4


def write_label(path: Path, labels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L").save(path)


@pytest.fixture
def folders(tmp_path):
    """Two images with a known confusion over 4 classes (class 3 absent everywhere)."""
    gt_a = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred_a = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    gt_b = np.array([[2, 2, 2], [0, 1, 2]])
    pred_b = np.array([[2, 2, 0], [0, 1, 2]])
    write_label(tmp_path / "gt/a.png", gt_a)
    write_label(tmp_path / "pred/a.png", pred_a)
    write_label(tmp_path / "gt/b.png", gt_b)
    write_label(tmp_path / "pred/b.png", pred_b)
    (tmp_path / "vocab.txt").write_text("background\ncat, kitty\ndog\nbird\n")
    return tmp_path


def expected_scores():
    # rows gt, cols pred, from the maps above (ignored pixel dropped)
    cm = np.array([[4, 1, 0, 0], [0, 3, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]])
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = inter[:3] / union[:3] * 100
    acc = inter[:3] / cm.sum(1)[:3] * 100
    return iou, acc, inter.sum() / cm.sum() * 100


def run(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_pred_mode_prints_table_and_writes_json_and_chart(folders, capsys):
    report = folders / "out/report.json"
    chart = folders / "out/chart.png"
    matrix = folders / "out/cm.npz"
    args = ["eval", "--pred", str(folders / "pred"), "--gt", str(folders / "gt")]
    args += ["--vocab", str(folders / "vocab.txt"), "--json", str(report), "--chart", str(chart)]
    rc, out, err = run([*args, "--save-confusion", str(matrix)], capsys)
    assert rc == 0, err
    assert err.endswith(f"wrote {matrix}, {report}, {chart}\n"), err
    assert matrix.is_file()
    iou, acc, aacc = expected_scores()
    for name in ("background", "cat", "dog", "bird", "mIoU", "mAcc", "aAcc"):
        assert name in out
    assert f"{iou.mean():.2f}" in out and f"{acc.mean():.2f}" in out and f"{aacc:.2f}" in out
    assert f"{iou[1]:.2f}" in out

    data = json.loads(report.read_text())
    assert data["mIoU"] == pytest.approx(iou.mean())
    assert data["mAcc"] == pytest.approx(acc.mean())
    assert data["aAcc"] == pytest.approx(aacc)
    assert data["num_images"] == 2
    assert [c["name"] for c in data["per_class"]] == ["background", "cat", "dog", "bird"]
    bird = data["per_class"][3]
    assert bird == {"name": "bird", "iou": None, "acc": None, "gt_pixels": 0, "pred_pixels": 0}
    assert data["per_class"][0]["gt_pixels"] == 5 and data["per_class"][0]["pred_pixels"] == 5
    assert data["config"]["num_classes"] == 4 and data["config"]["reduce_zero_label"] is False
    assert data["config"]["ignore_index"] == 255

    with Image.open(chart) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 4 * 10

    report.unlink()
    rc, quiet_out, err = run([*args, "-q"], capsys)
    assert (rc, err, quiet_out) == (0, "", out)  # --quiet: the table alone
    assert json.loads(report.read_text()) == data


def test_num_classes_and_reduce_zero_label(folders, capsys):
    rc, out, err = run(
        [
            "eval",
            "--pred",
            str(folders / "pred"),
            "--gt",
            str(folders / "gt"),
            "--num-classes",
            "3",
            "--reduce-zero-label",
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, err
    assert "class 0" in out and "class 2" in out


def test_missing_files_exit_2_naming_them(folders, capsys):
    (folders / "pred/b.png").unlink()
    write_label(folders / "pred/c.png", [[0]])
    rc, out, err = run(
        [
            "eval",
            "--pred",
            str(folders / "pred"),
            "--gt",
            str(folders / "gt"),
            "--num-classes",
            "4",
        ],
        capsys,
    )
    assert rc == 2
    assert str(folders / "gt/b.png") in err and str(folders / "pred/c.png") in err
    assert "mIoU" not in out


def test_size_mismatch_exit_2(folders, capsys):
    write_label(folders / "pred/b.png", np.zeros((5, 5)))
    rc, out, err = run(
        [
            "eval",
            "--pred",
            str(folders / "pred"),
            "--gt",
            str(folders / "gt"),
            "--num-classes",
            "4",
        ],
        capsys,
    )
    assert rc == 2
    assert "size mismatch" in err and str(folders / "pred/b.png") in err
    assert "mIoU" not in out


def test_out_of_range_value_exit_2(folders, capsys):
    write_label(folders / "pred/a.png", np.full((2, 4), 4))
    rc, out, err = run(
        [
            "eval",
            "--pred",
            str(folders / "pred"),
            "--gt",
            str(folders / "gt"),
            "--num-classes",
            "4",
        ],
        capsys,
    )
    assert rc == 2
    assert f"{folders / 'pred/a.png'}: prediction value(s) 4 outside the class range 0..3" in err
    assert "mIoU" not in out


def test_usage_errors_exit_2(folders, capsys):
    rc, _, err = run(["eval", "--gt", str(folders / "gt"), "--num-classes", "4"], capsys)
    assert rc == 2 and "--pred" in err
    rc, _, err = run(["eval", "--pred", str(folders / "pred"), "--gt", str(folders / "gt")], capsys)
    assert rc == 2 and "--num-classes" in err
    rc, _, err = run(["eval", "stray.npz", "--pred", "x", "--gt", "y"], capsys)
    assert rc == 2 and "--merge" in err
    rc, _, err = run(["eval", "--merge", "a.npz", "--pred", "x", "--gt", "y"], capsys)
    assert rc == 2 and "--merge combines saved matrices; drop --pred, --gt\n" in err
    rc, _, err = run(["eval", "--dataset", "voc21", "--data-root", str(folders / "nope")], capsys)
    assert rc == 2 and "no such folder" in err


def test_sharded_runs_merge_to_the_single_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(5):
        write_label(tmp_path / "gt" / f"{i}.png", rng.integers(0, K, (4, 6)))
        write_label(tmp_path / "pred" / f"{i}.png", rng.integers(0, K, (4, 6)))
    base = [
        "eval",
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(tmp_path / "gt"),
        "--num-classes",
        str(K),
        "-q",
    ]
    assert run([*base, "--json", str(tmp_path / "single.json")], capsys)[0] == 0
    parts = []
    for i in (1, 2):
        parts.append(str(tmp_path / f"part{i}.npz"))
        rc, _, err = run([*base, "--shard", f"{i}/2", "--save-confusion", parts[-1]], capsys)
        assert rc == 0, err
    rc, _out, err = run(
        ["eval", "--merge", *parts, "--json", str(tmp_path / "merged.json")], capsys
    )
    assert rc == 0, err
    single = json.loads((tmp_path / "single.json").read_text())
    merged = json.loads((tmp_path / "merged.json").read_text())
    for key in ("mIoU", "mAcc", "aAcc", "per_class", "num_images"):
        assert merged[key] == single[key]
    rc, _, err = run(["eval", "--merge", parts[0], parts[0]], capsys)
    assert rc == 2 and "duplicate shard" in err


def test_dataset_mode_with_saved_predictions(tmp_path, capsys):
    root = tmp_path / "ade/ADEChallengeData2016"
    for key in ("ADE_val_00000001", "ADE_val_00000002"):
        (root / "images/validation").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (5, 3)).save(root / "images/validation" / f"{key}.jpg")
        write_label(root / "annotations/validation" / f"{key}.png", np.full((3, 5), 3))
        write_label(tmp_path / "masks" / f"{key}.png", np.full((3, 5), 2))
    rc, _out, err = run(
        [
            "eval",
            "--dataset",
            "ade20k",
            "--data-root",
            str(tmp_path),
            "--pred",
            str(tmp_path / "masks"),
            "--json",
            str(tmp_path / "r.json"),
        ],
        capsys,
    )
    assert rc == 0, err
    data = json.loads((tmp_path / "r.json").read_text())
    # ADE20K reduces the zero label: gt 3 is class 2, so every pixel is right
    assert data["aAcc"] == 100.0 and data["num_images"] == 2
    assert len(data["per_class"]) == 150 and data["per_class"][2]["iou"] == 100.0
    assert data["config"]["dataset"] == "ade20k" and data["config"]["reduce_zero_label"] is True


def test_cli_default_ignore_index_is_the_library_default():
    from scclip_cli.cli.eval_cmd import DEFAULT_IGNORE_INDEX
    from scclip_cli.maps.metrics import IGNORE_INDEX

    assert DEFAULT_IGNORE_INDEX == IGNORE_INDEX


def test_a_sweep_prints_one_row_per_setting_after_the_table(folders, capsys):
    """The images a.jpg and b.jpg (as big as their labels) segmented by the tiny model with two
    probability thresholds: the sweep's table (best row marked) follows the best run's table."""
    from scclip_cli.runs.sweep import format_sweep

    for key, shape in (("a", (2, 4)), ("b", (2, 3))):
        (folders / "images").mkdir(exist_ok=True)
        Image.new("RGB", shape[::-1], (40, 120, 200)).save(folders / "images" / f"{key}.jpg")
    tiny = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
    tiny += ["--short-side", "32", "--crop", "32", "--stride", "16"]
    args = ["eval", "--images", str(folders / "images"), "--gt", str(folders / "gt"), *tiny]
    args += ["--vocab", str(folders / "vocab.txt"), "--json", str(folders / "sweep.json")]
    rc, out, err = run([*args, "--sweep", "prob-threshold=0,0.99", "-q"], capsys)
    assert rc == 0, err
    rows = json.loads((folders / "sweep.json").read_text())["config"]["sweep"]
    assert [row["settings"] for row in rows] == [{"prob-threshold": 0}, {"prob-threshold": 0.99}]
    table = format_sweep(rows)
    assert out.endswith(f"\n{table}\n") and "*best" in table, out
