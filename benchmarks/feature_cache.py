"""A rerun with another vocabulary from the feature cache, against a full run, as whole processes.

    python benchmarks/feature_cache.py                   # ViT-B/16 shape, 8 images of 683×512, 150 classes
    python benchmarks/feature_cache.py --quick           # tiny model, 2 small images (a smoke run)

Everything runs on generated data in a temporary folder (the JPEG photos and made-up vocabularies
of ``benchmarks/throughput.py``). Two vocabularies of ``--classes`` different made-up words are
embedded once with one template into ``.npz`` files (``scclip vocab``'s format). Random weights are
written once to a checkpoint, which each process loads as a user's local weights. Then, for
``--rounds`` rounds, each a fresh ``python -m scclip_cli segment`` process, timed from start to exit:

* **full**: vocabulary A, no feature cache (what every run costs today);
* **cold**: vocabulary A with ``--feature-cache`` in a new folder (a full run that also stores);
* **rerun**: vocabulary B (another 150 classes) and another ``--prob-threshold`` with the same
  ``--feature-cache``: every image hits, so no model is loaded.

The masks of **cold** must equal those of **full** byte for byte, and those of **rerun** those of a
full run with vocabulary B (run once): the script stops if not. It reports each phase's median
over the rounds and the median over rounds of full / rerun (ratios of one round, so slow moments
of a shared machine affect them less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# this folder is first on sys.path when a script here runs (benchmarks/ is not a package)
import throughput as bench


def prepare(workdir: Path, model: str, pretrained: str, classes: int) -> tuple[str, Path, Path]:
    """The weights to load (a checkpoint of random weights) and two ``.npz`` vocabularies."""
    import torch

    from scclip_cli.files.vocabulary import parse_vocabulary
    from scclip_cli.model.loading import load_clip, parse_random_seed
    from scclip_cli.model.text_embeddings import embed_vocabulary, save_embeddings

    clip = load_clip(model, pretrained, device="cpu")
    if parse_random_seed(pretrained) is not None:
        checkpoint = workdir / "random-weights.pt"
        torch.save(clip.model.state_dict(), checkpoint)
        pretrained = str(checkpoint)
        clip = load_clip(model, pretrained, device="cpu")
    words = bench.made_up_words(2 * classes)
    vocabularies = []
    for name, chosen in (("a", words[:classes]), ("b", words[classes:])):
        emb = embed_vocabulary(
            clip, parse_vocabulary(["background", *chosen[1:]]), (bench.PROMPT_TEMPLATE,)
        )
        path = workdir / f"vocab-{name}.npz"
        save_embeddings(emb, path)
        vocabularies.append(path)
    return pretrained, vocabularies[0], vocabularies[1]


def run_segment(arguments: Sequence[str], threads: int) -> float:
    """Seconds a ``python -m scclip_cli segment`` process takes, start to exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "scclip_cli", "segment", *arguments, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"segment failed ({done.returncode}):\n{done.stderr}")
    return seconds


def masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png")) if p.stem != "legend"}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--pretrained", default="random:0")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", default="683x512", help="W x H of the generated photos")
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 images of 160x120")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.pretrained, args.images, args.size = (
            "scclip-tiny",
            "random:0",
            2,
            "160x120",
        )
        args.classes, args.rounds = min(args.classes, 20), 1
    width, height = (int(n) for n in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="scclip-feature-cache-") as tmp:
        workdir = Path(tmp)
        images = workdir / "images"
        bench.write_images(images, args.images, width, height)
        weights, vocab_a, vocab_b = prepare(workdir, args.model, args.pretrained, args.classes)
        common = [str(images), "--model", args.model, "--pretrained", weights, "--device", "cpu"]
        common += ["--cache-dir", str(workdir / "user-cache")]

        def segment(name: str, vocab: Path, *extra: str) -> tuple[float, Path]:
            out = workdir / "out" / name
            return run_segment(
                [*common, "--vocab", str(vocab), "--out", str(out), *extra], args.threads
            ), out

        _, b_full = segment("b-full", vocab_b, "--prob-threshold", "0.2")
        rounds = []
        for r in range(args.rounds):
            cache = workdir / f"features-{r}"
            full, full_out = segment(f"full-{r}", vocab_a)
            cold, cold_out = segment(f"cold-{r}", vocab_a, "--feature-cache", str(cache))
            rerun, rerun_out = segment(
                f"rerun-{r}", vocab_b, "--feature-cache", str(cache), "--prob-threshold", "0.2"
            )
            if masks(cold_out) != masks(full_out) or masks(rerun_out) != masks(b_full):
                raise SystemExit("masks from the feature cache differ from a full run's")
            summary = json.loads((rerun_out / "summary.json").read_text())["feature_cache"]
            if summary["misses"] or summary["hits"] != args.images:
                raise SystemExit(f"the rerun missed the cache: {summary}")
            rounds.append(
                {"full": full, "cold": cold, "rerun": rerun, "cache_bytes": summary["size_bytes"]}
            )
            print(
                f"round {r}: full {full:.2f} s, cold {cold:.2f} s, rerun {rerun:.2f} s",
                file=sys.stderr,
            )

    result = {
        "model": args.model,
        "images": args.images,
        "size": f"{width}x{height}",
        "classes": args.classes,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "loadavg": os.getloadavg(),
        "rounds": rounds,
        "median": {k: statistics.median(r[k] for r in rounds) for k in ("full", "cold", "rerun")},
        "full_over_rerun_median_of_rounds": statistics.median(
            r["full"] / r["rerun"] for r in rounds
        ),
        "cold_over_full_median_of_rounds": statistics.median(r["cold"] / r["full"] for r in rounds),
        "cache_bytes_per_image": rounds[0]["cache_bytes"] / args.images,
    }
    median = result["median"]
    print(
        f"{args.images} images of {width}x{height}, {args.classes} classes, {args.model}, "
        f"{args.threads} threads, {args.rounds} rounds (medians):\n"
        f"| run | s | × rerun |\n|---|---:|---:|\n"
        f"| full (no cache) | {median['full']:.2f} | {median['full'] / median['rerun']:.1f} |\n"
        f"| cold (full + store) | {median['cold']:.2f} | {median['cold'] / median['rerun']:.1f} |\n"
        f"| rerun, new vocabulary, all hits | {median['rerun']:.2f} | 1.0 |\n"
        f"full / rerun, median of rounds: {result['full_over_rerun_median_of_rounds']:.1f}×; "
        f"cold / full: {result['cold_over_full_median_of_rounds']:.3f}; "
        f"cache {result['cache_bytes_per_image'] / 1e6:.2f} MB per image"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
