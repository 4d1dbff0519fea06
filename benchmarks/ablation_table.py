"""The paper's ablation table, one ``scclip eval`` row per configuration, on a labelled folder.

    python benchmarks/ablation_table.py --images IMGS --gt LABELS --vocab classes.txt \
        --model ViT-B-16-quickgelu --pretrained openai

Without ``--images``/``--gt`` it generates a small synthetic dataset (coloured shapes on textured
backgrounds, three classes) and uses it. Each row is exactly what

    scclip eval --images IMGS --gt LABELS --vocab classes.txt --method M [switches]

computes; the model and the vocabulary embeddings are loaded once and shared by all rows. With random
weights (``--pretrained random``) the numbers exercise the machinery only and say nothing about
accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scclip_cli.config import MethodConfig, resolve_protocol
from scclip_cli.model.loading import load_clip
from scclip_cli.model.text_embeddings import load_vocabulary_embeddings
from scclip_cli.predict.segmenter import Segmenter
from scclip_cli.runs.evaluate import evaluate

SC = ("repair_anomalies", "attention_enhancement", "feature_aggregation", "multi_level_fusion")
FLAGS = {
    "repair_anomalies": "--no-anomaly-repair",
    "attention_enhancement": "--no-attention-enhancement",
    "feature_aggregation": "--no-feature-aggregation",
    "multi_level_fusion": "--no-multi-level-fusion",
}


def rows() -> list[tuple[str, MethodConfig, str]]:
    """(label, method, the CLI switches that select it)."""
    out: list[tuple[str, MethodConfig, str]] = [
        (name, MethodConfig(name=name), f"--method {name}")
        for name in ("clip", "maskclip", "sclip", "clearclip")
    ]
    off = dict.fromkeys(SC, False)
    out.append(("SC-CLIP, all components off", MethodConfig(**off), " ".join(FLAGS[s] for s in SC)))
    on: dict[str, bool] = dict(off)
    for switch in SC:
        on[switch] = True
        flags = " ".join(FLAGS[s] for s in SC if not on[s]) or "(defaults)"
        out.append((f"+ {switch.replace('_', ' ')}", MethodConfig(**on), flags))
    out += [
        (
            "+ adaptive anomaly ratio",
            MethodConfig(adaptive_anomaly_ratio=True),
            "--adaptive-anomaly-ratio",
        ),
        (
            "+ boundary-aware repair",
            MethodConfig(boundary_aware_repair=True),
            "--boundary-aware-repair",
        ),
        (
            "token-norm detector",
            MethodConfig(anomaly_detector="token-norm"),
            "--anomaly-detector token-norm",
        ),
        (
            "sklearn LOF detector",
            MethodConfig(anomaly_detector="sklearn-lof"),
            "--anomaly-detector sklearn-lof",
        ),
        ("+ PAMR (10 steps)", MethodConfig(pamr_steps=10), "--pamr-steps 10"),
    ]
    return out


def make_dataset(
    root: Path, count: int = 6, size: tuple[int, int] = (240, 320)
) -> tuple[Path, Path, Path]:
    """Write ``count`` images with ground truth (0 background, 1 red disc, 2 blue square)."""
    rng = np.random.default_rng(0)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        texture = rng.integers(90, 160, (h, w, 1)) + rng.integers(-20, 20, (h, w, 3))
        image = np.clip(texture, 0, 255).astype(np.uint8)
        label = np.zeros((h, w), np.uint8)
        cy, cx, r = rng.integers(50, h - 50), rng.integers(50, w - 50), rng.integers(25, 45)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image[disc], label[disc] = (200, 30, 30), 1
        y0, x0 = rng.integers(0, h - 60), rng.integers(0, w - 60)
        image[y0 : y0 + 60, x0 : x0 + 60], label[y0 : y0 + 60, x0 : x0 + 60] = (30, 30, 200), 2
        Image.fromarray(image).save(images / f"img{i}.png")
        Image.fromarray(label).save(labels / f"img{i}.png")
    vocab = root / "classes.txt"
    vocab.write_text("background, wall\nred ball\nblue box\n")
    return images, labels, vocab


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path)
    parser.add_argument("--gt", type=Path)
    parser.add_argument("--vocab", type=Path)
    parser.add_argument("--model", default="scclip-tiny")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.images is None:
            args.images, args.gt, args.vocab = make_dataset(Path(tmp))
        clip = load_clip(args.model, args.pretrained, device=args.device)
        embeddings = load_vocabulary_embeddings(args.vocab, clip)
        protocol = resolve_protocol(args.preset)
        print(f"model {args.model} / {args.pretrained}; images {args.images}\n")
        print("| configuration | CLI switches | mIoU | mAcc | aAcc | s |")
        print("|---|---|---:|---:|---:|---:|")
        for label, method, flags in rows():
            start = time.perf_counter()
            segmenter = Segmenter(clip, embeddings, protocol, method=method)
            result = evaluate(
                images_dir=args.images,
                gt_dir=args.gt,
                vocab=args.vocab,
                segmenter=segmenter,
                progress=False,
            )
            m = result.metrics
            print(
                f"| {label} | `{flags}` | {m['mIoU']:.2f} | {m['mAcc']:.2f} | {m['aAcc']:.2f} "
                f"| {time.perf_counter() - start:.1f} |"
            )


if __name__ == "__main__":
    main()
