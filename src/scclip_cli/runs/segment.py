"""Batch segmentation of image files: ``scclip segment`` as a plain function.

    >>> from scclip_cli.runs.segment import segment
    >>> summary = segment(["photos/"], "vocab/voc21.txt", "masks/", model="ViT-B-16-quickgelu")
    >>> summary.done, summary.failed, summary.exit_code

It composes the run's bookkeeping (:mod:`scclip_cli.runs.bookkeeping`: inputs, output folder, what is
already done, ``summary.json`` and ``failures.jsonl``) with the local engine
(:mod:`scclip_cli.runs.local_engine`: reader threads, the model on the calling thread, a writer thread).
:func:`scclip_cli.runs.ray_engine.segment_on_ray` composes the same bookkeeping with Ray workers.

A run killed at any moment leaves each image either complete or without its JSON, which the next
run redoes. Ctrl-C stops reading and segmenting, lets the writer finish the images already
segmented, records the run as interrupted in ``summary.json``, and re-raises.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scclip_cli.config import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    MethodConfig,
    ProtocolConfig,
    resolve_protocol,
)
from scclip_cli.errors import UsageError, VocabularyError
from scclip_cli.runs.bookkeeping import (
    Reporter,
    SegmentRun,
    plan_run,
    protocol_overrides,
    rerun_without_model,
    write_summary,
)
from scclip_cli.runs.caching import CacheOptions, describe_feature_cache
from scclip_cli.runs.inputs import Shard
from scclip_cli.runs.local_engine import DEFAULT_READ_WORKERS, segment_jobs
from scclip_cli.runs.summary import RunSummary

if TYPE_CHECKING:
    from scclip_cli.model.text_embeddings import QueryEmbeddings
    from scclip_cli.predict.segmenter import Segmenter


def segment(
    inputs: Sequence[str | os.PathLike[str]],
    vocab: str | Path | list[str] | QueryEmbeddings | None,
    out_dir: str | os.PathLike[str],
    *,
    segmenter: Segmenter | None = None,
    model: str = DEFAULT_MODEL,
    pretrained: str = DEFAULT_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    method: str | MethodConfig = "sc-clip",
    preset: str | None = None,
    protocol: ProtocolConfig | None = None,
    short_side: int | None = None,
    crop: int | None = None,
    stride: int | None = None,
    logit_scale: float | None = None,
    prob_threshold: float | None = None,
    area_threshold: float | None = None,
    batch_size: int | None = None,
    overlay: bool = False,
    overwrite: bool = False,
    shard: str | Shard | tuple[int, int] | None = None,
    quiet: bool = False,
    jsonl_stream: TextIO | None = None,
    stdin: TextIO | None = None,
    read_workers: int | None = None,
    progress: bool | None = None,
    caching: CacheOptions | None = None,
) -> RunSummary:
    """Segment image files and folders into label PNGs and per-image JSON under ``out_dir``.

    Args:
        inputs: image files, folders (searched recursively) and ``"-"`` (paths on ``stdin``); see
            :mod:`scclip_cli.runs.inputs` for the order and the output mapping.
        vocab: class list (.txt / .npz path, or a list of class lines); ignored when ``segmenter``
            is given.
        out_dir: output folder (created).
        segmenter: an already loaded :class:`~scclip_cli.predict.segmenter.Segmenter` to reuse; the model,
            vocabulary and protocol arguments must then be left at their defaults.
        model, pretrained, device, precision, method, batch_size: passed to
            :meth:`Segmenter.load` (``batch_size``: crops per forward pass, by default
            :func:`~scclip_cli.predict.segmenter.default_batch_size` of the device).
        preset: benchmark protocol preset; ``protocol`` (a full config) or the single protocol
            values (``short_side`` ... ``area_threshold``) override its fields.
        overlay: also write ``<stem>_overlay.jpg``.
        overwrite: redo images whose outputs exist.
        shard: ``"I/N"``: only the I-th of N round-robin parts of the sorted inputs.
        quiet: no progress bar and no messages on stderr.
        jsonl_stream: where to write one JSON line per finished image, flushed per line:
            ``{"path", "status", "mask", "json", "width", "height", "classes"}`` (plus ``overlay``
            / ``color`` when written). ``status`` is ``done``, or ``skipped`` for images a
            previous run completed (listed first); failed inputs are in ``failures.jsonl`` only.
        stdin: where ``"-"`` reads paths (``sys.stdin`` by default).
        read_workers: decoding threads (default ``min(8, CPUs)``).
        progress: show the progress bar; by default when not ``quiet`` and stderr is a terminal.
        caching: text-embedding and feature caches (:class:`~scclip_cli.runs.caching.CacheOptions`;
            by default text embeddings are cached in the user's cache folder). With a feature
            cache, ``summary.json`` gets a ``feature_cache`` record (hits, misses, size).

    Returns:
        The run's :class:`RunSummary` (``exit_code`` 0 when nothing failed, 1 otherwise), also
        written to ``summary.json`` (``summary.shard-I-of-N.json`` with a shard; see
        :mod:`scclip_cli.runs.summary`).

    Raises:
        ScclipError: usage and configuration errors found before any image is processed (no
            inputs, output collisions, bad shard, unknown model, bad vocabulary, ...).
        KeyboardInterrupt: after recording the interrupted run.
    """
    plan = plan_run(
        inputs,
        out_dir,
        overlay=overlay,
        overwrite=overwrite,
        shard=shard,
        preset=preset,
        batch_size=batch_size,
        read_workers=read_workers,
        stdin=stdin,
    )
    reporter = Reporter(quiet)
    if segmenter is None and vocab is not None and not plan.overwrite:
        from scclip_cli.model.text_embeddings import vocabulary_class_names

        finished = rerun_without_model(
            plan,
            vocabulary_class_names(vocab),  # read without the model
            model=model,
            pretrained=pretrained,
            reporter=reporter,
            jsonl_stream=jsonl_stream,
            progress=progress,
        )
        if finished is not None:
            return finished
    segmenter, load_seconds = _obtain_segmenter(
        segmenter,
        vocab,
        model=model,
        pretrained=pretrained,
        device=device,
        precision=precision,
        method=method,
        preset=preset,
        protocol=protocol,
        overrides=protocol_overrides(
            short_side=short_side,
            crop=crop,
            stride=stride,
            logit_scale=logit_scale,
            prob_threshold=prob_threshold,
            area_threshold=area_threshold,
        ),
        batch_size=batch_size,
        **(caching or CacheOptions()).load_options(),
    )
    if load_seconds:
        reporter.message(f"loaded {model} ({pretrained}) in {load_seconds:.1f} s")

    class_names = tuple(segmenter.class_names)
    run = SegmentRun.open(plan, class_names, reporter=reporter, jsonl_stream=jsonl_stream)
    run.start(
        plan.run_config(segmenter.describe()),
        load_seconds=load_seconds,
        show_progress=progress,
    )
    with run.segmenting():
        segment_jobs(
            segmenter,
            run.todo,
            run,
            class_names=class_names,
            overlay=overlay,
            read_workers=read_workers or min(DEFAULT_READ_WORKERS, os.cpu_count() or 1),
        )
    feature_cache = getattr(segmenter, "feature_cache", None)  # a stand-in may have none
    if feature_cache is not None:
        report = feature_cache.report()
        write_summary(run.summary, feature_cache=report)
        reporter.message(describe_feature_cache(report))
    return run.summary


# --- setup -------------------------------------------------------------------------------------


def _obtain_segmenter(
    segmenter: Segmenter | None,
    vocab: str | Path | list[str] | QueryEmbeddings | None,
    *,
    preset: str | None,
    protocol: ProtocolConfig | None,
    overrides: dict[str, object],
    **load_options: Any,
) -> tuple[Segmenter, float]:
    """The segmenter passed in, or a freshly loaded one; and the seconds loading took."""
    if segmenter is not None:
        if preset is not None or protocol is not None or overrides:
            raise UsageError(
                "protocol options cannot change an already loaded segmenter; "
                "pass them to Segmenter.load"
            )
        if load_options.get("feature_cache") is not None:
            raise UsageError("a feature cache cannot be added to an already loaded segmenter")
        return segmenter, 0.0
    if vocab is None:
        raise UsageError("a vocabulary (--vocab) is needed to load the segmenter")
    if isinstance(vocab, str | os.PathLike) and not Path(vocab).is_file():
        # checked before the (slow) model load
        raise VocabularyError(f"vocabulary file not found: {os.fspath(vocab)}")
    from scclip_cli.predict.segmenter import Segmenter

    start = time.perf_counter()
    loaded = Segmenter.load(
        vocab, protocol=resolve_protocol(preset, protocol, **overrides), **load_options
    )
    return loaded, time.perf_counter() - start
