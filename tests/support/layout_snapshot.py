"""A snapshot of what the user-facing commands produce on the shipped sample images.

Taken through the CLI (``scclip segment``, local and Ray, and ``scclip eval``) with the tiny seeded
model on the CPU in float32, so it survives any reorganisation of the modules behind the commands:
``tests/data/layout_snapshot.json`` was written by :func:`take_snapshot` on the code before the
modules moved into layer folders, and ``tests/runs/test_layout_snapshot.py`` compares against it.

Run ``python tests/support/layout_snapshot.py`` to rewrite the file (only when an output is meant to
change, with the reason in the commit message).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
SNAPSHOT = ROOT / "tests" / "data" / "layout_snapshot.json"
CLASSES = "background, sky\nperson, astronaut\ncat\ncup, mug\nrocket\ngrass, tree\n"
MODEL = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
RUN = ["--precision", "float32", "--batch-size", "1", "-q"]
EVAL_KEYS = ("mIoU", "mAcc", "aAcc", "per_class", "num_images")


def _labels_digest(path: Path) -> dict[str, Any]:
    labels = np.asarray(Image.open(path))
    return {
        "shape": list(labels.shape),
        "sha256": hashlib.sha256(labels.astype(np.int64).tobytes()).hexdigest(),
        "counts": np.bincount(labels.ravel().astype(np.int64)).tolist(),
    }


def _per_image(out: Path) -> dict[str, Any]:
    images: dict[str, Any] = {}
    for source in sorted(SAMPLES.glob("*.jpg")):
        record = json.loads((out / f"{source.stem}.json").read_text(encoding="utf-8"))
        record.pop("path", None)  # absolute; differs between temporary folders
        images[source.stem] = {"labels": _labels_digest(out / f"{source.stem}.png"), "json": record}
    return images


def _ground_truth(folder: Path) -> None:
    """Deterministic stripes of the six classes at each sample image's size."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(SAMPLES.glob("*.jpg")):
        width, height = Image.open(source).size
        rows = (np.arange(height)[:, None] * 6 // height).repeat(width, axis=1)
        Image.fromarray(rows.astype(np.uint8)).save(folder / f"{source.stem}.png")


def _eval_numbers(report: Path) -> dict[str, Any]:
    data = json.loads(report.read_text(encoding="utf-8"))
    return {key: data[key] for key in EVAL_KEYS if key in data}


def take_snapshot(work: Path, *, ray: bool = True) -> dict[str, Any]:
    """Run the commands under ``work`` and return what they produced (JSON-ready)."""
    from scclip_cli.cli.app import main

    vocab = work / "classes.txt"
    vocab.write_text(CLASSES, encoding="utf-8")
    gt = work / "gt"
    _ground_truth(gt)
    snapshot: dict[str, Any] = {}

    local = work / "local"
    code = main(["segment", str(SAMPLES), "--vocab", str(vocab), "--out", str(local), *MODEL, *RUN])
    assert code == 0, code
    snapshot["segment"] = _per_image(local)

    report = work / "eval.json"
    args = ["eval", "--images", str(SAMPLES), "--gt", str(gt), "--vocab", str(vocab)]
    code = main([*args, "--json", str(report), *MODEL, "--precision", "float32", "-q"])
    assert code == 0, code
    snapshot["eval"] = _eval_numbers(report)

    if ray:
        on_ray = work / "ray"
        args = ["segment", str(SAMPLES), "--vocab", str(vocab), "--out", str(on_ray)]
        ray_local = ["--engine", "ray", "--ray-address", "local", "--workers", "1"]
        code = main([*args, *MODEL, *RUN, *ray_local])
        assert code == 0, code
        snapshot["segment_ray"] = _per_image(on_ray)
    return snapshot


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        taken = take_snapshot(Path(tmp), ray="--no-ray" not in sys.argv)
    SNAPSHOT.write_text(json.dumps(taken, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
