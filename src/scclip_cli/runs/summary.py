"""Bookkeeping of a batch run: counts, failures, per-class totals, timing, and the run-level files.

A :class:`RunSummary` is filled from two threads (the model thread records read and model failures,
the writer thread records finished images), so every ``record_*`` method takes a lock.

Run-level files under ``--out`` (``<tag>`` is ``.shard-I-of-N`` with ``--shard``, empty otherwise, so
shards can share one folder):

- ``summary<tag>.json``: :meth:`RunSummary.to_dict`, written atomically at the end of the run (also
  when it is interrupted, with ``"interrupted": true``).
- ``failures<tag>.jsonl``: one ``{"path", "reason", "stage"}`` line per input that failed *in this
  run*. Lines are appended and flushed as failures happen, and the file is rewritten atomically, in
  input order, at the end. An input that failed in an earlier run is retried (it has no outputs),
  so the file never lists an input that is now done.
"""

from __future__ import annotations

import functools
import json
import platform
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from scclip_cli.errors import EXIT_OK, EXIT_SOME_FAILED
from scclip_cli.files.atomic import atomic_write_text

VERSIONED_PACKAGES = (
    "scclip-cli",
    "torch",
    "torchvision",
    "open_clip_torch",
    "numpy",
    "pillow",
    "scikit-learn",
)
"""Distributions whose versions go into ``summary.json``."""

SUMMARY_NAME = "summary"
FAILURES_NAME = "failures"
LEGEND_NAMES = ("legend.json", "legend.png")


def package_versions() -> dict[str, str | None]:
    """``{distribution: version}`` for :data:`VERSIONED_PACKAGES` (``None`` if not installed),
    plus ``python`` and ``platform``."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str | None], ...]:
    """Looked up once per process (reading package metadata is slow enough to be noticed before
    every run)."""
    from importlib import metadata

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return tuple(versions.items())


def describe_error(err: BaseException) -> str:
    """``"TypeName: message"`` (just the type's name when the message is empty): a failure's
    reason, or the error of a run that stopped."""
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_file_names(shard_tag: str | None) -> tuple[str, str]:
    """``(summary file, failures file)`` names, tagged with the shard when there is one."""
    tag = f".{shard_tag}" if shard_tag else ""
    return f"{SUMMARY_NAME}{tag}.json", f"{FAILURES_NAME}{tag}.jsonl"


def reserved_names(shard_tag: str | None) -> tuple[str, ...]:
    """Run-level file names under ``--out`` that no image output may take."""
    return (*run_file_names(shard_tag), *LEGEND_NAMES)


@dataclass(frozen=True)
class Failure:
    """One input that could not be segmented."""

    path: str
    reason: str
    stage: str
    """Where it failed: ``discover`` (folder listing), ``read`` (decoding), ``segment`` (model),
    or ``write`` (outputs)."""
    order: int = -1
    """Position in the run's sorted inputs (``-1`` for folder problems); the order of the final
    ``failures.jsonl``."""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "stage": self.stage}


@dataclass
class _ClassTotal:
    pixels: int = 0
    images: int = 0
    confidence_sum: float = 0.0
    """Sum over images of ``mean_confidence * pixels``."""


@dataclass
class RunSummary:
    """What a run did. Returned by :func:`scclip_cli.runs.segment.segment`.

    Per-class totals cover every image of the run that is complete at its end: those segmented
    now (``done``) and those found complete (``skipped``, read back from their JSON), so a resumed
    run reports the same totals as an uninterrupted one.
    """

    out_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    """The full configuration: model, weights, vocabulary, protocol, calibration, run options."""
    class_names: tuple[str, ...] = ()
    versions: dict[str, str | None] = field(default_factory=dict)
    total: int = 0
    """Images in this run (this shard), complete or not."""
    done: int = 0
    """Images segmented by this run."""
    skipped: int = 0
    """Images already complete, not redone."""
    failures: list[Failure] = field(default_factory=list)
    load_seconds: float = 0.0
    """Loading the model and embedding the vocabulary (0 when a segmenter was passed in)."""
    segment_seconds: float = 0.0
    """Wall time of the pipeline: reading, segmenting and writing the images."""
    read_wait_seconds: float = 0.0
    """Time the model thread waited for decoded images (reading is the bottleneck when large)."""
    write_wait_seconds: float = 0.0
    """Time the model thread waited for room in the writer's queue (writing is the bottleneck)."""
    interrupted: bool = False
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    summary_path: Path | None = None
    failures_path: Path | None = None
    _totals: dict[int, _ClassTotal] = field(default_factory=dict, repr=False)
    _area: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def exit_code(self) -> int:
        """0 when every input was segmented (now or before), 1 when some failed."""
        return EXIT_SOME_FAILED if self.failures else EXIT_OK

    @property
    def images_per_second(self) -> float:
        return self.done / self.segment_seconds if self.segment_seconds > 0 else 0.0

    def record_done(self, width: int, height: int, classes: Sequence[Mapping[str, Any]]) -> None:
        """Count an image segmented by this run; ``classes`` are its per-class statistics."""
        with self._lock:
            self.done += 1
            self._add(width, height, classes)

    def record_skipped(self, width: int, height: int, classes: Sequence[Mapping[str, Any]]) -> None:
        """Count an image a previous run completed (statistics read back from its JSON)."""
        with self._lock:
            self.skipped += 1
            self._add(width, height, classes)

    def record_failure(self, failure: Failure) -> None:
        with self._lock:
            self.failures.append(failure)

    def _add(self, width: int, height: int, classes: Sequence[Mapping[str, Any]]) -> None:
        self._area += int(width) * int(height)
        for entry in classes:
            total = self._totals.setdefault(int(entry["index"]), _ClassTotal())
            pixels = int(entry["pixels"])
            total.pixels += pixels
            total.images += 1
            total.confidence_sum += float(entry["mean_confidence"]) * pixels

    def class_totals(self) -> list[dict[str, Any]]:
        """``[{"index", "name", "pixels", "fraction", "images", "mean_confidence"}]`` for every class
        present in at least one complete image, by index. ``fraction`` is of all pixels of those
        images; ``mean_confidence`` is pixel-weighted."""
        with self._lock:
            items = sorted(self._totals.items())
            area = self._area
        rows = []
        for index, total in items:
            name = self.class_names[index] if index < len(self.class_names) else str(index)
            rows.append(
                {
                    "index": index,
                    "name": name,
                    "pixels": total.pixels,
                    "fraction": round(total.pixels / area, 6) if area else 0.0,
                    "images": total.images,
                    "mean_confidence": round(total.confidence_sum / total.pixels, 6)
                    if total.pixels
                    else 0.0,
                }
            )
        return rows

    def sorted_failures(self) -> list[Failure]:
        with self._lock:
            return sorted(self.failures, key=lambda f: (f.order, f.path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of ``summary.json``."""
        return {
            "status": "interrupted" if self.interrupted else "finished",
            "out_dir": str(self.out_dir),
            "config": self.config,
            "versions": self.versions,
            "counts": {
                "images": self.total,
                "done": self.done,
                "skipped": self.skipped,
                "failed": self.failed,
            },
            "failed": [f.to_dict() for f in self.sorted_failures()],
            "classes": self.class_totals(),
            "timing": {
                "load_seconds": round(self.load_seconds, 3),
                "segment_seconds": round(self.segment_seconds, 3),
                "images_per_second": round(self.images_per_second, 3),
                "read_wait_seconds": round(self.read_wait_seconds, 3),
                "write_wait_seconds": round(self.write_wait_seconds, 3),
            },
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at) if self.finished_at is not None else None,
        }


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))


def dumps_line(record: Mapping[str, Any]) -> str:
    """One JSON line (no trailing newline). Non-ASCII text is escaped, so the line is ASCII and
    survives any stdout encoding and file names that are not valid UTF-8."""
    return json.dumps(record, separators=(",", ":"))


class FailureLog:
    """``failures.jsonl`` while the run goes: appended and flushed per failure, so a watcher (or a
    killed run) sees them; :meth:`finalize` rewrites it atomically from the summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stream: IO[str] | None = path.open("w", encoding="utf-8")

    def append(self, failure: Failure) -> None:
        with self._lock:
            if self._stream is None:
                return
            try:
                self._stream.write(dumps_line(failure.to_dict()) + "\n")
                self._stream.flush()
            except OSError:
                pass  # the live log is best effort; finalize() writes the authoritative file

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def finalize(self, failures: Iterable[Failure]) -> None:
        """Replace the live log by the run's failures in input order (atomically)."""
        self.close()
        atomic_write_text(self.path, "".join(dumps_line(f.to_dict()) + "\n" for f in failures))
