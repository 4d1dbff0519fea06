"""Where the time of one ``scclip segment`` call on one big photo goes (docs/performance-cache.md,
"Big photos").

    python benchmarks/segment_timeline.py [--megapixels 12] [--classes 150] [--rounds 4] [--json F]

One generated photo (as ``benchmarks/throughput.py`` makes them) and a made-up vocabulary, with
ViT-B/16-shaped random weights by default; in this process, after a warm-up run. Each round runs
``segment`` on the photo's folder, as the command does (reader and writer threads included), and
times its phases by wrapping the public functions the run calls:

- **read**: ``Segmenter.read`` (decoding, resizing and normalising, on the reader thread);
- **model**: from the end of reading to the start of post-processing (the forward passes and the
  window scores);
- **post-processing**: ``postprocess.labels_from_scores`` (labels and statistics);
- **label PNG**: ``mask_io.write_label_png`` (on the writer thread);
- **whole call**: ``segment`` from start to end (with the output folder's set-up and summary).

Prints a table (fastest and median of the rounds, in seconds) and writes the numbers to ``--json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# this folder is first on sys.path when a script here runs (benchmarks/ is not a package)
import throughput as bench

PHASES = ("read", "model", "post-processing", "label PNG", "whole call")


@contextmanager
def timed(owner: Any, name: str, spans: dict[str, list[tuple[float, float]]]) -> Iterator[None]:
    """Record ``(start, end)`` of every call of ``owner.name`` under ``name`` meanwhile."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spans.setdefault(name, []).append((start, time.perf_counter()))

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def one_round(segmenter: Any, image_dir: Path, out_dir: Path) -> dict[str, float]:
    """Seconds of each phase (see the module notes) of one ``segment`` call on one image."""
    from scclip_cli.files import mask_io
    from scclip_cli.maps import postprocess
    from scclip_cli.predict.segmenter import Segmenter
    from scclip_cli.runs.segment import segment

    spans: dict[str, list[tuple[float, float]]] = {}
    with (
        timed(Segmenter, "read", spans),
        timed(postprocess, "labels_from_scores", spans),
        timed(mask_io, "write_label_png", spans),
    ):
        start = time.perf_counter()
        summary = segment([str(image_dir)], None, out_dir, segmenter=segmenter, quiet=True)
        end = time.perf_counter()
    if summary.failed or summary.done != 1:
        raise RuntimeError("the photo was not segmented")
    (read,), (post,), (png,) = spans["read"], spans["labels_from_scores"], spans["write_label_png"]
    return {
        "read": read[1] - read[0],
        "model": post[0] - read[1],
        "post-processing": post[1] - post[0],
        "label PNG": png[1] - png[0],
        "whole call": end - start,
    }


def table(rounds: Sequence[dict[str, float]]) -> str:
    lines = ["| phase | fastest s | median s |", "|---|---:|---:|"]
    for phase in PHASES:
        values = [r[phase] for r in rounds]
        lines.append(f"| {phase} | {min(values):.3f} | {statistics.median(values):.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument(
        "--megapixels", type=float, default=12, help=f"one of {sorted(bench.MEGAPIXEL_SIZES)}"
    )
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if args.megapixels not in bench.MEGAPIXEL_SIZES:
        raise SystemExit(f"--megapixels: one of {sorted(bench.MEGAPIXEL_SIZES)}")
    width, height = bench.MEGAPIXEL_SIZES[args.megapixels]

    from scclip_cli.predict.segmenter import Segmenter

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image_dir = work / "images"
        bench.write_images(image_dir, 1, width, height)
        pretrained, caches = bench.prepare_vocabularies(
            work, [args.classes], args.model, args.pretrained, "cpu", "float32"
        )
        segmenter = Segmenter.load(
            caches[args.classes], model=args.model, pretrained=pretrained, device="cpu"
        )
        one_round(segmenter, image_dir, work / "warm-up")
        rounds = [one_round(segmenter, image_dir, work / f"out-{i}") for i in range(args.rounds)]
    result = {
        "image": f"{width}x{height}",
        "classes": args.classes,
        "model": args.model,
        "rounds": rounds,
        "machine": bench.machine_description("cpu"),
    }
    print(f"{width}×{height}, {args.classes} classes, {args.model}, {args.rounds} rounds\n")
    print(table(rounds))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
