"""torch.compile and oneDNN fusions on the CPU, against the eager code the tool runs.

    python benchmarks/compile_cpu.py                 # ViT-B/16 shape, random weights (~2 min)
    python benchmarks/compile_cpu.py --quick         # tiny model (a smoke run)

Two pieces, each variant in a fresh child process (torch.compile keeps global state):

* **vision tower** (``model.visual`` on ``--batch`` random crops of 224 px, float32): eager;
  ``torch.compile`` (Inductor, default mode); ``torch.compile`` with Inductor's ``freezing`` (the
  weights become constants, so Inductor packs them for oneDNN and fuses around them); TorchScript
  ``trace`` → ``freeze`` → ``optimize_for_inference`` (PyTorch's oneDNN fusion passes).
* **post-processing step** (the per-pixel work of ``maps/postprocess.py`` on one tile: the
  product of the patch-row weights with the patch rows, ``2^x``, the best query's share of the
  sum), eager against the same step with its elementwise part ``torch.compile``-d (one fused loop
  instead of three passes); scaled to a 12-megapixel image with ``--queries`` queries.

For each it reports the first call (which includes compiling), the best and the median of
``--rounds`` timed calls after one warm-up, and the largest difference from the eager output. Only a
variant that is faster *including* its compile time on a typical run would be worth adopting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TOWER_VARIANTS = ("eager", "compile", "compile-freezing", "torchscript-onednn")
STEP_VARIANTS = ("eager", "compile")
TILE_ROWS = 8
TILE_WIDTH = 874
PATCH_ROWS = 6
TWELVE_MP = 12e6


def timed(call: Callable[[], Any], rounds: int) -> tuple[float, float, list[float]]:
    """(first call s, best s, every timed round s): one warm-up call after the first."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, min(times), times


def run_tower(model: str, variant: str, batch: int, rounds: int) -> dict[str, Any]:
    import torch

    from scclip_cli.model.loading import load_clip

    visual = load_clip(model, "random", device="cpu").model.visual.eval()
    crops = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = visual(crops)
    if variant == "eager":
        forward: Callable[[Any], Any] = visual
    elif variant == "compile":
        forward = torch.compile(visual)
    elif variant == "compile-freezing":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        forward = torch.compile(visual)
    elif variant == "torchscript-onednn":
        with torch.no_grad():
            traced = torch.jit.trace(visual, crops)
            forward = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    else:
        raise ValueError(variant)
    outputs: list[Any] = []

    def call() -> None:
        with torch.inference_mode():
            outputs[:] = [forward(crops)]

    first, best, times = timed(call, rounds)
    diff = float((outputs[0] - reference).abs().max())
    return {"first_s": first, "best_s": best, "times_s": times, "max_abs_diff": diff}


def run_step(variant: str, queries: int, rounds: int) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(PATCH_ROWS, TILE_WIDTH * queries, generator=generator) * 0.05
    weights = torch.rand(TILE_ROWS, PATCH_ROWS, generator=generator) * 72.0  # × scale × log2 e
    logits = torch.empty(TILE_ROWS, TILE_WIDTH * queries)
    best = torch.randint(0, queries, (TILE_ROWS * TILE_WIDTH,), generator=generator)

    def eager_step(flat: Any, index: Any) -> Any:
        return flat.exp2_().gather(1, index[:, None])[:, 0].div_(flat.sum(1))

    def fused_step(flat: Any, index: Any) -> Any:
        e = torch.exp2(flat)
        return e.gather(1, index[:, None])[:, 0] / e.sum(1)

    step = eager_step if variant == "eager" else torch.compile(fused_step, dynamic=False)
    outputs: list[Any] = []

    def call() -> None:
        torch.mm(weights, rows, out=logits)
        outputs[:] = [step(logits.view(-1, queries), best)]

    first, best_s, times = timed(call, rounds)
    torch.mm(weights, rows, out=logits)
    reference = eager_step(logits.view(-1, queries).clone(), best)
    scale = TWELVE_MP / (TILE_ROWS * TILE_WIDTH)
    return {
        "first_s": first,
        "best_s": best_s * scale,
        "times_s": [t * scale for t in times],
        "max_abs_diff": float((outputs[0] - reference).abs().max()),
        "per": "12-megapixel image (tiles of the same size), one thread",
    }


def child_main(request: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(request["threads"])
    if request["piece"] == "tower":
        return run_tower(request["model"], request["variant"], request["batch"], request["rounds"])
    torch.set_num_threads(1)
    return run_step(request["variant"], request["queries"], request["rounds"])


def in_child(request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(request)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def table(title: str, results: dict[str, dict[str, Any]], unit: str) -> str:
    lines = [
        title,
        "",
        f"| variant | first call s | best {unit} s | median {unit} s | × eager (best) | max abs diff |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    eager = results["eager"].get("best_s")
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | |")
            continue
        ratio = r["best_s"] / eager if eager else float("nan")
        median = statistics.median(r["times_s"])
        lines.append(
            f"| {name} | {r['first_s']:.1f} | {r['best_s']:.3f} | {median:.3f} | {ratio:.2f} | "
            f"{r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--batch", type=int, default=4, help="crops per forward pass")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(child_main(json.loads(args.child))))
        return {}
    if args.quick:
        args.model, args.rounds, args.batch = "scclip-tiny", 2, 2
    base = {"model": args.model, "batch": args.batch, "rounds": args.rounds}
    base |= {"threads": args.threads, "queries": args.queries}
    tower = {v: in_child({**base, "piece": "tower", "variant": v}) for v in TOWER_VARIANTS}
    step = {v: in_child({**base, "piece": "step", "variant": v}) for v in STEP_VARIANTS}
    print(
        table(
            f"Vision tower, {args.model}, {args.batch} crops, {args.threads} threads:",
            tower,
            "call",
        )
    )
    print()
    print(table(f"Post-processing step, {args.queries} queries:", step, "12 MP"))
    results = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "tower": tower}
    results["step"] = step
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
