"""A benchmark runs with the settings of the model's backbone: a 24-block ViT takes the authors'
ViT-L/14 values, any other model the ViT-B/16 ones; explicit options still win. Shown through
``scclip eval --dataset`` and ``scclip segment --preset`` with tiny 12- and 24-block models, and
read back from the eval JSON and ``summary.json``, which name the preset and its backbone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main

SMALL = ["--short-side", "32", "--crop", "32", "--stride", "16", "-q"]
"""Tiny windows (protocol values these tests do not look at)."""

L14 = {  # configs/cfg_voc21.py:6,9-10 and cfg_coco_object.py:8-9 (logit scale: the default 40)
    "voc21": {"logit_scale": 40.0, "prob_threshold": 0.2, "area_threshold": 0.1},
    "coco-object": {"logit_scale": 40.0, "prob_threshold": 0.25, "area_threshold": None},
}
B16 = {  # configs/cfg_voc21.py:6-8 and cfg_coco_object.py:6-7
    "voc21": {"logit_scale": 50.0, "prob_threshold": 0.15, "area_threshold": 0.1},
    "coco-object": {"logit_scale": 55.0, "prob_threshold": 0.35, "area_threshold": None},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """``--model`` values of a 12-block and a 24-block tiny ViT (the built-in scclip-tiny, and
    the same config with 24 blocks)."""
    from scclip_cli.model.loading import BUILTIN_CONFIG_DIR

    config = json.loads((BUILTIN_CONFIG_DIR / "scclip-tiny.json").read_text())
    assert config["vision_cfg"]["layers"] == 12
    config["vision_cfg"]["layers"] = 24
    path = tmp_path_factory.mktemp("models") / "scclip-tiny-24.json"
    path.write_text(json.dumps(config))
    return {12: "scclip-tiny", 24: str(path)}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image of VOC2012 and of COCO-Object, in their layouts."""
    root = tmp_path_factory.mktemp("datasets")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8))
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    photo.save(voc / "JPEGImages" / "2007_000033.jpg")
    labels = Image.fromarray(rng.integers(0, 21, (30, 40), np.uint8), mode="L")
    labels.save(voc / "SegmentationClass" / "2007_000033.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    coco = root / "coco_object"
    (coco / "images" / "val2017").mkdir(parents=True)
    (coco / "annotations" / "val2017").mkdir(parents=True)
    photo.save(coco / "images" / "val2017" / "000000000139.jpg")
    labels.save(coco / "annotations" / "val2017" / "000000000139_instanceTrainIds.png")
    return root


def eval_settings(model: str, data_root: Path, tmp: Path, *args: str) -> dict[str, Any]:
    report = tmp / "report.json"
    argv = ["eval", "--data-root", str(data_root), "--model", model, "--pretrained", "random:7"]
    assert main([*argv, "--device", "cpu", *SMALL, *args, "--json", str(report)]) == 0
    return json.loads(report.read_text())["config"]["segmenter"]


def protocol_values(segmenter: dict[str, Any]) -> dict[str, Any]:
    protocol = segmenter["protocol"]
    return {k: protocol[k] for k in ("logit_scale", "prob_threshold", "area_threshold")}


@pytest.mark.parametrize("dataset", ["voc21", "coco-object"])
@pytest.mark.parametrize(("depth", "backbone"), [(24, "ViT-L/14"), (12, "ViT-B/16")])
def test_a_benchmark_takes_the_values_of_the_model_backbone(
    models: dict[int, str], data_root: Path, tmp_path: Path, dataset: str, depth: int, backbone: str
) -> None:
    segmenter = eval_settings(models[depth], data_root, tmp_path, "--dataset", dataset)
    assert segmenter["preset"] == {"name": dataset, "backbone": backbone, "model_depth": depth}
    assert protocol_values(segmenter) == (L14 if depth == 24 else B16)[dataset]
    assert segmenter["calibration"]["depth"] == depth


@pytest.mark.parametrize("depth", [24, 12])
def test_explicit_thresholds_win_over_either_column(
    models: dict[int, str], data_root: Path, tmp_path: Path, depth: int
) -> None:
    args = ["--dataset", "voc21", "--prob-threshold", "0.42", "--logit-scale", "33"]
    segmenter = eval_settings(models[depth], data_root, tmp_path, *args)
    assert protocol_values(segmenter) == {
        "logit_scale": 33.0,
        "prob_threshold": 0.42,
        "area_threshold": 0.1,  # not given: the preset's
    }
    assert segmenter["preset"]["backbone"] == ("ViT-L/14" if depth == 24 else "ViT-B/16")


def test_segment_records_the_preset_and_backbone_it_ran(
    models: dict[int, str], data_root: Path, tmp_path: Path
) -> None:
    image = data_root / "coco_object" / "images" / "val2017" / "000000000139.jpg"
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\ncat\n")
    for depth in (24, 12):
        out = tmp_path / f"out{depth}"
        argv = ["segment", str(image), "-v", str(vocab), "-o", str(out), "--preset", "coco-object"]
        argv += ["--model", models[depth], "--pretrained", "random:7", "--device", "cpu", *SMALL]
        assert main(argv) == 0
        config = json.loads((out / "summary.json").read_text())["config"]
        backbone = "ViT-L/14" if depth == 24 else "ViT-B/16"
        assert config["preset"] == {
            "name": "coco-object",
            "backbone": backbone,
            "model_depth": depth,
        }
        assert protocol_values(config) == (L14 if depth == 24 else B16)["coco-object"]
        assert config["run"]["preset"] == "coco-object"
