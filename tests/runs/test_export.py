"""``scclip export``: each format read back by its own client (or by the format's definition)
gives back exactly the label maps; hostile class names survive; bad input writes nothing."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scclip_cli.errors import ExportError, UsageError
from scclip_cli.files.labelstudio_format import decode_brush_rle
from scclip_cli.maps.contours import connected_components
from scclip_cli.runs.export import export_masks
from support.segment_output import make_segment_output, sample_label_maps

NAMES = ["background", "sky", "person", "cat", "cup", "grass"]
HOSTILE = ['back"ground', "a, b", "<tag>", "x & y", "key: value", "chat été", "猫"]


def decode_rle(rle):
    """Label Studio's own decoder when label-studio-sdk is installed (the dev extra), else ours,
    written from the format's definition."""
    try:
        from label_studio_sdk.converter.brush import decode_rle as sdk_decode
    except ImportError:
        return decode_brush_rle(rle)
    return sdk_decode(rle)


@pytest.fixture(scope="module")
def maps():
    return sample_label_maps(len(NAMES))


@pytest.fixture
def masks(tmp_path, maps):
    return make_segment_output(tmp_path / "masks", NAMES, maps)


@pytest.fixture
def images(tmp_path, maps):
    folder = tmp_path / "images"
    folder.mkdir()
    for key, labels in maps.items():
        Image.new("RGB", (labels.shape[1], labels.shape[0])).save(folder / f"{key}.jpg")
    return folder


def test_sample_maps_have_several_classes(maps):
    assert all(len(np.unique(labels)) >= 4 for labels in maps.values())


@pytest.mark.parametrize("instances", [False, True])
def test_coco_annotations_give_back_every_class_mask(masks, images, maps, tmp_path, instances):
    from pycocotools.coco import COCO

    out = tmp_path / "coco.json"
    export_masks(masks, "coco", out, images_dir=images, instances=instances)
    coco = COCO(str(out))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == dict(enumerate(NAMES))
    for image in coco.loadImgs(coco.getImgIds()):
        labels = maps[Path(image["file_name"]).stem]
        assert (image["height"], image["width"]) == labels.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        for k in range(len(NAMES)):
            union = np.zeros(labels.shape, dtype=np.uint8)
            mine = [a for a in anns if a["category_id"] == k]
            for ann in mine:
                piece = coco.annToMask(ann)
                assert not (union & piece).any(), "instances overlap"
                union |= piece
                assert ann["area"] == int(piece.sum())
                assert ann["iscrowd"] == 0 and ann["score"] == pytest.approx(0.5)
                assert isinstance(ann["segmentation"]["counts"], str)
            np.testing.assert_array_equal(union, labels == k)
            if instances and mine:
                assert len(mine) == connected_components(labels == k)[1]
            if not instances:
                assert len(mine) == int((labels == k).any())


def test_coco_skip_background_and_iscrowd(masks, tmp_path):
    out = tmp_path / "coco.json"
    export_masks(masks, "coco", out, skip_background=True, iscrowd=True)
    data = json.loads(out.read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    assert all(a["category_id"] != 0 and a["iscrowd"] == 1 for a in data["annotations"])
    assert data["images"][0]["file_name"] == "astronaut.jpg"  # no --images: the mask key


def test_labelstudio_results_decode_to_every_class_mask(masks, images, maps, tmp_path):
    out = tmp_path / "tasks.json"
    export_masks(masks, "labelstudio", out, images_dir=images, from_name="brush", to_name="img")
    tasks = json.loads(out.read_text())
    assert len(tasks) == len(maps)
    for task in tasks:
        assert task["data"]["image"].startswith("/data/local-files/?d=")
        stem = Path(task["data"]["image"].rsplit("=", 1)[1]).stem
        labels = maps[stem]
        prediction = task["predictions"][0]
        assert prediction["model_version"] == "scclip fake none sc-clip"
        seen = set()
        for result in prediction["result"]:
            assert (result["from_name"], result["to_name"]) == ("brush", "img")
            assert result["type"] == "brushlabels" and result["value"]["format"] == "rle"
            assert (result["original_height"], result["original_width"]) == labels.shape
            (name,) = result["value"]["brushlabels"]
            k = NAMES.index(name)
            seen.add(k)
            rgba = np.asarray(decode_rle(result["value"]["rle"])).reshape(*labels.shape, 4)
            np.testing.assert_array_equal(rgba[:, :, 3] == 255, labels == k)
            assert set(np.unique(rgba)) <= {0, 255}
        assert seen == set(np.unique(labels).tolist())
    config = ET.parse(out.with_name("tasks.config.xml")).getroot()
    brush = config.find("BrushLabels")
    assert brush is not None and brush.get("name") == "brush" and brush.get("toName") == "img"
    labels_xml = brush.findall("Label")
    assert [lab.get("value") for lab in labels_xml] == NAMES
    assert labels_xml[1].get("background") == "#800000"  # VOC colour of class 1


def test_labelstudio_url_prefix_is_quoted(masks, tmp_path):
    out = tmp_path / "tasks.json"
    export_masks(masks, "labelstudio", out, image_url_prefix="https://bucket/imgs/")
    urls = [t["data"]["image"] for t in json.loads(out.read_text())]
    assert urls[0] == "https://bucket/imgs/astronaut.jpg"


def test_cvat_zip_colours_map_back_to_the_label_maps(masks, maps, tmp_path):
    out = tmp_path / "cvat.zip"
    export_masks(masks, "cvat", out)
    with zipfile.ZipFile(out) as archive:
        labelmap = archive.read("labelmap.txt").decode("utf-8").splitlines()
        stems = archive.read("ImageSets/Segmentation/default.txt").decode().split()
        assert sorted(stems) == sorted(maps)
        colour_to_index = {}
        for i, line in enumerate(line for line in labelmap if not line.startswith("#")):
            name, rgb, parts, actions = line.split(":")
            assert (name, parts, actions) == (NAMES[i], "", "")
            colour_to_index[tuple(int(v) for v in rgb.split(","))] = i
        for stem in stems:
            rgb = np.asarray(Image.open(io.BytesIO(archive.read(f"SegmentationClass/{stem}.png"))))
            back = np.full(rgb.shape[:2], -1)
            for colour, index in colour_to_index.items():
                back[(rgb == colour).all(axis=2)] = index
            np.testing.assert_array_equal(back, maps[stem])


def rasterise(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in points.tolist()], fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def test_yolo_polygons_reproduce_each_component(masks, images, maps, tmp_path):
    import yaml

    out = tmp_path / "yolo"
    export_masks(masks, "yolo", out, images_dir=images)
    data = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    assert data["names"] == dict(enumerate(NAMES)) and data["nc"] == len(NAMES)
    checked = 0
    for stem, labels in maps.items():
        height, width = labels.shape
        polygons: dict[int, list[np.ndarray]] = {}
        for line in (out / "labels" / f"{stem}.txt").read_text().splitlines():
            class_id, *values = line.split()
            xy = np.asarray(values, dtype=np.float64).reshape(-1, 2) * [width, height]
            polygons.setdefault(int(class_id), []).append(np.rint(xy).astype(int))
        for k in np.unique(labels):
            components, count = connected_components(labels == k)
            drawn = [rasterise(p, labels.shape) for p in polygons[int(k)]]
            assert len(drawn) == count
            for c in range(1, count + 1):
                component = components == c
                if component.sum() < 64:
                    continue
                best = max(
                    (d & component).sum() / (d | component).sum()
                    for d in drawn
                    if d[component].any()
                )
                assert best >= 0.98, (stem, int(k), c, best)
                checked += 1
    assert checked >= 20


def test_min_area_drops_specks(tmp_path):
    labels = np.zeros((40, 40), dtype=np.int64)
    labels[5:25, 5:25] = 1  # 400 px
    labels[30:33, 30:33] = 1  # a 9 px speck
    masks = make_segment_output(tmp_path / "m", ["bg", "thing"], {"a": labels})
    export_masks(masks, "yolo", tmp_path / "y", min_area=10)
    lines = (tmp_path / "y/labels/a.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1"]
    export_masks(masks, "coco", tmp_path / "c.json", min_area=10, skip_background=True)
    (ann,) = json.loads((tmp_path / "c.json").read_text())["annotations"]
    assert ann["area"] == 400


def test_confidence_order_puts_least_confident_first(tmp_path):
    labels = np.zeros((8, 8), dtype=np.int64)
    conf = {
        k: np.full((8, 8), v, dtype=np.float32) for k, v in [("a", 0.9), ("b", 0.2), ("c", 0.5)]
    }
    masks = make_segment_output(tmp_path / "m", ["bg"], {k: labels for k in conf}, confidence=conf)
    export_masks(masks, "labelstudio", tmp_path / "t.json", order="confidence")
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert [t["meta"]["mask"] for t in tasks] == ["b", "c", "a"]
    assert [t["predictions"][0]["score"] for t in tasks] == pytest.approx([0.2, 0.5, 0.9])


def test_hostile_class_names_survive_every_format(tmp_path):
    import yaml

    labels = np.arange(len(HOSTILE)).repeat(4).reshape(1, -1).repeat(6, axis=0)
    masks = make_segment_output(tmp_path / "m", HOSTILE, {"a": labels})
    export_masks(masks, "coco", tmp_path / "c.json")
    coco = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in coco["categories"]] == HOSTILE
    export_masks(masks, "labelstudio", tmp_path / "t.json")
    tasks = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert [r["value"]["brushlabels"][0] for r in tasks[0]["predictions"][0]["result"]] == HOSTILE
    config = ET.parse(tmp_path / "t.config.xml").getroot()
    assert [lab.get("value") for lab in config.iter("Label")] == HOSTILE
    export_masks(masks, "yolo", tmp_path / "y")
    data = yaml.safe_load((tmp_path / "y/data.yaml").read_text(encoding="utf-8"))
    assert list(data["names"].values()) == HOSTILE
    export_masks(masks, "cvat", tmp_path / "v.zip")
    with zipfile.ZipFile(tmp_path / "v.zip") as archive:
        lines = archive.read("labelmap.txt").decode("utf-8").splitlines()[1:]
    # labelmap.txt has no escaping: ":" becomes the look-alike "꞉" (documented), the rest stays
    assert [line.rsplit(":", 3)[0] for line in lines] == [n.replace(":", "꞉") for n in HOSTILE]
    assert all(line.count(":") == 3 for line in lines)


# ------------------------------------------------------------------------------ bad input


def leaves_nothing(tmp_path: Path, before: set[Path]) -> bool:
    return set(tmp_path.rglob("*")) == before


def test_not_a_segment_output(tmp_path):
    (tmp_path / "plain").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "plain/a.png")
    before = set(tmp_path.rglob("*"))
    with pytest.raises(ExportError, match="not a scclip segment output"):
        export_masks(tmp_path / "plain", "coco", tmp_path / "c.json")
    assert leaves_nothing(tmp_path, before)


def test_mask_without_its_json(masks, tmp_path):
    (masks / "chelsea.json").unlink()
    before = set(tmp_path.rglob("*"))
    with pytest.raises(ExportError, match=r"chelsea.png has no per-image JSON"):
        export_masks(masks, "yolo", tmp_path / "y")
    assert leaves_nothing(tmp_path, before)


def test_legend_that_does_not_match(masks, tmp_path):
    legend = json.loads((masks / "legend.json").read_text())
    (masks / "legend.json").write_text(json.dumps(legend[:3]))
    before = set(tmp_path.rglob("*"))
    with pytest.raises(ExportError, match=r"not in legend\.json"):
        export_masks(masks, "cvat", tmp_path / "v.zip")
    legend[2]["name"] = "dog"
    (masks / "legend.json").write_text(json.dumps(legend))
    with pytest.raises(ExportError, match=r"legend\.json names it 'dog'"):
        export_masks(masks, "coco", tmp_path / "c.json")
    assert leaves_nothing(tmp_path, before)


def test_mask_values_beyond_the_legend_stop_midway_and_leave_nothing(tmp_path):
    labels = np.zeros((8, 8), dtype=np.int64)
    masks = make_segment_output(tmp_path / "m", ["bg", "x", "y"], {"a": labels, "b": labels})
    bad = labels.copy()
    bad[0, 0] = 2
    from scclip_cli.files.mask_io import write_label_png

    write_label_png(masks / "b.png", bad, 3)  # b.json still says only class 0
    (masks / "legend.json").write_text(
        json.dumps(json.loads((masks / "legend.json").read_text())[:2])
    )
    before = set(tmp_path.rglob("*"))
    for to, out in [("labelstudio", "t.json"), ("yolo", "y"), ("cvat", "v.zip")]:
        with pytest.raises(ExportError, match="legend does not match"):
            export_masks(masks, to, tmp_path / out)
        assert leaves_nothing(tmp_path, before)


def test_out_already_there(masks, tmp_path):
    out = tmp_path / "c.json"
    out.write_text("keep me")
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_masks(masks, "coco", out)
    assert out.read_text() == "keep me"
    export_masks(masks, "coco", out, overwrite=True)
    assert json.loads(out.read_text())["categories"]
    (tmp_path / "y").mkdir()
    (tmp_path / "y/old.txt").write_text("old")
    export_masks(masks, "yolo", tmp_path / "y", overwrite=True)
    assert not (tmp_path / "y/old.txt").exists() and (tmp_path / "y/data.yaml").is_file()


def test_bad_options(masks, tmp_path):
    with pytest.raises(UsageError, match="unknown export format"):
        export_masks(masks, "voc", tmp_path / "x")
    with pytest.raises(UsageError, match="--instances applies to --to coco"):
        export_masks(masks, "yolo", tmp_path / "x", instances=True)
