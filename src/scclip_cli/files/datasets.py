"""The eight standard benchmarks: where their validation images and labels lie, and how to score them.

The layouts and conventions are those of the paper's evaluation code (SC-CLIP ``configs/cfg_*.py``,
which reuses SCLIP's ``custom_datasets.py``) on top of mmsegmentation 1.x ``BaseSegDataset``:

============  ==========================  ===========================  ==========================  =====
name          images (suffix)             labels (suffix)              sample list                 rzl
============  ==========================  ===========================  ==========================  =====
voc21         VOC2012/JPEGImages (.jpg)   SegmentationClass (.png)     ImageSets/Segmentation/     no
                                                                       val.txt
voc20         same as voc21               same as voc21                same as voc21               yes
context60     VOC2010/JPEGImages (.jpg)   SegmentationClassContext     ImageSets/                  no
                                          (.png)                       SegmentationContext/val.txt
context59     same as context60           same as context60            same as context60           yes
coco-object   images/val2017 (.jpg)       annotations/val2017          every image                 no
                                          (_instanceTrainIds.png)
coco-stuff    images/val2017 (.jpg)       annotations/val2017          every image                 no
                                          (_labelTrainIds.png)
cityscapes    leftImg8bit/val/CITY        gtFine/val/CITY              every image                 no
              (_leftImg8bit.png)          (_gtFine_labelTrainIds.png)
ade20k        images/validation (.jpg)    annotations/validation       every image                 yes
                                          (.png)
============  ==========================  ===========================  ==========================  =====

(rzl = ``reduce_zero_label``: ground truth 0 becomes the ignore index 255 and every other value drops
by one; applied to the ground truth only, as mmseg's ``LoadAnnotations`` does.)

Conventions and their sources:

- Sample lists: with a split file, its lines (stripped, blank lines skipped) name the samples:
  ``IMG_DIR/<line><img suffix>`` and ``GT_DIR/<line><seg suffix>`` (``BaseSegDataset`` with
  ``ann_file``). Without one, every file under the image folder (recursively) whose name ends with
  the image suffix is a sample, and its label is the same relative path with the image suffix
  replaced by the label suffix (``BaseSegDataset`` without ``ann_file``). Samples are sorted by key
  (mmseg keeps split-file order; the scores do not depend on order, and ``--limit`` takes the first
  N of the sorted list).
- VOC20 (``PascalVOC20Dataset``) and Context59 (``PascalContext59Dataset``) are SCLIP's custom
  datasets: the same files as VOC21 / Context60 with ``reduce_zero_label=True``, so the background
  class is not scored and the vocabulary has no background line. VOC's 255 boundary pixels stay
  ignored. ADE20K (mmseg ``ADE20KDataset``) also reduces the zero label (0 = "other").
- COCO-Object (SCLIP's ``COCOObjectDataset``, from TCL / GroupViT): 81 classes (background + the 80
  COCO things), labels ``*_instanceTrainIds.png`` made by TCL's conversion script from the
  COCO-Stuff-164k annotations; ``reduce_zero_label=False``.
- COCO-Stuff-164k (mmseg ``COCOStuffDataset``): 171 classes, ``*_labelTrainIds.png`` from mmseg's
  ``coco_stuff164k.py`` converter.
- Cityscapes (mmseg ``CityscapesDataset``): 19 train ids, ``*_gtFine_labelTrainIds.png`` from
  cityscapesscripts' ``createTrainIdLabelImgs`` (mmseg's ``cityscapes.py`` converter).
- Each dataset's vocabulary, protocol, ``reduce_zero_label`` and number of classes come from
  :data:`scclip_cli.config.PROTOCOL_PRESETS` (same name).

``--data-root`` may be the dataset folder itself (the folder the reference configs call
``data_root``, e.g. ``.../VOCdevkit/VOC2012``) or a folder above it holding the reference's
``datasets/`` names (``VOCdevkit/VOC2012``, ``VOCdevkit/VOC2010``, ``coco_object``,
``coco_stuff164k``, ``cityscapes``, ``ade/ADEChallengeData2016``); the first candidate that has the
image folder is used.

Sample keys (used to pair ``--pred`` files and name ``--save-pred`` masks) are the image's path
relative to the image folder without its file extension (``2007_000033``,
``frankfurt/frankfurt_000000_000294_leftImg8bit``), the names ``scclip segment IMG_DIR`` gives its
masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from scclip_cli.config import BenchmarkPreset, protocol_preset
from scclip_cli.errors import ConfigError, DatasetLayoutError, VocabularyError

MAX_MISSING_SHOWN = 20


@dataclass(frozen=True)
class DatasetLayout:
    """Where one benchmark's validation split lies under its dataset folder."""

    name: str
    """The benchmark (a key of :data:`scclip_cli.config.PROTOCOL_PRESETS`)."""
    subfolders: tuple[str, ...]
    """Where the dataset folder may lie under ``--data-root`` (tried after the root itself)."""
    image_dir: str
    """Image folder, relative to the dataset folder."""
    label_dir: str
    """Ground-truth folder, relative to the dataset folder."""
    image_suffix: str
    """End of an image file name (``.jpg``, ``_leftImg8bit.png``)."""
    label_suffix: str
    """End of a label file name (``.png``, ``_labelTrainIds.png``)."""
    split_file: str | None = None
    """Sample list relative to the dataset folder; ``None``: every image under ``image_dir``."""

    @property
    def preset(self) -> BenchmarkPreset:
        return protocol_preset(self.name)


_VOC = {
    "subfolders": ("VOCdevkit/VOC2012", "VOC2012"),
    "image_dir": "JPEGImages",
    "label_dir": "SegmentationClass",
    "image_suffix": ".jpg",
    "label_suffix": ".png",
    "split_file": "ImageSets/Segmentation/val.txt",
}
_CONTEXT = {
    "subfolders": ("VOCdevkit/VOC2010", "VOC2010"),
    "image_dir": "JPEGImages",
    "label_dir": "SegmentationClassContext",
    "image_suffix": ".jpg",
    "label_suffix": ".png",
    "split_file": "ImageSets/SegmentationContext/val.txt",
}

DATASET_LAYOUTS: dict[str, DatasetLayout] = {
    layout.name: layout
    for layout in (
        DatasetLayout("voc21", **_VOC),  # type: ignore[arg-type]
        DatasetLayout("voc20", **_VOC),  # type: ignore[arg-type]
        DatasetLayout("context60", **_CONTEXT),  # type: ignore[arg-type]
        DatasetLayout("context59", **_CONTEXT),  # type: ignore[arg-type]
        DatasetLayout(
            "coco-object",
            subfolders=("coco_object",),
            image_dir="images/val2017",
            label_dir="annotations/val2017",
            image_suffix=".jpg",
            label_suffix="_instanceTrainIds.png",
        ),
        DatasetLayout(
            "coco-stuff",
            subfolders=("coco_stuff164k",),
            image_dir="images/val2017",
            label_dir="annotations/val2017",
            image_suffix=".jpg",
            label_suffix="_labelTrainIds.png",
        ),
        DatasetLayout(
            "cityscapes",
            subfolders=("cityscapes",),
            image_dir="leftImg8bit/val",
            label_dir="gtFine/val",
            image_suffix="_leftImg8bit.png",
            label_suffix="_gtFine_labelTrainIds.png",
        ),
        DatasetLayout(
            "ade20k",
            subfolders=("ade/ADEChallengeData2016", "ADEChallengeData2016"),
            image_dir="images/validation",
            label_dir="annotations/validation",
            image_suffix=".jpg",
            label_suffix=".png",
        ),
    )
}


@dataclass(frozen=True)
class DatasetSample:
    """One validation image and its ground truth."""

    key: str
    """Image path relative to the image folder, without its extension, ``/``-separated."""
    image: Path
    label: Path


@dataclass(frozen=True)
class Dataset:
    """A benchmark found on disk."""

    layout: DatasetLayout
    root: Path
    """The dataset folder (``--data-root`` or the subfolder of it that holds the layout)."""
    samples: tuple[DatasetSample, ...]
    """Sorted by key; the first ``limit`` when a limit was given."""
    total: int
    """Samples in the split before ``limit``."""


def dataset_layout(name: str) -> DatasetLayout:
    """The layout of a benchmark; :class:`ConfigError` for an unknown name."""
    try:
        return DATASET_LAYOUTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_LAYOUTS)}"
        ) from None


def find_dataset(name: str, data_root: str | Path, *, limit: int | None = None) -> Dataset:
    """Find a benchmark's validation samples under ``data_root``.

    Args:
        name: benchmark name (``voc21``, ``voc20``, ``context60``, ``context59``, ``coco-object``,
            ``coco-stuff``, ``cityscapes``, ``ade20k``).
        data_root: the dataset folder or a folder above it (see the module docstring).
        limit: keep only the first ``limit`` samples (sorted by key); only those are checked for
            their label file.

    Raises:
        ConfigError: unknown name.
        DatasetLayoutError: the root, image folder, label folder or split file is missing, the split
            is empty, or images lack their label file (each listed, up to 20).
    """
    layout = dataset_layout(name)
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DatasetLayoutError(f"--data-root {data_root}: no such folder")
    root = _dataset_folder(layout, data_root)
    image_dir = root / layout.image_dir
    label_dir = root / layout.label_dir
    if not label_dir.is_dir():
        raise DatasetLayoutError(f"{name}: label folder {label_dir} is missing")

    if layout.split_file is not None:
        split = root / layout.split_file
        if not split.is_file():
            raise DatasetLayoutError(f"{name}: split file {split} is missing")
        try:
            lines = split.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetLayoutError(f"{name}: cannot read split file {split}: {err}") from None
        names = sorted({line.strip() for line in lines if line.strip()}, key=_key_order)
        image_rels = [f"{n}{layout.image_suffix}" for n in names]
        if not image_rels:
            raise DatasetLayoutError(f"{name}: split file {split} lists no samples")
    else:
        image_rels = sorted(_find_suffix(image_dir, layout.image_suffix), key=_key_order)
        if not image_rels:
            raise DatasetLayoutError(f"{name}: no *{layout.image_suffix} images under {image_dir}")

    total = len(image_rels)
    if limit is not None:
        image_rels = image_rels[: max(limit, 0)]
    samples = []
    missing = []
    for rel in image_rels:
        stem = rel[: -len(layout.image_suffix)]
        image = image_dir / rel
        label = label_dir / f"{stem}{layout.label_suffix}"
        if layout.split_file is not None and not image.is_file():
            missing.append(f"image {image}")
        if not label.is_file():
            missing.append(f"label {label}")
        key = str(PurePosixPath(rel).with_suffix(""))
        samples.append(DatasetSample(key=key, image=image, label=label))
    if missing:
        raise DatasetLayoutError(
            f"{name}: {len(missing)} file(s) of the split are missing under {root}:\n"
            + _listing(missing)
        )
    return Dataset(layout=layout, root=root, samples=tuple(samples), total=total)


def benchmark_vocab_path(name: str) -> Path:
    """The vocabulary file of a benchmark preset (``voc21`` → ``.../vocab/voc21.txt``).

    Looks in the package data (``scclip_cli/vocab/``, see :func:`vocab_dirs`).

    Raises:
        ConfigError: unknown preset.
        VocabularyError: the file is in neither place.
    """
    file_name = protocol_preset(name).vocab_file
    candidates = [d / file_name for d in vocab_dirs()]
    for path in candidates:
        if path.is_file():
            return path
    raise VocabularyError(
        f"vocabulary of {name} not found (looked for {', '.join(str(p) for p in candidates)})"
    )


def vocab_dirs() -> list[Path]:
    """The folders searched for benchmark vocabularies: the package's ``vocab/`` (the repository's
    top-level ``vocab/`` is a link to it, so a clone and an install read the same files)."""
    return [Path(__file__).resolve().parents[1] / "vocab"]


def _dataset_folder(layout: DatasetLayout, data_root: Path) -> Path:
    candidates = [data_root] + [data_root / sub for sub in layout.subfolders]
    for candidate in candidates:
        if (candidate / layout.image_dir).is_dir():
            return candidate
    tried = ", ".join(str(c / layout.image_dir) for c in candidates)
    raise DatasetLayoutError(
        f"{layout.name}: image folder {layout.image_dir} not found under --data-root "
        f"{data_root} (tried {tried})"
    )


def _find_suffix(folder: Path, suffix: str) -> list[str]:
    """``/``-separated paths, relative to ``folder``, of files whose name ends with ``suffix``."""
    found = []
    for path in folder.rglob(f"*{suffix}"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found.append(rel.as_posix())
    return found


def _key_order(key: str) -> tuple[str, ...]:
    return tuple(key.split("/"))


def _listing(lines: list[str], limit: int = MAX_MISSING_SHOWN) -> str:
    shown = [f"  {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  ... and {len(lines) - limit} more")
    return "\n".join(shown)
