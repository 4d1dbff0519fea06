"""Every option of every command reaches the library: shown through the real command.

:data:`WIRING` is the one table: each row is an option, what to give it, and the field of the run's
record that must then hold the given value (``summary.json``, the eval JSON, the vocabulary cache,
the files written, stdout or stderr; see :func:`record`). Rows of one ``(command, group)`` share one
invocation, so each group runs the tiny model once, and one test checks all of them on it. Values
differ from the defaults, and from each other, so an option wired to the wrong parameter (or
dropped) shows.

``test_every_option_has_a_row`` fails when a command gains an option the table lacks (and when a row
names an option that is gone). To cover a new option: add one ``Wire`` row; to cover a new command:
add its base arguments to :data:`BASE_ARGS` and its rows.

The Ray engine's options need a Ray instance: their group (``ray``) is one more run, skipped when Ray
is not installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import app, main

CLASSES = "background\ncat, kitten\ndog\ngrass\n"
CLASS_NAMES = ["background", "cat", "dog", "grass"]
TINY = ("--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu")
WINDOWS = ("--short-side", "48", "--crop", "48", "--stride", "24")
"""Small windows keep the tiny model fast; the protocol rows give other values in their group."""


@dataclass(frozen=True)
class Has:
    """Expected value of a row whose field is a collection (or text) that must contain ``item``."""

    item: Any


@dataclass(frozen=True)
class Unlike:
    """Expected value of a row whose effect is numeric: the field differs from the same field of
    the command's ``group`` run (which leaves the option out)."""

    group: str


@dataclass(frozen=True)
class Wire:
    """One option of one command: what to give it and where its effect must show.

    ``field`` is a dotted path into the run's :func:`record` (``summary.config.protocol.crop``);
    ``expected`` the value found there (``{tmp}`` in strings is the run's folder), :class:`Has` or
    :class:`Unlike`.
    """

    command: str
    option: str
    """The option's long name (``--prob-threshold``) or the argument's metavar (``INPUT``)."""
    args: str
    """Given on the command line (split at spaces)."""
    field: str
    expected: Any
    group: str = "main"


W = Wire
# fmt: off
WIRING: tuple[Wire, ...] = (
    # ---------------------------------------------------------------- segment
    W("segment", "INPUT", "{tmp}/images", "summary.config.run.inputs", ["{tmp}/images"]),
    W("segment", "--vocab", "--vocab {tmp}/classes.txt", "summary.config.class_names", CLASS_NAMES),
    W("segment", "--out", "--out {tmp}/out", "files", Has("a.png")),
    W("segment", "--model", "--model scclip-tiny", "summary.config.model", "scclip-tiny"),
    W("segment", "--pretrained", "--pretrained random:5", "summary.config.pretrained", "random:5"),
    W("segment", "--device", "--device cuda:99", "stderr", Has("cuda:99"), "bad-device"),
    W("segment", "--precision", "--precision bfloat16", "summary.config.precision", "bfloat16"),
    W("segment", "--method", "--method clearclip", "summary.config.method.name", "clearclip", "baseline"),
    W("segment", "--no-anomaly-repair", "--no-anomaly-repair", "summary.config.method.repair_anomalies", False),
    W("segment", "--no-attention-enhancement", "--no-attention-enhancement", "summary.config.method.attention_enhancement", False),
    W("segment", "--no-feature-aggregation", "--no-feature-aggregation", "summary.config.method.feature_aggregation", False),
    W("segment", "--no-multi-level-fusion", "--no-multi-level-fusion", "summary.config.method.multi_level_fusion", False),
    W("segment", "--adaptive-anomaly-ratio", "--adaptive-anomaly-ratio", "summary.config.method.adaptive_anomaly_ratio", True),
    W("segment", "--boundary-aware-repair", "--boundary-aware-repair", "summary.config.method.boundary_aware_repair", True),
    W("segment", "--anomaly-detector", "--anomaly-detector token-norm", "summary.config.method.anomaly_detector", "token-norm"),
    W("segment", "--pamr-steps", "--pamr-steps 2", "summary.config.method.pamr_steps", 2),
    W("segment", "--pamr-dilations", "--pamr-dilations 2,3", "summary.config.method.pamr_dilations", [2, 3]),
    W("segment", "--preset", "--preset context60", "summary.config.preset.name", "context60"),
    W("segment", "--short-side", "--short-side 40", "summary.config.protocol.short_side", 40),
    W("segment", "--crop", "--crop 32", "summary.config.protocol.crop", 32),
    W("segment", "--stride", "--stride 16", "summary.config.protocol.stride", 16),
    W("segment", "--logit-scale", "--logit-scale 33", "summary.config.protocol.logit_scale", 33.0),
    W("segment", "--prob-threshold", "--prob-threshold 0.37", "summary.config.protocol.prob_threshold", 0.37),
    W("segment", "--area-threshold", "--area-threshold 0.21", "summary.config.protocol.area_threshold", 0.21),
    W("segment", "--batch-size", "--batch-size 3", "summary.config.batch_size", 3),
    W("segment", "--overlay", "--overlay", "files", Has("a_overlay.jpg")),
    W("segment", "--save-confidence", "--save-confidence", "files", Has("a_conf.png")),
    W("segment", "--report", "--report", "files", Has("report.html")),
    W("segment", "--cache-dir", "--cache-dir {tmp}/ucache", "summary.config.run.caching.cache_dir", "{tmp}/ucache"),
    W("segment", "--no-cache", "--no-cache", "summary.config.run.caching.text_embeddings", False),
    W("segment", "--feature-cache", "--feature-cache {tmp}/fcache", "summary.feature_cache.dir", "{tmp}/fcache/features", "fcache"),
    W("segment", "--feature-cache-size", "--feature-cache-size 1GB", "summary.feature_cache.max_bytes", 10**9, "fcache"),
    W("segment", "--overwrite", "--overwrite", "summary.counts", {"images": 2, "done": 2, "skipped": 0, "failed": 0}, "rerun"),
    W("segment", "--shard", "--shard 2/2", "summary.config.run.shard", "2/2", "shard"),
    W("segment", "--quiet", "--quiet", "stderr", ""),
    W("segment", "--jsonl", "--jsonl", "stdout_json.0.status", "done"),
    W("segment", "--engine", "--engine ray", "summary.config.run.engine.name", "ray", "ray"),
    W("segment", "--ray-address", "--ray-address local", "summary.config.run.engine.address", "local", "ray"),
    W("segment", "--workers", "--workers 1", "summary.config.run.engine.workers", 1, "ray"),
    W("segment", "--gpus-per-worker", "--gpus-per-worker 0", "summary.config.run.engine.gpus_per_worker", 0.0, "ray"),
    W("segment", "--cpus-per-worker", "--cpus-per-worker 0.5", "summary.config.run.engine.cpus_per_worker", 0.5, "ray"),
    # ---------------------------------------------------------------- eval
    W("eval", "[PART.npz]...", "{tmp}/part1.npz {tmp}/part2.npz", "report.config.shards", ["1/2", "2/2"], "merge"),
    W("eval", "--merge", "--merge", "report.num_images", 2, "merge"),
    W("eval", "--pred", "--pred {tmp}/pred", "report.config.pred", "{tmp}/pred", "pred"),
    W("eval", "--gt", "--gt {tmp}/gt", "report.config.gt", "{tmp}/gt"),
    W("eval", "--images", "--images {tmp}/images", "report.config.images", "{tmp}/images"),
    W("eval", "--dataset", "--dataset voc20", "report.config.dataset", "voc20", "dataset"),
    W("eval", "--data-root", "--data-root {tmp}/datasets", "report.config.data_root", "{tmp}/datasets/VOCdevkit/VOC2012", "dataset"),
    W("eval", "--vocab", "--vocab {tmp}/classes.txt", "report.config.segmenter.class_names", CLASS_NAMES),
    W("eval", "--num-classes", "--num-classes 5", "report.config.num_classes", 5, "pred"),
    W("eval", "--reduce-zero-label", "--reduce-zero-label", "report.config.reduce_zero_label", True),
    W("eval", "--ignore-index", "--ignore-index 254", "report.config.ignore_index", 254),
    W("eval", "--gt-suffix", "--gt-suffix _gt", "report.config.gt_suffix", "_gt"),
    W("eval", "--pred-suffix", "--pred-suffix _mask", "report.config.pred_suffix", "_mask", "pred"),
    W("eval", "--model", "--model scclip-tiny", "report.config.segmenter.model", "scclip-tiny"),
    W("eval", "--pretrained", "--pretrained random:5", "report.config.segmenter.pretrained", "random:5"),
    W("eval", "--device", "--device cuda:99", "stderr", Has("cuda:99"), "bad-device"),
    W("eval", "--precision", "--precision bfloat16", "report.config.segmenter.precision", "bfloat16"),
    W("eval", "--method", "--method clearclip", "report.config.segmenter.method.name", "clearclip", "baseline"),
    W("eval", "--no-anomaly-repair", "--no-anomaly-repair", "report.config.segmenter.method.repair_anomalies", False),
    W("eval", "--no-attention-enhancement", "--no-attention-enhancement", "report.config.segmenter.method.attention_enhancement", False),
    W("eval", "--no-feature-aggregation", "--no-feature-aggregation", "report.config.segmenter.method.feature_aggregation", False),
    W("eval", "--no-multi-level-fusion", "--no-multi-level-fusion", "report.config.segmenter.method.multi_level_fusion", False),
    W("eval", "--adaptive-anomaly-ratio", "--adaptive-anomaly-ratio", "report.config.segmenter.method.adaptive_anomaly_ratio", True),
    W("eval", "--boundary-aware-repair", "--boundary-aware-repair", "report.config.segmenter.method.boundary_aware_repair", True),
    W("eval", "--anomaly-detector", "--anomaly-detector token-norm", "report.config.segmenter.method.anomaly_detector", "token-norm"),
    W("eval", "--pamr-steps", "--pamr-steps 2", "report.config.segmenter.method.pamr_steps", 2),
    W("eval", "--pamr-dilations", "--pamr-dilations 2,3", "report.config.segmenter.method.pamr_dilations", [2, 3]),
    W("eval", "--preset", "--preset context60", "report.config.segmenter.preset.name", "context60"),
    W("eval", "--short-side", "--short-side 40", "report.config.segmenter.protocol.short_side", 40),
    W("eval", "--crop", "--crop 32", "report.config.segmenter.protocol.crop", 32),
    W("eval", "--stride", "--stride 16", "report.config.segmenter.protocol.stride", 16),
    W("eval", "--logit-scale", "--logit-scale 33", "report.config.segmenter.protocol.logit_scale", 33.0),
    W("eval", "--prob-threshold", "--prob-threshold 0.37", "report.config.segmenter.protocol.prob_threshold", 0.37),
    W("eval", "--area-threshold", "--area-threshold 0.21", "report.config.segmenter.protocol.area_threshold", 0.21),
    W("eval", "--batch-size", "--batch-size 3", "report.config.batch_size", 3),
    W("eval", "--limit", "--limit 1", "report.num_images", 1),
    W("eval", "--shard", "--shard 1/2", "report.config.shards", ["1/2"], "pred"),
    W("eval", "--save-pred", "--save-pred {tmp}/saved", "files", Has("saved/a.png")),
    W("eval", "--save-confusion", "--save-confusion {tmp}/cm.npz", "files", Has("cm.npz")),
    W("eval", "--json", "--json {tmp}/report.json", "files", Has("report.json")),
    W("eval", "--chart", "--chart {tmp}/chart.png", "files", Has("chart.png")),
    W("eval", "--quiet", "--quiet", "stderr", ""),
    W("eval", "--cache-dir", "--cache-dir {tmp}/ucache", "report.config.caching.cache_dir", "{tmp}/ucache"),
    W("eval", "--no-cache", "--no-cache", "report.config.caching.text_embeddings", False),
    W("eval", "--feature-cache", "--feature-cache {tmp}/fcache", "report.config.feature_cache.dir", "{tmp}/fcache/features", "fcache"),
    W("eval", "--feature-cache-size", "--feature-cache-size 1GB", "report.config.feature_cache.max_bytes", 10**9, "fcache"),
    W("eval", "--sweep", "--sweep prob-threshold=0,0.5", "report.config.sweep.1.settings", {"prob-threshold": 0.5}, "sweep"),
    W("eval", "--engine", "--engine ray", "report.config.engine.name", "ray", "ray"),
    W("eval", "--ray-address", "--ray-address local", "report.config.engine.address", "local", "ray"),
    W("eval", "--workers", "--workers 1", "report.config.engine.workers", 1, "ray"),
    W("eval", "--gpus-per-worker", "--gpus-per-worker 0", "report.config.engine.gpus_per_worker", 0.0, "ray"),
    W("eval", "--cpus-per-worker", "--cpus-per-worker 0.5", "report.config.engine.cpus_per_worker", 0.5, "ray"),
    # ---------------------------------------------------------------- export
    # {tmp}/seg: a segment folder (two images; b less confident; class 1 in two pieces)
    W("export", "MASKS_DIR", "{tmp}/seg", "export.images.1.file_name", "a.jpg"),
    W("export", "--to", "--to coco", "export.info.description", "scclip export"),
    W("export", "--out", "--out {tmp}/export.json", "files", Has("export.json")),
    W("export", "--images", "--images {tmp}/photos", "export.images.0.file_name", "b.png"),
    W("export", "--order", "--order confidence", "export.images.0.mean_confidence", 0.5),
    W("export", "--instances", "--instances", "export.annotations.2.category_id", 2),
    W("export", "--skip-background", "--skip-background", "export.categories.0.name", "cat"),
    W("export", "--iscrowd", "--iscrowd", "export.annotations.0.iscrowd", 1),
    W("export", "--quiet", "--quiet", "stderr", ""),
    W("export", "--min-area", "--min-area 100000", "export.annotations", [], "min-area"),
    W("export", "--overwrite", "--overwrite", "exit", 0, "overwrite"),
    W("export", "--image-url-prefix", "--image-url-prefix http://x/", "export.0.data.image", "http://x/a.jpg", "labelstudio"),
    W("export", "--from-name", "--from-name F", "export.0.predictions.0.result.0.from_name", "F", "labelstudio"),
    W("export", "--to-name", "--to-name T", "export.0.predictions.0.result.0.to_name", "T", "labelstudio"),
    # ---------------------------------------------------------------- report
    W("report", "OUT_DIR", "{tmp}/seg", "files", Has("seg/report.html")),
    W("report", "--eval", "--eval {tmp}/ev.json", "page.eval.numImages", 2),
    W("report", "--workers", "--workers 1", "page.images.1.thumb", Has("b")),
    W("report", "--quiet", "--quiet", "stderr", ""),
    # ---------------------------------------------------------------- vocab
    W("vocab", "CLASSES", "{tmp}/classes.txt", "cache.class_names", CLASS_NAMES),
    W("vocab", "--out", "--out {tmp}/classes.npz", "files", Has("classes.npz")),
    W("vocab", "--model", "--model scclip-tiny", "cache.identity.model", "scclip-tiny"),
    W("vocab", "--pretrained", "--pretrained random:5", "cache.identity.pretrained", "random:5"),
    W("vocab", "--device", "--device cuda:99", "stderr", Has("cuda:99"), "bad-device"),
    W("vocab", "--precision", "--precision bfloat16", "cache.features_sha256", Unlike("main"), "bf16"),
    W("vocab", "--templates", "--templates {tmp}/templates.txt", "cache.identity.templates", "custom-2", "templates"),
)
# fmt: on
"""Option → the field it must set. The lead's rule: a command's new option gets a row here."""

# Arguments every run of a command gets, before its rows' (later values win in click).
BASE_ARGS: dict[str, tuple[str, ...]] = {
    "segment": ("--vocab", "{tmp}/classes.txt", "--out", "{tmp}/out", *TINY, *WINDOWS),
    "eval": (*TINY, *WINDOWS, "--json", "{tmp}/report.json"),
    "vocab": ("--out", "{tmp}/classes.npz", *TINY),
    "export": (),
    "report": (),
}
# The inputs of a command's groups other than "main" (whose rows give them), and the exceptions.
DEFAULT_EXTRA: dict[str, tuple[str, ...]] = {
    "segment": ("{tmp}/images",),
    "eval": (
        "--images",
        "{tmp}/images",
        "--gt",
        "{tmp}/gt",
        "--gt-suffix",
        "_gt",
        "--vocab",
        "{tmp}/classes.txt",
    ),
    "vocab": ("{tmp}/classes.txt",),
    "export": ("{tmp}/seg", "--to", "coco", "--out", "{tmp}/export.json"),
    "report": ("{tmp}/seg",),
}
GROUP_EXTRA: dict[tuple[str, str], tuple[str, ...]] = {
    ("export", "labelstudio"): ("{tmp}/seg", "--to", "labelstudio", "--out", "{tmp}/export.json"),
    ("eval", "pred"): ("--gt", "{tmp}/gt", "--gt-suffix", "_gt"),
    ("eval", "dataset"): ("--limit", "1"),
    ("eval", "merge"): (),
}
# What a group drops from the base.
GROUP_DROPS: dict[tuple[str, str], tuple[str, ...]] = {
    ("eval", "merge"): (*TINY, *WINDOWS),
    ("eval", "pred"): (*TINY, *WINDOWS),
}


# ------------------------------------------------------------------------------------ the inputs
def write_inputs(tmp: Path) -> None:
    """Two photos with ground truth (``<key>_gt.png``) and predictions (``<key>_mask.png``), the
    class list, prompt templates, confusion-matrix parts and a tiny VOC2012 layout."""
    rng = np.random.default_rng(0)
    for key, size in (("a", (40, 56)), ("b", (36, 44))):
        base = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
        photo = Image.fromarray(base).resize(size[::-1], Image.Resampling.BILINEAR)
        (tmp / "images").mkdir(exist_ok=True)
        photo.save(tmp / "images" / f"{key}.jpg")
        gt = rng.integers(0, 4, size=size).astype(np.uint8)
        pred = rng.integers(0, 4, size=size).astype(np.uint8)
        for folder, name, labels in (("gt", f"{key}_gt", gt), ("pred", f"{key}_mask", pred)):
            (tmp / folder).mkdir(exist_ok=True)
            Image.fromarray(labels, mode="L").save(tmp / folder / f"{name}.png")
    (tmp / "classes.txt").write_text(CLASSES, encoding="utf-8")
    (tmp / "templates.txt").write_text("a photo of a {}.\na drawing of a {}.\n", encoding="utf-8")
    voc = tmp / "datasets" / "VOCdevkit" / "VOC2012"
    for key in ("2007_000033", "2008_000002"):
        for folder, ext, image in (
            ("JPEGImages", "jpg", Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8))),
            ("SegmentationClass", "png", Image.fromarray(rng.integers(0, 21, (30, 40), np.uint8))),
        ):
            (voc / folder).mkdir(parents=True, exist_ok=True)
            image.save(voc / folder / f"{key}.{ext}")
    split = voc / "ImageSets" / "Segmentation" / "val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("2007_000033\n2008_000002\n")
    for part in (1, 2):
        args = ["eval", "--pred", str(tmp / "pred"), "--gt", str(tmp / "gt"), "--num-classes", "4"]
        args += ["--pred-suffix", "_mask", "--gt-suffix", "_gt", "--shard", f"{part}/2", "-q"]
        assert main([*args, "--save-confusion", str(tmp / f"part{part}.npz")]) == 0


def prepare_group(command: str, group: str, tmp: Path) -> None:
    """What must exist before the group's run (beyond :func:`write_inputs`)."""
    if command in ("export", "report"):
        write_segment_folder(tmp)
    if (command, group) == ("export", "main"):  # b's photo a PNG: only --images names b.png
        (tmp / "photos").mkdir()
        (tmp / "photos" / "a.jpg").write_bytes((tmp / "images" / "a.jpg").read_bytes())
        Image.open(tmp / "images" / "b.jpg").save(tmp / "photos" / "b.png")
    if (command, group) == ("export", "overwrite"):
        (tmp / "export.json").write_text("{}", encoding="utf-8")
    if (command, group) == ("segment", "rerun"):  # a finished run, redone with --overwrite
        args = fill((*BASE_ARGS["segment"], *DEFAULT_EXTRA["segment"]), tmp)
        assert main(["segment", *args, "-q"]) == 0


def write_segment_folder(tmp: Path) -> None:
    """``{tmp}/seg`` as ``scclip segment`` writes it for ``{tmp}/images`` (no model): class 1 in two
    pieces and class 2 in one, on background; ``b`` less confident than ``a``; and ``{tmp}/ev.json``,
    the JSON of ``scclip eval`` on it."""
    from support.segment_output import make_segment_output

    maps, confidence = {}, {}
    for key, shape, conf in (("a", (40, 56), 0.9), ("b", (36, 44), 0.5)):
        labels = np.zeros(shape, dtype=np.int64)
        labels[2:12, 2:12] = 1
        labels[20:30, 30:40] = 1
        labels[2:12, 30:40] = 2
        maps[key], confidence[key] = labels, np.full(shape, conf, dtype=np.float32)
    make_segment_output(tmp / "seg", CLASS_NAMES, maps, confidence=confidence)
    args = ["eval", "--pred", str(tmp / "seg"), "--gt", str(tmp / "gt"), "--gt-suffix", "_gt"]
    assert main([*args, "--vocab", str(tmp / "classes.txt"), "--json", str(tmp / "ev.json")]) == 0


# ------------------------------------------------------------------------------------ a run
def fill(args: tuple[str, ...], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


def drop(args: tuple[str, ...], dropped: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` without the options named in ``dropped`` (an option and its value go together)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in dropped and i + 1 < len(args) and not args[i + 1].startswith("-"):
            skip = True
            continue
        if arg not in dropped:
            out.append(arg)
    return tuple(out)


def group_args(command: str, group: str) -> tuple[str, ...]:
    base = drop(BASE_ARGS[command], GROUP_DROPS.get((command, group), ()))
    rows = [w for w in WIRING if (w.command, w.group) == (command, group)]
    extra = () if group == "main" else GROUP_EXTRA.get((command, group), DEFAULT_EXTRA[command])
    return (
        *base,
        *extra,
        *(a for w in rows for a in w.args.split()),
    )


def record(tmp: Path, rc: int, out: str, err: str) -> dict[str, Any]:
    """The run's record: ``summary`` (``out/summary*.json``), ``report`` (the eval JSON),
    ``cache`` (the vocabulary cache: ``class_names``, ``identity``, ``features_sha256``), ``export``
    (``{tmp}/export.json``), ``page`` (the data of ``{tmp}/seg/report.html``), ``files``
    (files written, relative to the run's folder and to ``out``), ``stdout_json`` (stdout's JSON
    lines), ``stdout``, ``stderr`` and ``exit``."""
    import hashlib

    summaries = sorted((tmp / "out").glob("summary*.json"))
    report = tmp / "report.json"
    cache: dict[str, Any] | None = None
    if (tmp / "classes.npz").is_file():
        from scclip_cli.model.text_embeddings import load_embeddings

        emb = load_embeddings(tmp / "classes.npz")
        features = np.ascontiguousarray(emb.features, dtype=np.float32)
        cache = {
            "class_names": list(emb.class_names),
            "identity": dict(emb.identity),
            "features_sha256": hashlib.sha256(features.tobytes()).hexdigest(),
        }
    files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
    if (tmp / "out").is_dir():
        files += [p.relative_to(tmp / "out").as_posix() for p in (tmp / "out").rglob("*")]
    export = tmp / "export.json"
    page = None
    if (tmp / "seg" / "report.html").is_file():
        import re

        html = (tmp / "seg" / "report.html").read_text(encoding="utf-8")
        page = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.DOTALL)[1])  # type: ignore[index]
    json_lines = []
    for line in out.splitlines():
        try:
            json_lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return {
        "exit": rc,
        "summary": json.loads(summaries[0].read_text()) if summaries else None,
        "report": json.loads(report.read_text()) if report.is_file() else None,
        "cache": cache,
        "export": json.loads(export.read_text()) if export.is_file() else None,
        "page": page,
        "files": sorted(files),
        "stdout_json": json_lines,
        "stdout": out,
        "stderr": err,
    }


def lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list):
            data = data[int(part)]
        else:
            assert isinstance(data, dict) and part in data, f"{path}: no {part!r} in {data!r}"
            data = data[part]
    return data


def expand(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, list):
        return [expand(v, tmp) for v in value]
    if isinstance(value, Has):
        return Has(expand(value.item, tmp))
    return value


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str, str], tuple[Path, dict]]]:
    """``runs(command, group)`` → ``(folder, record)``: each group runs once per module."""
    done: dict[tuple[str, str], tuple[Path, dict]] = {}

    def run(command: str, group: str) -> tuple[Path, dict]:
        if (command, group) not in done:
            tmp = tmp_path_factory.mktemp(f"{command}-{group}")
            write_inputs(tmp)
            prepare_group(command, group, tmp)
            if (tmp / "report.json").exists():
                (tmp / "report.json").unlink()
            args = fill(group_args(command, group), tmp)
            capture = _Capture()
            with capture:
                rc = main([command, *args])
            done[command, group] = (tmp, record(tmp, rc, capture.out, capture.err))
        return done[command, group]

    yield run


class _Capture:
    """stdout and stderr of one CLI call (pytest's capsys is function-scoped)."""

    def __enter__(self) -> _Capture:
        import contextlib
        import io

        self._out, self._err = io.StringIO(), io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self._out))
        self._stack.enter_context(contextlib.redirect_stderr(self._err))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.out, self.err = self._out.getvalue(), self._err.getvalue()


# ------------------------------------------------------------------------------------ the tests
def command_options() -> dict[str, set[str]]:
    """Every command of the app and its options' long names (arguments by metavar), read from the
    click command Typer builds (the parameters the user can give)."""
    import typer.main

    assert main(["--help"]) == 0  # registers the commands
    group: Any = typer.main.get_command(app)
    options: dict[str, set[str]] = {}
    for name, command in group.commands.items():
        names = set()
        for param in command.params:
            if param.param_type_name == "argument":
                names.add(param.metavar or param.name.upper())
            else:
                names.add(max(param.opts, key=len))
        options[name] = names
    return options


def test_every_option_has_a_row(capsys: pytest.CaptureFixture[str]) -> None:
    wired: dict[str, set[str]] = {}
    for w in WIRING:
        wired.setdefault(w.command, set()).add(w.option)
    options = command_options()
    capsys.readouterr()
    missing = {c: sorted(o - wired.get(c, set())) for c, o in options.items()}
    assert not any(missing.values()), f"options without a row in WIRING: {missing}"
    stale = {c: sorted(o - options.get(c, set())) for c, o in wired.items()}
    assert not any(stale.values()), f"rows for options that do not exist: {stale}"
    assert len({(w.command, w.option) for w in WIRING}) == len(WIRING), "one row per option"


def groups() -> list[tuple[str, str]]:
    """The ``(command, group)`` pairs of :data:`WIRING`, in the order of their first row."""
    return list(dict.fromkeys((w.command, w.group) for w in WIRING))


def mismatch(row: Wire, tmp: Path, data: dict, runs: Callable[..., Any]) -> str | None:
    """Why ``row`` does not hold in its group's run ``data``, or ``None`` when it does."""
    expected = expand(row.expected, tmp)
    try:
        got = lookup(data, row.field)
    except (AssertionError, IndexError, TypeError) as err:
        return f"{row.command} {row.option}: {row.field}: {err}"
    if isinstance(expected, Has):
        if expected.item not in got:
            return f"{row.command} {row.option}: {row.field}: {expected.item!r} not in {got!r}"
    elif isinstance(expected, Unlike):
        _, other = runs(row.command, expected.group)
        assert other["exit"] == 0, other["stderr"]
        if got == lookup(other, row.field):
            return f"{row.command} {row.option}: {row.field} is the same without {row.option}"
    elif got != expected:
        return f"{row.command} {row.option}: {row.field}: {got!r} != {expected!r}"
    return None


@pytest.mark.parametrize(
    ("command", "group"),
    [
        pytest.param(c, g, id=f"{c} {g}", marks=[pytest.mark.slow] if g == "ray" else [])
        for c, g in groups()
    ],
)
def test_the_options_reach_the_library(command: str, group: str, runs: Callable[..., Any]) -> None:
    """One CLI run per group, and every row of the group checked on it: a test that runs a
    command checks all that the run shows (mutation testing charges the run to that test)."""
    if group == "ray":
        pytest.importorskip("ray")
    tmp, data = runs(command, group)
    assert data["exit"] == (2 if group == "bad-device" else 0), data["stderr"]
    rows = [w for w in WIRING if (w.command, w.group) == (command, group)]
    failures = [m for row in rows if (m := mismatch(row, tmp, data, runs)) is not None]
    assert not failures, "\n".join(failures)
