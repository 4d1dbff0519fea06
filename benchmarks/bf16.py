"""bfloat16 (or float16) against float32: forward-pass time on the same crops, and label agreement.

    python benchmarks/bf16.py                    # tiny and ViT-B/16-shaped random weights, CPU
    python benchmarks/bf16.py --models scclip-tiny --rounds 2
    python benchmarks/bf16.py --device cuda --precision float16   # on a GPU

For each model (random weights, seed 0), two segmenters share one vocabulary (``--classes``
made-up words embedded in float32, one template) and differ only in the vision tower's dtype
(``--precision``: ``bfloat16`` by default, ``float16`` on a GPU), on ``--device``.
Images: the four sample photos and two generated 683×512 photos.

* **time**: the dense-feature extractor on the crops of all images, in batches of 4, float32 and
  bfloat16 alternating for ``--rounds`` rounds; the median of each and of the per-round ratios.
* **agreement**: per image, the fraction of pixels whose label is the same in both, over all
  pixels and over *stable* pixels: those where float32's winning class probability leads the
  runner-up by at least ``--margin`` (labels there should not flip under small perturbations).

Prints the CPU's native bfloat16 flags too (``amx_bf16``, ``avx512_bf16``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# this folder is first on sys.path when a script here runs (benchmarks/ is not a package)
import throughput as bench

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_images"


def images() -> dict[str, np.ndarray]:
    from scclip_cli.files.image_io import read_image_rgb

    found = {p.stem: read_image_rgb(p) for p in sorted(SAMPLES.glob("*.jpg"))}
    for seed in (0, 1):
        found[f"generated-{seed}"] = bench.synthetic_photo(683, 512, seed)
    return found


def stable_margin(segmenter: Any, image: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32: winning minus runner-up class probability (float32 segmenter)."""
    import torch

    scores = torch.from_numpy(segmenter.scores(image))  # [Q, H, W]
    probs = torch.softmax(scores * segmenter.protocol.logit_scale, dim=0)
    query_class = segmenter.query_class.cpu()
    classes = torch.zeros((len(segmenter.class_names), *probs.shape[1:]))
    for q in range(probs.shape[0]):
        k = int(query_class[q])
        classes[k] = torch.maximum(classes[k], probs[q])
    top = torch.topk(classes, 2, dim=0).values
    return (top[0] - top[1]).numpy()


def crops_of(segmenter: Any, pictures: Sequence[np.ndarray]) -> list[Any]:
    import torch

    from scclip_cli.maps.sliding_window import windows

    p = segmenter.protocol
    crops = []
    for picture in pictures:
        pixels = segmenter.prepare(picture).pixels
        for w in windows(pixels.shape[1], pixels.shape[2], p.crop, p.stride):
            crops.append(pixels[:, w.y1 : w.y2, w.x1 : w.x2])
    return [torch.stack(crops[i : i + 4]) for i in range(0, len(crops), 4)]


def forward_seconds(segmenter: Any, batches: Sequence[Any]) -> float:
    import torch

    cuda = segmenter.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(segmenter.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            segmenter.extractor(batch.to(segmenter.device, segmenter.clip.dtype))
    if cuda:
        torch.cuda.synchronize(segmenter.device)
    return time.perf_counter() - start


def measure(
    model: str,
    classes: int,
    rounds: int,
    margins: Sequence[float],
    device: str = "cpu",
    low: str = "bfloat16",
) -> dict[str, Any]:
    """float32 against ``low`` precision on ``device``; the result's keys name ``low`` as
    ``bfloat16`` whatever it is (``"precision"`` says which)."""
    from scclip_cli.files.vocabulary import parse_vocabulary
    from scclip_cli.model.loading import load_clip
    from scclip_cli.model.text_embeddings import embed_vocabulary
    from scclip_cli.predict.segmenter import Segmenter

    fp32 = load_clip(model, "random:0", device=device, precision="float32")
    vocab = parse_vocabulary(["background", *bench.made_up_words(classes - 1)])
    emb = embed_vocabulary(fp32, vocab, (bench.PROMPT_TEMPLATE,))
    bf16 = load_clip(model, "random:0", device=device, precision=low)
    seg32, seg16 = Segmenter(fp32, emb), Segmenter(bf16, emb)
    pictures = images()
    batches = crops_of(seg32, list(pictures.values()))
    forward_seconds(seg16, batches[:1])  # first-call set-up (oneDNN kernels) not timed
    forward_seconds(seg32, batches[:1])
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for r in range(rounds):
        order = [("float32", seg32), ("bfloat16", seg16)]
        for name, seg in order if r % 2 == 0 else order[::-1]:
            times[name].append(forward_seconds(seg, batches))
    agreement = {}
    for name, picture in pictures.items():
        a = seg32.segment(picture).labels
        b = seg16.segment(picture).labels
        lead = stable_margin(seg32, picture)
        agreement[name] = {"all": float((a == b).mean())}
        for margin in margins:
            stable = lead >= margin
            agreement[name][f"stable@{margin:g}"] = (
                float((a[stable] == b[stable]).mean()) if stable.any() else None
            )
            agreement[name][f"share@{margin:g}"] = float(stable.mean())
    stable_pixels = [
        v[f"stable@{m:g}"] for v in agreement.values() for m in margins if v[f"stable@{m:g}"]
    ]
    return {
        "model": model,
        "device": device,
        "precision": low,
        "crops": sum(len(b) for b in batches),
        "seconds": times,
        "median_float32": statistics.median(times["float32"]),
        "median_bfloat16": statistics.median(times["bfloat16"]),
        "speedup_median_of_rounds": statistics.median(
            a / b for a, b in zip(times["float32"], times["bfloat16"], strict=True)
        ),
        "agreement": agreement,
        "min_stable_agreement": min(stable_pixels) if stable_pixels else None,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    import torch

    from scclip_cli.model.loading import cpu_bfloat16_support

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["scclip-tiny", "ViT-B-16-quickgelu"])
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.02, 0.005])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--precision", default=None, help="bfloat16 | float16 (default: float16 on CUDA)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    low = args.precision or ("float16" if args.device.startswith("cuda") else "bfloat16")
    print(
        f"native bfloat16: {cpu_bfloat16_support() or 'none'}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}"
    )
    results = []
    for model in args.models:
        result = measure(model, args.classes, args.rounds, args.margins, args.device, low)
        results.append(result)
        print(
            f"\n{model}: {result['crops']} crops; float32 {result['median_float32']:.2f} s, "
            f"{low} {result['median_bfloat16']:.2f} s, speed-up (median of rounds) "
            f"{result['speedup_median_of_rounds']:.2f}×\n"
            "| image | all pixels | "
            + " | ".join(f"stable at {m:g} (share)" for m in args.margins)
            + " |\n|---|---:|"
            + "---:|" * len(args.margins)
        )
        for name, a in result["agreement"].items():
            cells = []
            for m in args.margins:
                value = a[f"stable@{m:g}"]
                shown = "-" if value is None else f"{100 * value:.2f} %"
                cells.append(f"{shown} ({100 * a[f'share@{m:g}']:.1f} %)")
            print(f"| {name} | {100 * a['all']:.2f} % | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
