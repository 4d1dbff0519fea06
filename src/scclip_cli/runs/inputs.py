"""Which images a batch run segments, in which order, and where each one's outputs go.

Everything here is plain path bookkeeping (no image is opened), so a bad command line is rejected at
once, before the model loads.

Rules (``scclip segment INPUT...``):

- An INPUT folder is searched recursively for image files (:data:`scclip_cli.files.image_io.IMAGE_EXTENSIONS`,
  case-insensitive). Hidden files and folders (names starting with ``.``) are not searched, and
  neither is the output folder when it lies inside an input folder. Folders that cannot be listed
  are reported as failures of the run (see :class:`Discovery`).
- An INPUT file is taken whatever its extension (the user named it); one that cannot be decoded fails
  at read time like any other image. An INPUT that does not exist is a usage error.
- ``-`` reads newline-separated paths from stdin. Each line is treated like an INPUT, except that a
  path that does not exist is an input that fails (pipelines list files that may vanish), not a
  usage error.
- Output mapping (:attr:`InputImage.relative`): a file found in a folder keeps its path relative to
  that folder (``imgs/a/b.jpg`` given ``imgs`` → ``OUT/a/b.png``); a file given directly maps to its
  name (``OUT/b.png``); a file listed on stdin keeps its path relative to the current directory when
  it lies inside it (``a/b.jpg`` → ``OUT/a/b.png``) and maps to its name otherwise.
- Order: images are sorted by their relative output path (split into parts, so a folder's contents
  stay together), which does not depend on the order of the INPUTs or where they are mounted.
- Sharding (``--shard I/N``) is applied to that sorted list *before* completed outputs are skipped,
  round-robin: shard ``I`` takes positions ``I-1, I-1+N, I-1+2N, ...``. The N shards are disjoint,
  cover every image, and stay the same when a run is resumed.
- Two images that would write the same output file, an output that would overwrite an input, or an
  output that would overwrite one of the run's own files (``summary.json``, ...) is a usage error,
  found before any work.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from scclip_cli.errors import InputError, UsageError
from scclip_cli.files.image_io import IMAGE_EXTENSIONS, is_image_path
from scclip_cli.files.image_record import ImageRecord
from scclip_cli.files.mask_io import COLOR_SUFFIX, CONFIDENCE_SUFFIX

STDIN_MARKER = "-"
"""The INPUT that stands for newline-separated paths on stdin."""

OVERLAY_SUFFIX = "_overlay.jpg"
MAX_COLLISIONS_SHOWN = 3


@dataclass(frozen=True)
class InputImage:
    """One image to segment: the file to read and its path relative to the output folder."""

    path: Path
    """The file to read, as given (a folder INPUT joined with the path found under it)."""
    relative: PurePosixPath
    """The image's path relative to ``--out``, with its own suffix (``a/b.jpg``)."""

    @property
    def stem(self) -> PurePosixPath:
        """``relative`` without its suffix: every output of the image is named after it."""
        return self.relative.with_suffix("") if self.relative.suffix else self.relative

    def outputs(
        self, out_dir: Path, *, overlay: bool, wide_labels: bool, confidence: bool = False
    ) -> OutputPaths:
        """Where this image's files go under ``out_dir``."""
        return OutputPaths.for_stem(
            out_dir, self.stem, overlay=overlay, wide_labels=wide_labels, confidence=confidence
        )


@dataclass(frozen=True)
class OutputPaths:
    """The files written for one image. ``json`` is written last and marks the image complete."""

    mask: Path
    """``<stem>.png``: class index per pixel (8-bit palette PNG, or 16-bit with ``wide_labels``)."""
    json: Path
    """``<stem>.json``: size and per-class statistics; its presence marks completion."""
    overlay: Path | None = None
    """``<stem>_overlay.jpg`` when overlays are requested."""
    color: Path | None = None
    """``<stem>_color.png``: colour rendering, written beside a 16-bit mask (more than 256 classes)."""
    confidence: Path | None = None
    """``<stem>_conf.png``: uint8 confidence map, with ``--save-confidence``."""

    @classmethod
    def for_stem(
        cls,
        out_dir: Path,
        stem: PurePosixPath,
        *,
        overlay: bool,
        wide_labels: bool,
        confidence: bool = False,
    ) -> OutputPaths:
        base = out_dir.joinpath(*stem.parts)
        return cls(
            mask=base.with_name(base.name + ".png"),
            json=base.with_name(base.name + ".json"),
            overlay=base.with_name(base.name + OVERLAY_SUFFIX) if overlay else None,
            color=base.with_name(base.name + COLOR_SUFFIX) if wide_labels else None,
            confidence=base.with_name(base.name + CONFIDENCE_SUFFIX) if confidence else None,
        )

    def files(self) -> tuple[Path, ...]:
        """Every file of the image, the completion marker (``json``) last."""
        extra = tuple(p for p in (self.color, self.overlay, self.confidence) if p is not None)
        return (self.mask, *extra, self.json)

    def complete(self) -> bool:
        """Whether a previous run finished this image (every file is there, ``json`` included)."""
        return all(p.is_file() for p in self.files())

    def complete_record(self) -> ImageRecord | None:
        """The record of a complete image (every file there, ``<stem>.json`` a valid record), else
        ``None``: an image to (re)do."""
        return ImageRecord.read(self.json) if self.complete() else None

    def by_kind(self) -> dict[str, str]:
        """The files by kind, as the ``--jsonl`` line names them (``mask``, ``json``, then
        ``overlay``, ``color`` and ``confidence`` when written)."""
        files = {"mask": str(self.mask), "json": str(self.json)}
        for kind, path in (
            ("overlay", self.overlay),
            ("color", self.color),
            ("confidence", self.confidence),
        ):
            if path is not None:
                files[kind] = str(path)
        return files


@dataclass(frozen=True)
class Job:
    """One image of a run: where it comes from and where its files go."""

    order: int
    """Position in this run's sorted inputs (this shard's)."""
    image: InputImage
    outputs: OutputPaths

    def jsonl_line(self, record: ImageRecord, status: str) -> dict[str, Any]:
        """The ``--jsonl`` line of this image (``status``: ``done`` or ``skipped``)."""
        return record.jsonl_line(status, self.outputs.by_kind())


@dataclass
class Discovery:
    """The result of expanding the INPUTs."""

    images: list[InputImage]
    """Every image found, sorted (see :func:`sort_key`), not yet sharded."""
    problems: list[tuple[str, str]] = field(default_factory=list)
    """``(path, reason)`` for folders that could not be searched; recorded as failures."""


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count`` disjoint round-robin parts of the sorted inputs."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise UsageError(f"--shard {self.index}/{self.count}: need 1 <= I <= N")

    def take(self, items: Sequence[InputImage]) -> list[InputImage]:
        """This shard's items: positions ``index-1, index-1+count, ...`` of ``items``."""
        return list(items[self.index - 1 :: self.count])

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def file_tag(self) -> str:
        """Inserted in the run-level file names, so shards can share one ``--out`` folder."""
        return f"shard-{self.index}-of-{self.count}"


_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str | Shard | tuple[int, int] | None) -> Shard | None:
    """Parse ``"I/N"`` (1 <= I <= N); ``None`` means no sharding.

    Raises :class:`UsageError` for anything else.
    """
    if text is None or isinstance(text, Shard):
        return text
    if isinstance(text, tuple):
        return Shard(*text)
    match = _SHARD_RE.match(text)
    if match is None:
        raise UsageError(f"--shard must look like I/N (e.g. 1/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise UsageError(f"--shard {text}: N must be at least 1")
    return Shard(index, count)


def sort_key(image: InputImage) -> tuple[tuple[str, ...], str]:
    """Order of work: the relative path's parts, then the source path (for equal relative paths)."""
    return image.relative.parts, str(image.path)


def discover_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    stdin: TextIO | None = None,
    exclude: Path | None = None,
    cwd: Path | None = None,
) -> Discovery:
    """Expand INPUTs (files, folders, ``-``) into the sorted list of images to segment.

    Args:
        inputs: paths as given on the command line; ``"-"`` reads paths from ``stdin``.
        stdin: where ``-`` reads from (``sys.stdin`` when ``None``).
        exclude: a folder never searched (the output folder).
        cwd: the folder stdin paths are made relative to (the current directory when ``None``).

    Raises:
        InputError: an INPUT does not exist, or no image was found at all.
        UsageError: ``-`` given more than once.
    """
    if not inputs:
        raise InputError("no inputs: give image files, folders, or - to read paths from stdin")
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    images: list[InputImage] = []
    problems: list[tuple[str, str]] = []
    stdin_used = False
    for raw in inputs:
        text = os.fspath(raw)
        if text == STDIN_MARKER:
            if stdin_used:
                raise UsageError("'-' (read paths from stdin) given more than once")
            stdin_used = True
            stream = sys.stdin if stdin is None else stdin
            base = Path.cwd() if cwd is None else cwd
            for line in _stdin_paths(stream):
                images.extend(_expand_stdin_path(line, base, exclude_real, problems))
            continue
        path = Path(text)
        if path.is_dir():
            _check_not_output(path, exclude_real)
            images.extend(_walk_folder(path, exclude_real, problems))
        elif os.path.lexists(path):
            images.append(InputImage(path, PurePosixPath(path.name)))
        else:
            raise InputError(f"input not found: {text}")
    if not images:
        where = ", ".join(os.fspath(i) for i in inputs)
        why = f"; {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise InputError(f"no images found in {where} (looked for {_extensions_text()}){why}")
    images.sort(key=sort_key)
    return Discovery(images, problems)


def check_collisions(
    images: Sequence[InputImage],
    out_dir: Path,
    *,
    overlay: bool,
    wide_labels: bool,
    reserved: Iterable[str] = (),
    confidence: bool = False,
) -> None:
    """Raise :class:`InputError` when two images would write the same file.

    Also when an image's output would overwrite an input image or one of the ``reserved`` run-level
    files (names relative to ``out_dir``). Run on the full list before sharding, so every shard
    agrees. File names are compared exactly (as on a case-sensitive file system).
    """
    # Keyed by position, not by path: the same file reached through two INPUTs is a collision too.
    run_files = list(reserved)
    owner: dict[str, int] = {name: -1 - i for i, name in enumerate(run_files)}
    names = [f"the run's own {name}" for name in run_files]
    collisions: list[str] = []
    for i, image in enumerate(images):
        outputs = OutputPaths.for_stem(
            Path(), image.stem, overlay=overlay, wide_labels=wide_labels, confidence=confidence
        )
        for out in outputs.files():
            key = out.as_posix()
            other = owner.setdefault(key, i)
            if other != i:
                first = names[-1 - other] if other < 0 else str(images[other].path)
                collisions.append(f"{first} and {image.path} would both write {out_dir / key}")
    if collisions:
        shown = "; ".join(collisions[:MAX_COLLISIONS_SHOWN])
        more = len(collisions) - MAX_COLLISIONS_SHOWN
        tail = f" (and {more} more)" if more > 0 else ""
        raise InputError(
            f"output collision: {shown}{tail}. Rename the inputs or segment them into separate "
            "--out folders"
        )
    _check_inputs_not_overwritten(
        images, out_dir, overlay=overlay, wide_labels=wide_labels, confidence=confidence
    )


def _check_inputs_not_overwritten(
    images: Sequence[InputImage],
    out_dir: Path,
    *,
    overlay: bool,
    wide_labels: bool,
    confidence: bool = False,
) -> None:
    # Compare absolute, symlink-free spellings. Only the folders are resolved (one call per
    # distinct parent), so this stays cheap for a million images.
    real_parent: dict[str, str] = {}

    def real(path: Path) -> str:
        parent = os.fspath(path.parent)
        if parent not in real_parent:
            real_parent[parent] = os.path.realpath(parent)
        return os.path.join(real_parent[parent], path.name)

    sources = {real(image.path): image for image in images}
    out_real = Path(os.path.realpath(out_dir))
    for image in images:
        outputs = OutputPaths.for_stem(
            out_real, image.stem, overlay=overlay, wide_labels=wide_labels, confidence=confidence
        )
        for out in outputs.files():
            victim = sources.get(os.fspath(out))
            if victim is not None:
                raise InputError(
                    f"the output {out} of {image.path} would overwrite the input {victim.path}; "
                    "choose an --out folder that is not an input folder"
                )


def _extensions_text() -> str:
    return ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


def _check_not_output(folder: Path, exclude_real: str | None) -> None:
    if exclude_real is not None and os.path.realpath(folder) == exclude_real:
        raise InputError(
            f"the output folder {folder} is also an input folder; choose another --out folder"
        )


def _stdin_paths(stream: TextIO) -> Iterator[str]:
    for line in stream:
        text = line.rstrip("\r\n")
        if text.strip():
            yield text


def _expand_stdin_path(
    text: str, cwd: Path, exclude_real: str | None, problems: list[tuple[str, str]]
) -> list[InputImage]:
    path = Path(text)
    if path.is_dir():
        _check_not_output(path, exclude_real)
        return list(_walk_folder(path, exclude_real, problems))
    # A missing file stays an input: reading it fails and it is recorded in failures.jsonl.
    return [InputImage(path, _relative_to_cwd(path, cwd))]


def _relative_to_cwd(path: Path, cwd: Path) -> PurePosixPath:
    absolute = Path(os.path.normpath(path if path.is_absolute() else cwd / path))
    try:
        relative = absolute.relative_to(os.path.normpath(cwd))
    except ValueError:
        return PurePosixPath(path.name)
    if not relative.parts:
        return PurePosixPath(path.name)
    return PurePosixPath(*relative.parts)


def _walk_folder(
    root: Path, exclude_real: str | None, problems: list[tuple[str, str]]
) -> Iterator[InputImage]:
    """Image files under ``root`` (recursively, symlinks followed once, hidden entries skipped)."""
    seen_real: set[str] = set()
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        real = os.path.realpath(folder)
        if real in seen_real:
            continue  # a symlink loop, or two links to one folder
        seen_real.add(real)
        if parts and exclude_real is not None and real == exclude_real:
            continue
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            problems.append((os.fspath(folder), f"cannot list folder: {err.strerror or err}"))
            continue
        subfolders: list[tuple[Path, tuple[str, ...]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append((folder / entry.name, (*parts, entry.name)))
            elif is_image_path(entry.name):
                yield InputImage(folder / entry.name, PurePosixPath(*parts, entry.name))
        stack.extend(reversed(subfolders))
