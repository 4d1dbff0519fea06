"""What ``scclip export`` costs next to ``scclip segment``, and how the YOLO outlines are traced.

    python benchmarks/export_speed.py                  # 100 masks (~2 min on 2 busy cores)
    python benchmarks/export_speed.py --count 1000     # the full 1,000

Part 1, export speed: ``--count`` label maps of 683×512 with 20 classes (smooth random blobs: 20
random low-resolution fields, upsampled, arg-max; about 40 regions per map) are written as a
segment output (masks, per-image JSON, legend) in a temporary folder, then exported to each format
(:func:`scclip_cli.runs.export.export_masks`, in this process, best of ``--repeat``). The time per
mask is set against segmenting the same image, ViT-B/16 on the CPU at 683×512 (README
"Performance"): ``--segment-seconds`` wall (1.53 s) and ``--segment-cpu-seconds`` CPU time (3.02 s
on two cores). Export runs on one core, so on a shared machine its CPU time is the steadier figure;
the load average is printed with the table.

Part 2, outline tracing for YOLO: on the same maps, every class's connected components are traced
by our crack-edge tracer (:mod:`scclip_cli.maps.contours`) and, when installed, by OpenCV's
``findContours`` (outer boundary, ``CHAIN_APPROX_SIMPLE``) and scikit-image's ``find_contours``
(iso-line at 0.5), each polygon is filled with PIL (``polygon(fill, outline)``, as the tests do)
and compared with its component: the IoU over components of at least 64 pixels (worst and mean)
and the CPU time per map (every class mask traced).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from scclip_cli.files import mask_io
from scclip_cli.maps.contours import component_polygons, connected_components
from scclip_cli.runs.export import FORMATS, export_masks

WIDTH, HEIGHT = 683, 512


def blob_labels(rng: np.random.Generator, classes: int) -> np.ndarray:
    """``[H, W]`` int64: the arg-max of ``classes`` smooth random fields."""
    low = rng.random((classes, 1 + HEIGHT // 64, 1 + WIDTH // 64)).astype(np.float32)
    fields = [
        np.asarray(Image.fromarray(f).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC))
        for f in low
    ]
    return np.argmax(np.stack(fields), axis=0).astype(np.int64)


def write_segment_output(root: Path, count: int, classes: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [f"class {i}" for i in range(classes)]
    root.mkdir(parents=True)
    mask_io.write_legend(root, names)
    maps = []
    for i in range(count):
        labels = blob_labels(rng, classes)
        confidence = rng.random(labels.shape, dtype=np.float32)
        mask_io.write_label_png(root / f"img{i:05d}.png", labels, classes)
        record = {
            "path": f"images/img{i:05d}.jpg",
            "width": WIDTH,
            "height": HEIGHT,
            "mean_confidence": mask_io.mean_confidence(confidence),
            "classes": mask_io.class_statistics(labels, confidence, names),
        }
        (root / f"img{i:05d}.json").write_text(json.dumps(record))
        if i < 20:
            maps.append(labels)
    return maps


def time_exports(root: Path, out: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """``{format: (wall s, CPU s)}``, each the best of ``repeat`` runs."""
    best: dict[str, tuple[float, float]] = {}
    runs = [(to, {}) for to in FORMATS] + [("coco", {"instances": True})]
    for to, options in runs:
        label = to + (" --instances" if options else "")
        target = out / {"coco": "c.json", "labelstudio": "t.json", "cvat": "v.zip"}.get(to, "y")
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            export_masks(root, to, target, overwrite=True, **options)
            measured = (time.perf_counter() - wall, time.process_time() - cpu)
            best[label] = min(best.get(label, measured), measured)
    return best


def fill(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.new("1", (shape[1], shape[0]), 0)
    xy = [tuple(p) for p in points.tolist()]
    draw = ImageDraw.Draw(image)
    if len(xy) > 1:
        draw.polygon(xy, fill=1, outline=1)
    else:
        draw.point(xy, fill=1)
    return np.asarray(image, dtype=bool)


def tracers() -> dict[str, object]:
    found: dict[str, object] = {"own crack-edge tracer": None}
    try:
        import cv2

        found["OpenCV findContours"] = cv2
    except ImportError:
        pass
    try:
        from skimage import measure

        found["scikit-image find_contours"] = measure
    except ImportError:
        pass
    return found


def trace(name: str, module: object, component: np.ndarray) -> list[np.ndarray]:
    if name.startswith("own"):
        return component_polygons(component)
    if name.startswith("OpenCV"):
        contours, _ = module.findContours(
            component.astype(np.uint8), module.RETR_EXTERNAL, module.CHAIN_APPROX_SIMPLE
        )
        return [c.reshape(-1, 2) for c in contours]
    contours = module.find_contours(component.astype(np.float32), 0.5)
    return [np.rint(c[:, ::-1]).astype(int) for c in contours]


def tracing_fidelity(maps: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Each tracer on every class mask of ``maps`` (CPU time), then each component of >= 64 px
    against the polygon drawn over most of it."""
    results: dict[str, dict[str, float]] = {}
    for name, module in tracers().items():
        ious: list[float] = []
        seconds = 0.0
        for labels in maps:
            for k in np.unique(labels):
                mask = labels == k
                start = time.process_time()
                polygons = trace(name, module, mask)
                seconds += time.process_time() - start
                drawn = [fill(p, mask.shape) for p in polygons]
                components, count = connected_components(mask)
                for c in range(1, count + 1):
                    component = components == c
                    if component.sum() < 64:
                        continue
                    best = max(drawn, key=lambda d: int((d & component).sum()))
                    ious.append(float((best & component).sum() / (best | component).sum()))
        results[name] = {
            "worst IoU": min(ious),
            "mean IoU": float(np.mean(ious)),
            "components": len(ious),
            "ms per map": 1000 * seconds / len(maps),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--segment-seconds", type=float, default=1.53)
    parser.add_argument("--segment-cpu-seconds", type=float, default=3.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace-only", action="store_true", help="part 2 only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "masks"
        start = time.perf_counter()
        if args.trace_only:
            rng = np.random.default_rng(args.seed)
            maps = [blob_labels(rng, args.classes) for _ in range(20)]
            times: dict[str, tuple[float, float]] = {}
        else:
            maps = write_segment_output(root, args.count, args.classes, args.seed)
            times = time_exports(root, Path(tmp) / "out", args.repeat)
        made = time.perf_counter() - start
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(
        f"{args.count} masks of {WIDTH}x{HEIGHT}, {args.classes} classes "
        f"(written in {made:.1f} s); {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(load)}"
    )
    print(
        f"segmenting one image: {args.segment_seconds} s wall, {args.segment_cpu_seconds} CPU s "
        "(README Performance)\n"
    )
    print("| format | ms / mask | CPU ms / mask | % of segmenting (wall) | % (CPU) | s per 1,000 |")
    print("|---|---:|---:|---:|---:|---:|")
    for to, (wall, cpu) in times.items():
        per_wall, per_cpu = wall / args.count, cpu / args.count
        print(
            f"| {to} | {1000 * per_wall:.0f} | {1000 * per_cpu:.0f} | "
            f"{100 * per_wall / args.segment_seconds:.1f} | "
            f"{100 * per_cpu / args.segment_cpu_seconds:.1f} | {1000 * per_wall:.0f} |"
        )
    print("\nOutline tracing on the first 20 maps (components of >= 64 px):\n")
    print("| tracer | worst IoU | mean IoU | components | CPU ms / map |")
    print("|---|---:|---:|---:|---:|")
    for name, row in tracing_fidelity(maps).items():
        print(
            f"| {name} | {row['worst IoU']:.4f} | {row['mean IoU']:.4f} | "
            f"{row['components']:.0f} | {row['ms per map']:.0f} |"
        )


if __name__ == "__main__":
    main()
