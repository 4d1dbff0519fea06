"""Scoring label maps against ground truth, one pair at a time: shared by both engines.

A :class:`EvalSample` pairs a ground-truth label PNG with a prediction file or an image to segment;
:func:`collect_problems` streams samples through a :class:`ConfusionMatrix`, checking each
prediction's size and values; :func:`segmenter_source` turns a segmenter into a :data:`Predict`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scclip_cli.errors import EvaluationError, ScclipError
from scclip_cli.maps.metrics import ConfusionMatrix, label_problems, reduce_zero_label

if TYPE_CHECKING:
    from scclip_cli.predict.segmenter import Segmenter

MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class EvalSample:
    """One image to score."""

    key: str
    """Relative path without extension (and without the stripped suffixes), ``/``-separated."""
    gt: Path
    """Ground-truth label PNG."""
    pred: Path | None = None
    """Prediction label PNG (``pred_dir`` mode)."""
    image: Path | None = None
    """Image to segment (``images_dir`` / ``dataset`` mode)."""


Predict = Callable[[Sequence[EvalSample]], Iterable[tuple[str, np.ndarray]]]
"""A segmentation source: given the samples, yields ``(key, labels [H, W] int)`` in their order."""


def collect_problems(
    samples: Sequence[EvalSample],
    confusion: ConfusionMatrix,
    *,
    predictions: Iterable[tuple[str, np.ndarray]] | None = None,
    reduce_zero_label: bool = False,
    fail_fast: bool = False,
    on_scored: Callable[[], None] | None = None,
) -> list[tuple[int, str]]:
    """Stream the samples through ``confusion``, one pair in memory at a time.

    Args:
        samples: what to score, in order.
        confusion: accumulates the scored pixels.
        predictions: ``(key, labels [H, W] int)`` in the order of ``samples``; ``None`` reads each
            sample's ``pred`` file.
        reduce_zero_label: apply :func:`scclip_cli.maps.metrics.reduce_zero_label` to the ground
            truth.
        fail_fast: stop at the first problem instead of collecting them all.
        on_scored: called after each sample the pass goes through.

    Returns:
        The problems found (unreadable files, sizes, values), as ``(index in samples, text)``.
        Once a problem is found nothing more is added to ``confusion`` (it must then not be
        reported).
    """
    problems: list[tuple[int, str]] = []
    pred_iter: Iterator[tuple[str, np.ndarray]] | None = (
        iter(predictions) if predictions is not None else None
    )
    for index, sample in enumerate(samples):
        try:
            new = _score_one(sample, confusion, pred_iter, reduce_zero_label, bool(problems))
        except EvaluationError as err:  # an image the segmentation source could not read
            new = [str(err)]
        problems += [(index, text) for text in new]
        if new and fail_fast:
            break
        if on_scored is not None:
            on_scored()
    if pred_iter is not None and not problems:
        extra = next(pred_iter, None)
        if extra is not None:
            problems.append(
                (len(samples), f"the segmentation source yielded an extra prediction {extra[0]!r}")
            )
    return problems


def _score_one(
    sample: EvalSample,
    confusion: ConfusionMatrix,
    pred_iter: Iterator[tuple[str, np.ndarray]] | None,
    reduce_zero: bool,
    failed: bool,
) -> list[str]:
    if pred_iter is not None:
        try:
            key, pred = next(pred_iter)
        except StopIteration:
            return [f"the segmentation source stopped before {sample.key!r}"]
        if key != sample.key:
            return [f"the segmentation source yielded {key!r} where {sample.key!r} was expected"]
        pred_name = f"prediction for {sample.image or sample.key}"
        pred = np.asarray(pred)
    else:
        assert sample.pred is not None
        pred_name = str(sample.pred)
        try:
            pred = read_labels(sample.pred)
        except EvaluationError as err:
            return [str(err)]
    try:
        gt = read_labels(sample.gt)
    except EvaluationError as err:
        return [str(err)]
    if reduce_zero:
        gt = reduce_zero_label(gt, confusion.ignore_index)
    problems = label_problems(
        pred,
        gt,
        confusion.num_classes,
        ignore_index=confusion.ignore_index,
        pred_name=pred_name,
        gt_name=str(sample.gt),
    )
    if not problems and not failed:
        confusion.add_unchecked(pred, gt, key=sample.key)
    return problems


# ------------------------------------------------------------------------- segmentation source
def sample_images(
    samples: Sequence[EvalSample], segmenter: Segmenter | None = None
) -> Iterator[Any]:
    """The samples' images in order, read as they are needed (an unreadable one stops the pass
    with an :class:`EvaluationError` naming it): by ``segmenter.read`` (which skips decoding the
    images whose features its feature cache holds) when it has that, else as ``[H, W, 3]`` uint8
    RGB."""
    from scclip_cli.files.image_io import read_image_rgb

    read = getattr(segmenter, "read", None)  # stand-ins for a Segmenter may take arrays only
    for sample in samples:
        assert sample.image is not None
        try:
            yield read_image_rgb(sample.image) if read is None else read(sample.image).image
        except ScclipError as err:
            raise EvaluationError(naming_path(sample.image, err)) from None
        except (OSError, ValueError) as err:
            raise EvaluationError(f"{sample.image}: cannot read image ({err})") from None


def segmenter_source(segmenter: Segmenter, save_pred: str | Path | None) -> Predict:
    """A :data:`Predict` that segments ``sample.image`` with ``segmenter`` (streamed, batched)."""

    def predict(samples: Sequence[EvalSample]) -> Iterator[tuple[str, np.ndarray]]:
        results = segmenter.segment_many(sample_images(samples, segmenter), confidence=False)
        num_classes = len(segmenter.class_names)
        for sample, seg in zip(samples, results, strict=False):
            if save_pred is not None:
                write_pred(Path(save_pred), sample.key, seg.labels, num_classes)
            yield sample.key, seg.labels

    return predict


def saving_source(predict: Predict, save_pred: str | Path, num_classes: int) -> Predict:
    def wrapped(samples: Sequence[EvalSample]) -> Iterator[tuple[str, np.ndarray]]:
        for key, labels in predict(samples):
            write_pred(Path(save_pred), key, labels, num_classes)
            yield key, labels

    return wrapped


def write_pred(folder: Path, key: str, labels: np.ndarray, num_classes: int) -> None:
    from scclip_cli.files.mask_io import write_label_png

    write_label_png(folder / f"{key}.png", labels, num_classes)  # creates the folders


def naming_path(path: Path, err: BaseException) -> str:
    """``err``'s message, prefixed with ``path`` unless it names it already."""
    message = str(err)
    return message if str(path) in message else f"{path}: {message}"


def read_labels(path: Path) -> np.ndarray:
    """``[H, W]`` int64 labels of a PNG; :class:`EvaluationError` naming the file if unreadable."""
    from scclip_cli.files.mask_io import read_label_png

    try:
        return np.asarray(read_label_png(path), dtype=np.int64)
    except ScclipError as err:
        raise EvaluationError(naming_path(path, err)) from None
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{path}: unreadable label PNG ({err})") from None


def problem_text(headline: str, problems: Sequence[str]) -> str:
    shown = [f"  {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return f"{headline} ({len(problems)}); nothing was scored:\n" + "\n".join(shown)


def show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
