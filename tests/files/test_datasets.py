"""The eight benchmark layouts, recognised on tiny generated copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.config import PROTOCOL_PRESETS
from scclip_cli.errors import ConfigError, DatasetLayoutError
from scclip_cli.files.datasets import (
    DATASET_LAYOUTS,
    benchmark_vocab_path,
    dataset_layout,
    find_dataset,
)

SIZE = (6, 4)  # width, height


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SIZE, (10, 20, 30)).save(path)


def write_label(path: Path, value: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(SIZE[::-1], value, np.uint8), mode="L").save(path)


def build_layout(root: Path, name: str) -> list[str]:
    """Write a tiny copy of ``name``'s layout under ``root`` (the dataset folder); return the keys
    the dataset should find, sorted. Also writes decoys the layout must not pick up."""
    if name in ("voc21", "voc20", "context60", "context59"):
        voc = name.startswith("voc")
        label_dir = "SegmentationClass" if voc else "SegmentationClassContext"
        split = "ImageSets/Segmentation/val.txt" if voc else "ImageSets/SegmentationContext/val.txt"
        keys = ["2008_000002", "2007_000033"]
        for key in [*keys, "2009_999999"]:  # the third is not in the split
            write_image(root / "JPEGImages" / f"{key}.jpg")
            write_label(root / label_dir / f"{key}.png")
        (root / split).parent.mkdir(parents=True)
        (root / split).write_text("\n".join(keys) + "\n\n")
        return sorted(keys)
    if name in ("coco-stuff", "coco-object"):
        suffix = "_labelTrainIds.png" if name == "coco-stuff" else "_instanceTrainIds.png"
        other = "_instanceTrainIds.png" if name == "coco-stuff" else "_labelTrainIds.png"
        keys = ["000000000139", "000000000285"]
        for key in keys:
            write_image(root / "images/val2017" / f"{key}.jpg")
            write_label(root / "annotations/val2017" / f"{key}{suffix}")
            write_label(root / "annotations/val2017" / f"{key}{other}")
        return keys
    if name == "cityscapes":
        keys = [
            "frankfurt/frankfurt_000000_000294_leftImg8bit",
            "lindau/lindau_000000_000019_leftImg8bit",
        ]
        for key in keys:
            stem = key.removesuffix("_leftImg8bit")
            write_image(root / "leftImg8bit/val" / f"{key}.png")
            write_label(root / "gtFine/val" / f"{stem}_gtFine_labelTrainIds.png")
            write_label(root / "gtFine/val" / f"{stem}_gtFine_labelIds.png")
            write_label(root / "gtFine/val" / f"{stem}_gtFine_color.png")
        return keys
    if name == "ade20k":
        keys = ["ADE_val_00000001", "ADE_val_00000002"]
        for key in keys:
            write_image(root / "images/validation" / f"{key}.jpg")
            write_label(root / "annotations/validation" / f"{key}.png")
        return keys
    raise AssertionError(name)


# where the reference's ``datasets/`` folder keeps each benchmark
REFERENCE_SUBFOLDER = {
    "voc21": "VOCdevkit/VOC2012",
    "voc20": "VOCdevkit/VOC2012",
    "context60": "VOCdevkit/VOC2010",
    "context59": "VOCdevkit/VOC2010",
    "coco-object": "coco_object",
    "coco-stuff": "coco_stuff164k",
    "cityscapes": "cityscapes",
    "ade20k": "ade/ADEChallengeData2016",
}


def test_every_preset_has_a_layout():
    assert set(DATASET_LAYOUTS) == set(PROTOCOL_PRESETS)


@pytest.mark.parametrize("name", list(DATASET_LAYOUTS))
def test_layout_recognised_at_dataset_folder_and_above(tmp_path, name):
    keys = build_layout(tmp_path / "datasets" / REFERENCE_SUBFOLDER[name], name)
    for root in (tmp_path / "datasets", tmp_path / "datasets" / REFERENCE_SUBFOLDER[name]):
        found = find_dataset(name, root)
        assert [s.key for s in found.samples] == keys
        assert found.total == len(keys)
        assert found.root == tmp_path / "datasets" / REFERENCE_SUBFOLDER[name]
        layout = found.layout
        for s in found.samples:
            assert s.image.is_file() and s.label.is_file()
            assert s.image.name.endswith(layout.image_suffix)
            assert s.label.name.endswith(layout.label_suffix)
            assert s.image.relative_to(found.root / layout.image_dir).as_posix().startswith(s.key)
            # the label is the image's relative path with the suffix swapped (mmseg's rule)
            rel = s.image.relative_to(found.root / layout.image_dir).as_posix()
            assert s.label == found.root / layout.label_dir / (
                rel.removesuffix(layout.image_suffix) + layout.label_suffix
            )
    assert len(find_dataset(name, tmp_path / "datasets", limit=1).samples) == 1


def test_conventions_follow_the_reference():
    rzl = {name: layout.preset.reduce_zero_label for name, layout in DATASET_LAYOUTS.items()}
    assert rzl == {
        "voc21": False,
        "voc20": True,
        "context60": False,
        "context59": True,
        "coco-object": False,
        "coco-stuff": False,
        "cityscapes": False,
        "ade20k": True,
    }
    assert dataset_layout("coco-object").label_suffix == "_instanceTrainIds.png"
    assert dataset_layout("coco-stuff").label_suffix == "_labelTrainIds.png"
    assert dataset_layout("cityscapes").image_suffix == "_leftImg8bit.png"


@pytest.mark.parametrize("name", list(DATASET_LAYOUTS))
def test_benchmark_vocab_has_the_preset_class_count(name):
    path = benchmark_vocab_path(name)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(lines) == PROTOCOL_PRESETS[name].num_classes


def test_broken_layouts_name_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        find_dataset("voc99", tmp_path)
    with pytest.raises(DatasetLayoutError, match="no such folder"):
        find_dataset("voc21", tmp_path / "nope")
    with pytest.raises(DatasetLayoutError, match="JPEGImages not found"):
        find_dataset("voc21", tmp_path)

    root = tmp_path / "VOCdevkit/VOC2012"
    build_layout(root, "voc21")
    (root / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"split file .*val\.txt is missing"):
        find_dataset("voc21", tmp_path)

    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000033\nmissing_one\n")
    with pytest.raises(DatasetLayoutError, match="missing_one") as err:
        find_dataset("voc21", tmp_path)
    assert "image" in str(err.value) and "label" in str(err.value)

    ade = tmp_path / "ade"
    build_layout(ade, "ade20k")
    (ade / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"ADE_val_00000002\.png"):
        find_dataset("ade20k", ade)
    # --limit checks only the samples it keeps
    assert len(find_dataset("ade20k", ade, limit=1).samples) == 1

    city = tmp_path / "city"
    build_layout(city, "cityscapes")
    for p in sorted((city / "gtFine").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    with pytest.raises(DatasetLayoutError, match=r"label folder .*gtFine/val is missing"):
        find_dataset("cityscapes", city)


def test_empty_image_folder(tmp_path):
    (tmp_path / "images/validation").mkdir(parents=True)
    (tmp_path / "annotations/validation").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"no \*\.jpg images"):
        find_dataset("ade20k", tmp_path)
