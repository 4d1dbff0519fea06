"""Throughput and peak memory of ``scclip segment`` next to the bare forward pass of the same crops.

    python benchmarks/throughput.py                      # full run, ViT-B/16, CPU (~8 min on 2 cores)
    python benchmarks/throughput.py --quick              # smoke run (~1 min)
    python benchmarks/throughput.py --device cuda        # on a GPU (float16 by default there)

Everything runs on generated data in a temporary folder: JPEG photos with structure (soft shapes
on gradients, texture, noise) and vocabularies of distinct made-up words. Each configuration runs in
a fresh child process, which loads the model and the vocabulary (not timed), then measures

* **floor**: ``model.visual`` (the whole open_clip vision tower, ``inference_mode``) on exactly the
  crops the protocol makes of those images (resize, normalise, sliding windows), in the batches
  ``Segmenter`` forms (``--batch-size`` crops, across images), with the crops made beforehand;
* **features**: SC-CLIP's dense features (``Segmenter.extractor``) on the same batches;
* **segment**: the real job, :func:`scclip_cli.runs.segment.segment` with the loaded segmenter, on
  the image folder: decoding, resizing, windows, model, post-processing and writing the masks and
  JSON files, as ``scclip segment`` runs it after the model load;
* **segment-1** (main comparison only): the same with one crop per forward pass, the way the
  paper's code runs, to show what batching crops across windows and images buys.

Peak memory is the child's peak resident set size (``VmHWM``), reset before each phase through
``/proc/self/clear_refs``, so it includes the model and the vocabulary; on CUDA the peak allocated
GPU memory is reported too. The phases run in turn, in an order that rotates from round to round,
for ``--repeat`` rounds (``--scaling-repeat`` for the scaling tables) and each reports its fastest
round, and the median over rounds of each phase's time over the floor's in the same round; ratios
compare phases of one child, so slow moments of a shared machine affect them less than absolute
times (``/proc/loadavg`` is recorded per child, every round's time is in ``--json``).

Tables: the main comparison (``--size``, ``--classes``, ``--images`` images), then how time and
memory grow with the image size (``--megapixels``, ``--classes`` classes, one image each) and with
the vocabulary (``--vocab-sizes`` at ``--size``). Vocabularies are embedded once, with one prompt
template (the default 80 templates cost 80 times the text-tower time, a one-off that ``scclip vocab``
caches; the segmentation cost depends only on the number of queries). With ``--pretrained random``
the seeded random weights are written once to a checkpoint in the temporary folder so each child
loads them in seconds instead of re-initialising them; they are the same weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

PROMPT_TEMPLATE = "a photo of a {}."
"""The single template the generated vocabularies are embedded with."""
MAIN_SIZE = (683, 512)
"""Width × height of the main comparison's images (a 4:3 photo; resized to 448 × 336: 6 crops)."""
MEGAPIXEL_SIZES = {0.3: (640, 480), 1: (1152, 864), 3: (2000, 1500), 12: (4000, 3000)}
"""4:3 sizes for the image-size table: all resize to 448 × 336, so the crops (and the floor) are
the same and only decoding, resizing, post-processing and writing grow."""
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
ONE_CROP_PHASE = "segment-1"
"""``scclip segment`` with ``--batch-size 1``: one crop per forward pass, as the paper's code runs."""


# ----------------------------------------------------------------------------- generated data
def made_up_words(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct made-up lower-case words (two or three syllables), deterministic."""
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def write_vocabulary(path: Path, count: int) -> Path:
    """A class list of ``count`` made-up words, one class per line."""
    path.write_text("\n".join(made_up_words(count)) + "\n")
    return path


def synthetic_photo(width: int, height: int, seed: int) -> np.ndarray:
    """``[height, width, 3]`` uint8 RGB with structure: a gradient, soft shapes, texture, noise."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    # drawn at (at most) 1024 px on the long side, then resized: fast for 12 MP images
    scale = min(1.0, 1024 / max(width, height))
    w, h = max(8, round(width * scale)), max(8, round(height * scale))
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    base = (top * (1 - ramp) + bottom * ramp) * np.ones((1, w, 1))
    canvas = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(w // 10, w // 2), y0 + rng.integers(h // 10, h // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (int(x0), int(y0), int(x1), int(y1))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=max(1.0, w / 300)))
    if (w, h) != (width, height):
        canvas = canvas.resize((width, height), Image.BILINEAR)
    pixels = np.asarray(canvas).astype(np.int16)
    texture = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)  # grain, same in RGB
    return np.clip(pixels + texture, 0, 255).astype(np.uint8)


def write_images(folder: Path, count: int, width: int, height: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs (quality 90) of ``width × height`` pixels in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:03d}.jpg"
        Image.fromarray(synthetic_photo(width, height, seed + i)).save(path, quality=90)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- measurements
def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (or the start), in MiB."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


@dataclass
class Phase:
    """One measured phase of a child run, over its repetitions."""

    runs: list[float] = field(default_factory=list)
    """Seconds of each repetition."""
    cpu_runs: list[float] = field(default_factory=list)
    """CPU seconds (user + system, all threads of the process) of each repetition."""
    peak_rss_mib: float = 0.0
    """Largest peak RSS of the repetitions."""
    peak_gpu_mib: float | None = None

    @property
    def seconds(self) -> float:
        """The fastest repetition: the one other processes disturbed least."""
        return min(self.runs)

    @property
    def cpu_seconds(self) -> float:
        """The smallest CPU time of the repetitions (the work done, less sensitive than the wall
        time to other processes taking the cores)."""
        return min(self.cpu_runs)


def cpu_time() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def measured(device: Any, out: dict[str, Phase], name: str) -> Iterator[None]:
    """Time a phase and record its peak memory in ``out[name]`` (one more repetition)."""
    import torch

    gc.collect()
    cuda = getattr(device, "type", str(device)) == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    cpu_start, start = cpu_time(), time.perf_counter()
    yield
    if cuda:
        torch.cuda.synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - start, cpu_time() - cpu_start
    phase = out.setdefault(name, Phase())
    phase.runs.append(seconds)
    phase.cpu_runs.append(cpu_seconds)
    phase.peak_rss_mib = max(phase.peak_rss_mib, peak_rss_mib())
    if cuda:
        gpu = torch.cuda.max_memory_allocated(device) / 2**20
        phase.peak_gpu_mib = max(phase.peak_gpu_mib or 0.0, gpu)


def protocol_batches(segmenter: Any, image_paths: Sequence[Path]) -> list[Any]:
    """The crop batches ``Segmenter`` forms for these images: ``[B, 3, crop, crop]`` float32 each.

    Same reading (EXIF applied), resize, normalisation and windows as ``segment``, and the same
    batching rule (``batch_size`` crops across images; a batch ends early where the crop size
    changes).
    """
    import torch

    from scclip_cli.files.image_io import read_image_rgb
    from scclip_cli.maps.sliding_window import windows

    p = segmenter.protocol
    batches: list[Any] = []
    batch: list[Any] = []
    for path in image_paths:
        prepared = segmenter.prepare(read_image_rgb(path))
        _, h, w = prepared.pixels.shape
        for win in windows(h, w, p.crop, p.stride):
            crop = prepared.pixels[:, win.y1 : win.y2, win.x1 : win.x2]
            if batch and (len(batch) == segmenter.batch_size or batch[0].shape != crop.shape):
                batches.append(torch.stack(batch))
                batch = []
            batch.append(crop)
    if batch:
        batches.append(torch.stack(batch))
    return batches


def run_floor(segmenter: Any, batches: Sequence[Any]) -> None:
    """The bare open_clip vision tower on the batches (moved to the device as ``Segmenter`` does)."""
    import torch

    visual, device, dtype = segmenter.clip.model.visual, segmenter.device, segmenter.clip.dtype
    with torch.inference_mode():
        for crops in batches:
            if device.type == "cuda":
                crops = crops.pin_memory().to(device, non_blocking=True)
            visual(crops.to(dtype))


def run_features(segmenter: Any, batches: Sequence[Any]) -> None:
    """SC-CLIP's dense features of the batches (no scores, no post-processing)."""
    import torch

    device, dtype = segmenter.device, segmenter.clip.dtype
    with torch.inference_mode():
        for crops in batches:
            if device.type == "cuda":
                crops = crops.pin_memory().to(device, non_blocking=True)
            segmenter.extractor(crops.to(dtype))


def run_segment(segmenter: Any, image_dir: Path, out_dir: Path) -> Any:
    """``scclip segment IMAGE_DIR --out OUT_DIR`` with the already loaded segmenter."""
    from scclip_cli.runs.segment import segment

    summary = segment([str(image_dir)], None, out_dir, segmenter=segmenter, quiet=True)
    if summary.failed or summary.done != summary.total:
        raise RuntimeError(f"segment failed on {summary.failed} of {summary.total} images")
    return summary


# ----------------------------------------------------------------------------- one configuration
@dataclass
class Config:
    """One child run: a folder of images, a vocabulary, and what to measure."""

    name: str
    image_dir: str
    vocab: str
    model: str
    pretrained: str
    device: str = "cpu"
    precision: str = "auto"
    batch_size: int | None = None
    """Crops per forward pass; ``None``: the segmenter's default for the device."""
    phases: tuple[str, ...] = ("floor", "features", "segment")
    repeat: int = 1
    """Rounds of the phases (in turn, so a busy moment of the machine hits all of them alike; the
    order rotates from round to round, since a phase can run faster after another one)."""
    warmup: bool = True


@dataclass
class Result:
    config: Config
    images: int
    crops: int
    batches: int
    width: int
    height: int
    classes: int
    batch_size: int
    """Crops per forward pass, as the segmenter resolved it."""
    load_seconds: float
    idle_rss_mib: float
    phases: dict[str, Phase] = field(default_factory=dict)
    threads: dict[str, Any] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)


def run_config(config: Config) -> Result:
    """Load the model and vocabulary, then measure the configured phases (in this process)."""
    import torch
    from PIL import Image

    from scclip_cli.predict.segmenter import Segmenter

    start = time.perf_counter()
    segmenter = Segmenter.load(
        config.vocab,
        model=config.model,
        pretrained=config.pretrained,
        device=config.device,
        precision=config.precision,
        batch_size=config.batch_size,
    )
    load_seconds = time.perf_counter() - start
    image_dir = Path(config.image_dir)
    paths = sorted(image_dir.glob("*.jpg"))
    with Image.open(paths[0]) as first:
        width, height = first.size
    batches = protocol_batches(segmenter, paths)
    device = segmenter.device
    if config.warmup:  # first calls set up kernels and thread pools; keep them out of the timings
        small = batches[0][:2]
        run_floor(segmenter, [small])
        run_features(segmenter, [small])
    gc.collect()
    result = Result(
        config=config,
        images=len(paths),
        crops=sum(int(b.shape[0]) for b in batches),
        batches=len(batches),
        width=width,
        height=height,
        classes=len(segmenter.class_names),
        batch_size=segmenter.batch_size,
        load_seconds=load_seconds,
        idle_rss_mib=rss_mib(),
        threads={
            "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count(),
        },
        load_average=load_average(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(config.repeat):
            # each round starts one phase later, so that no phase always follows the same one
            shift = round_ % len(config.phases)
            for phase in (*config.phases[shift:], *config.phases[:shift]):
                with measured(device, result.phases, phase):
                    if phase == "floor":
                        run_floor(segmenter, batches)
                    elif phase == "features":
                        run_features(segmenter, batches)
                    elif phase == "segment":
                        run_segment(segmenter, image_dir, Path(tmp) / f"masks-{round_}")
                    elif phase == ONE_CROP_PHASE:
                        batch_size, segmenter.batch_size = segmenter.batch_size, 1
                        try:
                            run_segment(segmenter, image_dir, Path(tmp) / f"masks-1-{round_}")
                        finally:
                            segmenter.batch_size = batch_size
                    else:
                        raise ValueError(f"unknown phase {phase!r}")
    result.load_average += load_average()
    return result


def run_child(config: Config, workdir: Path) -> Result:
    """:func:`run_config` in a fresh Python process (so its peak memory is this run's alone)."""
    config_path = workdir / f"config-{config.name}.json"
    result_path = workdir / f"result-{config.name}.json"
    config_path.write_text(json.dumps(dataclasses.asdict(config)))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(config_path)]
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if completed.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"child {config.name} failed:\n{completed.stdout[-4000:]}")
    return result_from_dict(json.loads(result_path.read_text()))


def result_from_dict(data: dict[str, Any]) -> Result:
    data = dict(data)
    config = data.pop("config")
    config["phases"] = tuple(config["phases"])
    phases = {
        k: Phase(**{f: v[f] for f in ("runs", "cpu_runs", "peak_rss_mib", "peak_gpu_mib")})
        for k, v in data.pop("phases").items()
    }
    return Result(config=Config(**config), phases=phases, **data)


def child_main(config_path: Path) -> None:
    data = json.loads(config_path.read_text())
    data["phases"] = tuple(data["phases"])
    result = run_config(Config(**data))
    out = config_path.with_name(config_path.name.replace("config-", "result-"))
    out.write_text(json.dumps(dataclasses.asdict(result)))


def prepare_vocabularies(
    workdir: Path, sizes: Sequence[int], model: str, pretrained: str, device: str, precision: str
) -> tuple[str, dict[int, Path]]:
    """Write made-up vocabularies and their embedding caches (one template); returns the weights to
    use (a checkpoint of the random weights when ``pretrained`` is ``random[:SEED]``) and the caches.

    Runs in this process: call it from a child (``--child-prepare``) to keep the parent light.
    """
    import torch

    from scclip_cli.files.vocabulary import read_vocabulary
    from scclip_cli.model.loading import load_clip, parse_random_seed
    from scclip_cli.model.text_embeddings import embed_vocabulary, save_embeddings

    clip = load_clip(model, pretrained, device=device, precision=precision)
    if parse_random_seed(pretrained) is not None:
        checkpoint = workdir / "random-weights.pt"
        torch.save(clip.model.state_dict(), checkpoint)
        pretrained = str(checkpoint)
        clip = load_clip(model, pretrained, device=device, precision=precision)
    # The first K made-up words are the same for every K: embed the largest list once, slice it.
    largest = max(sizes)
    text = write_vocabulary(workdir / f"vocab-{largest}.txt", largest)
    full = embed_vocabulary(clip, read_vocabulary(text), templates=(PROMPT_TEMPLATE,))
    caches: dict[int, Path] = {}
    for size in sorted(set(sizes)):
        write_vocabulary(workdir / f"vocab-{size}.txt", size)
        part = dataclasses.replace(
            full,
            class_names=full.class_names[:size],
            query_class=full.query_class[:size],
            features=full.features[:size],
            queries=full.queries[:size],
        )
        caches[size] = workdir / f"vocab-{size}.npz"
        save_embeddings(part, caches[size])
    return pretrained, caches


def prepare_child(
    workdir: Path, args: argparse.Namespace, sizes: Sequence[int]
) -> tuple[str, dict[int, Path]]:
    """:func:`prepare_vocabularies` in a child process."""
    request = {
        "workdir": str(workdir),
        "sizes": list(sizes),
        "model": args.model,
        "pretrained": args.pretrained,
        "device": args.device,
        "precision": args.precision,
    }
    path = workdir / "prepare.json"
    path.write_text(json.dumps(request))
    command = [sys.executable, str(Path(__file__).resolve()), "--child-prepare", str(path)]
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answer = workdir / "prepared.json"
    if completed.returncode != 0 or not answer.exists():
        raise RuntimeError(f"preparing the vocabularies failed:\n{completed.stdout[-4000:]}")
    data = json.loads(answer.read_text())
    return data["pretrained"], {int(k): Path(v) for k, v in data["caches"].items()}


def prepare_child_main(request_path: Path) -> None:
    r = json.loads(request_path.read_text())
    workdir = Path(r["workdir"])
    pretrained, caches = prepare_vocabularies(
        workdir, r["sizes"], r["model"], r["pretrained"], r["device"], r["precision"]
    )
    answer = {"pretrained": pretrained, "caches": {str(k): str(v) for k, v in caches.items()}}
    (workdir / "prepared.json").write_text(json.dumps(answer))


# ----------------------------------------------------------------------------- report
def _mib(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def round_ratio(phase: Phase, floor: Phase) -> float:
    """The median over rounds of the phase's time over the floor's in the same round: the two ran
    close together, so a machine that slows down for a while affects this less than the ratio of
    the fastest rounds."""
    return statistics.median(a / b for a, b in zip(phase.runs, floor.runs, strict=True))


def main_table(result: Result) -> str:
    floor = result.phases["floor"].seconds
    n = result.images
    gpu = any(p.peak_gpu_mib is not None for p in result.phases.values())
    lines = [
        f"{result.images} images of {result.width}×{result.height}, {result.classes} classes, "
        f"{result.crops} crops in {result.batches} batches of up to {result.batch_size}",
        "",
        "| phase | s | s / image | images / s | × floor | × floor, median of rounds | CPU s "
        "| CPU × floor | peak RSS MiB |" + (" peak GPU MiB |" if gpu else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""),
    ]
    floor_cpu = result.phases["floor"].cpu_seconds
    labels = {
        "floor": "bare forward (`model.visual`, floor)",
        "features": "SC-CLIP dense features",
        "segment": "`scclip segment` end to end",
        ONE_CROP_PHASE: "the same, one crop per forward pass (`--batch-size 1`)",
    }
    for name, phase in result.phases.items():
        lines.append(
            f"| {labels.get(name, name)} | {phase.seconds:.2f} | {phase.seconds / n:.2f} "
            f"| {n / phase.seconds:.3f} | {phase.seconds / floor:.3f} "
            f"| {round_ratio(phase, result.phases['floor']):.3f} "
            f"| {phase.cpu_seconds:.1f} | {phase.cpu_seconds / floor_cpu:.3f} "
            f"| {_mib(phase.peak_rss_mib)} |" + (f" {_mib(phase.peak_gpu_mib)} |" if gpu else "")
        )
    lines.append("")
    if ONE_CROP_PHASE in result.phases and "segment" in result.phases:
        speedup = result.phases[ONE_CROP_PHASE].seconds / result.phases["segment"].seconds
        lines.append(
            f"batches of {result.batch_size} crops: {speedup:.2f} × the images per second "
            "of one crop at a time"
        )
    lines.append(
        f"model + vocabulary load {result.load_seconds:.1f} s (not in the times); idle RSS after "
        f"load {result.idle_rss_mib:,.0f} MiB"
    )
    return "\n".join(lines)


def scaling_table(results: Sequence[Result], key: str) -> str:
    head = "| image (W×H) | megapixels |" if key == "size" else "| classes |"
    lines = [
        head + " crops / image | segment s / image | floor s / image | × floor "
        "| × floor, median of rounds | CPU × floor | peak RSS MiB |",
        "|" + "---:|" * (head.count("|") - 1) + "---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        seg, floor = r.phases["segment"], r.phases["floor"]
        first = (
            f"| {r.width}×{r.height} | {r.width * r.height / 1e6:.1f} |"
            if key == "size"
            else f"| {r.classes} |"
        )
        lines.append(
            first + f" {r.crops / r.images:.0f} | {seg.seconds / r.images:.2f} "
            f"| {floor.seconds / r.images:.2f} | {seg.seconds / floor.seconds:.3f} "
            f"| {round_ratio(seg, floor):.3f} "
            f"| {seg.cpu_seconds / floor.cpu_seconds:.3f} | {_mib(seg.peak_rss_mib)} |"
        )
    return "\n".join(lines)


def machine_description(device: str) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_num_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ----------------------------------------------------------------------------- driver
def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--precision", default="auto", help="auto | float32 | float16 | bfloat16")
    parser.add_argument(
        "--batch-size", type=int, help="crops per forward pass (default: the segmenter's)"
    )
    parser.add_argument("--size", type=parse_size, default=MAIN_SIZE, help="WxH, main comparison")
    parser.add_argument("--images", type=int, default=6, help="images in the main comparison")
    parser.add_argument("--classes", type=int, default=150, help="vocabulary of the main run")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the main comparison")
    parser.add_argument(
        "--megapixels",
        type=lambda s: [float(v) for v in s.split(",") if v],
        default=[0.3, 1, 3, 12],
        help=f"image sizes of the size table, from {sorted(MEGAPIXEL_SIZES)} ('' for none)",
    )
    parser.add_argument(
        "--vocab-sizes",
        type=lambda s: [int(v) for v in s.split(",") if v],
        default=[20, 150, 500, 1000],
        help="vocabularies of the vocabulary table ('' for none)",
    )
    parser.add_argument(
        "--scaling-repeat", type=int, default=3, help="rounds of each size / vocabulary run"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 images and 20 classes, one size (3 MP) and one vocabulary (150), once",
    )
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-prepare", type=Path, help=argparse.SUPPRESS)
    return parser


def result_dict(result: Result) -> dict[str, Any]:
    """JSON-ready result, with each phase's best time as ``seconds``."""
    data = dataclasses.asdict(result)
    for name, phase in result.phases.items():
        data["phases"][name]["seconds"] = phase.seconds
        data["phases"][name]["cpu_seconds"] = phase.cpu_seconds
    return data


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns every number (also printed as Markdown tables)."""
    args = build_parser().parse_args(argv)
    if args.child is not None:
        child_main(args.child)
        return {}
    if args.child_prepare is not None:
        prepare_child_main(args.child_prepare)
        return {}
    if args.quick:
        args.images, args.classes, args.repeat, args.scaling_repeat = 2, 20, 1, 1
        args.megapixels, args.vocab_sizes = [3], [150]
    unknown = [mp for mp in args.megapixels if mp not in MEGAPIXEL_SIZES]
    if unknown:
        raise SystemExit(f"--megapixels: unknown sizes {unknown}; known {sorted(MEGAPIXEL_SIZES)}")

    started = time.perf_counter()
    width, height = args.size
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scclip-bench-")))
        vocab_sizes = sorted({args.classes, *args.vocab_sizes})
        log(f"workdir {workdir}; embedding vocabularies of {vocab_sizes} made-up words ...")
        pretrained, caches = prepare_child(workdir, args, vocab_sizes)

        def run(
            name: str, folder: Path, classes: int, phases: tuple[str, ...], repeat: int
        ) -> Result:
            config = Config(
                name=name,
                image_dir=str(folder),
                vocab=str(caches[classes]),
                model=args.model,
                pretrained=pretrained,
                device=args.device,
                precision=args.precision,
                batch_size=args.batch_size,
                phases=phases,
                repeat=repeat,
            )
            log(f"{name}: {classes} classes, {folder.name} ...")
            return run_child(config, workdir)

        main_dir = workdir / f"images-{width}x{height}-{args.images}"
        write_images(main_dir, args.images, width, height)
        main_result = run(
            "main",
            main_dir,
            args.classes,
            ("floor", "features", "segment", ONE_CROP_PHASE),
            args.repeat,
        )
        log(main_table(main_result))
        size_results = []
        for mp in args.megapixels:
            w, h = MEGAPIXEL_SIZES[mp]
            folder = workdir / f"images-{w}x{h}-1"
            write_images(folder, 1, w, h, seed=100)
            size_results.append(
                run(
                    f"size-{w}x{h}", folder, args.classes, ("floor", "segment"), args.scaling_repeat
                )
            )
        vocab_results = []
        if args.vocab_sizes:
            folder = workdir / f"images-{width}x{height}-1"
            write_images(folder, 1, width, height, seed=200)
            for classes in args.vocab_sizes:
                vocab_results.append(
                    run(
                        f"vocab-{classes}",
                        folder,
                        classes,
                        ("floor", "segment"),
                        args.scaling_repeat,
                    )
                )

    machine = machine_description(args.device)
    command = " ".join(
        ["python benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)]
    )
    report = [
        f"`{command}`",
        "",
        f"{machine['date']}; {machine['cpu']}, {machine['cpu_count']} cores; torch {machine['torch']}"
        f" ({main_result.threads['torch_num_threads']} threads); {args.model} / {args.pretrained}"
        f" on {args.device}; best of {args.repeat} rounds (scaling tables: {args.scaling_repeat});"
        f" run took {(time.perf_counter() - started) / 60:.1f} min",
        "",
        main_table(main_result),
    ]
    if size_results:
        report += [
            "",
            f"Image size ({args.classes} classes, 1 image each):",
            "",
            scaling_table(size_results, "size"),
        ]
    if vocab_results:
        report += [
            "",
            f"Vocabulary ({width}×{height}, 1 image each):",
            "",
            scaling_table(vocab_results, "classes"),
        ]
    print("\n".join(report))
    everything = {
        "machine": machine,
        "command": command,
        "main": result_dict(main_result),
        "sizes": [result_dict(r) for r in size_results],
        "vocabularies": [result_dict(r) for r in vocab_results],
        "markdown": "\n".join(report),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(everything, indent=2))
    return everything


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
