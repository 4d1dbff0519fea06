"""Semantic-segmentation scores with mmsegmentation's ``IoUMetric`` definitions, in plain numpy.

One confusion matrix is summed over the whole dataset (``[K, K]`` int64, rows = ground truth,
columns = prediction), over the pixels whose ground truth is not the ignore index. From it:

- per class ``IoU = intersection / union`` and ``Acc = intersection / ground-truth area``, NaN
  where the denominator is 0 (the class is absent from the ground truth, and for IoU also from the
  prediction); NaN classes are left out of the means (nanmean), as mmseg does;
- ``mIoU`` and ``mAcc`` are those nanmeans, ``aAcc`` = trace / total (overall pixel accuracy).

This matches mmseg 1.x ``IoUMetric`` (``intersect_and_union`` then ``total_area_to_metrics``),
where pixels whose ground truth is the ignore index are dropped before the prediction is counted,
so ``pred_pixels`` of a class counts only predictions on scored pixels.

``reduce_zero_label`` (:func:`reduce_zero_label`) is a property of the ground truth: mmseg applies it
in ``LoadAnnotations``, never to the prediction.

Scores in :meth:`ConfusionMatrix.metrics` are in percent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scclip_cli.errors import EvaluationError

IGNORE_INDEX = 255
"""Ground-truth value that is not scored (mmseg's default ``ignore_index``)."""

MAX_BAD_VALUES_SHOWN = 5

_FORMAT_VERSION = 1


def reduce_zero_label(gt: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """mmseg's ``reduce_zero_label`` on a ground-truth map: 0 → ignore, ``v`` → ``v - 1``.

    Args:
        gt: ``[H, W]`` integer label map.
        ignore_index: the value that is not scored; it stays the ignore index.

    Returns:
        ``[H, W]`` int64. With the default ignore index 255 this equals mmseg's uint8 arithmetic
        (``gt[gt == 0] = 255; gt = gt - 1; gt[gt == 254] = 255``).
    """
    gt = np.asarray(gt)
    out = gt.astype(np.int64) - 1
    out[(gt == 0) | (gt == ignore_index)] = ignore_index
    return out


def label_problems(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
    pred_name: str = "prediction",
    gt_name: str = "ground truth",
) -> list[str]:
    """Why ``pred`` and ``gt`` cannot be scored together; empty when they can.

    Args:
        pred: ``[H, W]`` integer prediction; every value must be in ``0..num_classes-1``.
        gt: ``[H, W]`` integer ground truth (after :func:`reduce_zero_label` when used); every value
            must be in ``0..num_classes-1`` or be ``ignore_index``.
        pred_name, gt_name: how the two maps are named in the messages (usually their paths).
    """
    problems: list[str] = []
    if pred.ndim != 2 or gt.ndim != 2:
        return [f"{pred_name}: expected [H, W] label maps, got {pred.shape} and {gt.shape}"]
    if pred.shape != gt.shape:
        ph, pw = pred.shape
        gh, gw = gt.shape
        return [f"{pred_name}: size {pw}x{ph} differs from {gt_name} ({gw}x{gh})"]
    bad_pred = _out_of_range(pred, num_classes)
    if bad_pred:
        problems.append(
            f"{pred_name}: prediction value(s) {bad_pred} outside the class range "
            f"0..{num_classes - 1}"
        )
    bad_gt = _out_of_range(gt[gt != ignore_index], num_classes)
    if bad_gt:
        problems.append(
            f"{gt_name}: ground-truth value(s) {bad_gt} outside the class range "
            f"0..{num_classes - 1} (ignore index {ignore_index})"
        )
    return problems


def _out_of_range(values: np.ndarray, num_classes: int) -> str:
    """The offending values (up to :data:`MAX_BAD_VALUES_SHOWN`) as text, or ``""``."""
    if values.size == 0:
        return ""
    if values.min() >= 0 and values.max() < num_classes:
        return ""
    bad = np.unique(values[(values < 0) | (values >= num_classes)])
    shown = ", ".join(str(int(v)) for v in bad[:MAX_BAD_VALUES_SHOWN])
    return shown + (", ..." if bad.size > MAX_BAD_VALUES_SHOWN else "")


class ConfusionMatrix:
    """A dataset's pixel confusion matrix and what is needed to score and merge it.

    Attributes:
        matrix: ``[K, K]`` int64; ``matrix[g, p]`` counts scored pixels with ground truth ``g`` and
            prediction ``p``.
        class_names: ``[K]`` names, for the report.
        ignore_index: ground-truth value left out.
        num_images: images accumulated.
        config: JSON-ready settings of the run (dataset, protocol, model, ...). Two matrices merge
            only when their configs, class names and ignore index are equal.
        shards: the ``(index, count)`` shard ids merged into this matrix (1-based); ``(1, 1)`` for an
            unsharded run. Merging refuses a shard id that is already present.
        per_image: one :func:`image_scores` row per image added with a ``key`` (kept through
            save / load / merge), so a report can list the worst images.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        *,
        ignore_index: int = IGNORE_INDEX,
        config: Mapping[str, Any] | None = None,
        shard: tuple[int, int] = (1, 1),
    ) -> None:
        if num_classes < 1:
            raise EvaluationError(f"number of classes must be at least 1, got {num_classes}")
        if class_names is None:
            class_names = [f"class {k}" for k in range(num_classes)]
        if len(class_names) != num_classes:
            raise EvaluationError(f"{len(class_names)} class names given for {num_classes} classes")
        if 0 <= ignore_index < num_classes:
            raise EvaluationError(
                f"ignore index {ignore_index} is a class index (0..{num_classes - 1})"
            )
        self.matrix: np.ndarray = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.ignore_index = int(ignore_index)
        self.num_images = 0
        # a JSON round trip: the config compares equal after save / load
        self.config: dict[str, Any] = json.loads(json.dumps(dict(config or {}), default=str))
        self.shards: tuple[tuple[int, int], ...] = (tuple(shard),)  # type: ignore[assignment]
        self.per_image: list[dict[str, Any]] = []

    @property
    def num_classes(self) -> int:
        return int(self.matrix.shape[0])

    def update(self, pred: np.ndarray, gt: np.ndarray, *, name: str = "prediction") -> None:
        """Add one image.

        Args:
            pred: ``[H, W]`` integer prediction in ``0..K-1``.
            gt: ``[H, W]`` integer ground truth in ``0..K-1`` or the ignore index (already reduced
                when the dataset uses ``reduce_zero_label``).
            name: used in the error message.

        Raises:
            EvaluationError: shapes differ or a value is outside the class range.
        """
        problems = label_problems(
            pred,
            gt,
            self.num_classes,
            ignore_index=self.ignore_index,
            pred_name=name,
            gt_name=f"ground truth of {name}",
        )
        if problems:
            raise EvaluationError("; ".join(problems))
        self.add_unchecked(pred, gt)

    def add_unchecked(self, pred: np.ndarray, gt: np.ndarray, *, key: str | None = None) -> None:
        """:meth:`update` without the checks (call :func:`label_problems` first).

        ``key`` (the image's name) also records the image's own scores in :attr:`per_image`.
        """
        k = self.num_classes
        valid = gt != self.ignore_index  # [H, W] bool
        index = gt[valid].astype(np.int64) * k + pred[valid].astype(np.int64)  # [N]
        image_matrix = np.bincount(index, minlength=k * k).reshape(k, k)  # [K, K] int64
        self.matrix += image_matrix
        self.num_images += 1
        if key is not None:
            self.per_image.append({"key": key, **image_scores(image_matrix)})

    def check_compatible(self, other: ConfusionMatrix, *, what: str = "confusion matrix") -> None:
        """Raise :class:`EvaluationError` unless ``other`` scores the same classes the same way."""
        if other.class_names != self.class_names:
            raise EvaluationError(
                f"{what} has different classes ({other.num_classes}: "
                f"{_names_preview(other.class_names)}) than the first "
                f"({self.num_classes}: {_names_preview(self.class_names)})"
            )
        if other.ignore_index != self.ignore_index:
            raise EvaluationError(
                f"{what} uses ignore index {other.ignore_index}, the first {self.ignore_index}"
            )
        if other.config != self.config:
            diff = sorted(
                key
                for key in set(other.config) | set(self.config)
                if other.config.get(key) != self.config.get(key)
            )
            raise EvaluationError(
                f"{what} was made with different settings ({', '.join(diff)}) than the first"
            )

    def merge(self, other: ConfusionMatrix, *, what: str = "confusion matrix") -> ConfusionMatrix:
        """Add ``other`` into this matrix (in place) and return ``self``.

        Raises:
            EvaluationError: different classes / ignore index / config, a shard id already merged,
                or shards of different splits (``I/N`` with different ``N``).
        """
        self.check_compatible(other, what=what)
        counts = {n for _, n in self.shards} | {n for _, n in other.shards}
        if len(counts) > 1:
            raise EvaluationError(
                f"{what} is shard {_shard_text(other.shards)}, which does not split the inputs "
                f"like shard {_shard_text(self.shards)}: their parts overlap"
            )
        repeated = sorted(set(self.shards) & set(other.shards))
        if repeated:
            raise EvaluationError(
                f"{what}: shard {_shard_text(repeated)} is already merged (duplicate shard)"
            )
        self.matrix += other.matrix
        self.num_images += other.num_images
        self.shards = tuple(sorted(self.shards + other.shards))
        self.per_image += other.per_image
        return self

    def missing_shards(self) -> list[tuple[int, int]]:
        """The shard ids of the split that have not been merged (empty when complete)."""
        count = self.shards[0][1]
        have = {i for i, _ in self.shards}
        return [(i, count) for i in range(1, count + 1) if i not in have]

    # ----------------------------------------------------------------------------------- scores
    def metrics(self) -> dict[str, Any]:
        """Scores in percent (NaN where undefined), mmseg ``IoUMetric`` definitions.

        Returns:
            ``{"mIoU", "mAcc", "aAcc": float, "per_class": [{"name", "iou", "acc", "gt_pixels",
            "pred_pixels"}], "num_images": int}``; ``iou``/``acc`` are float percent or NaN.
        """
        m = self.matrix.astype(np.float64)  # [K, K]
        intersection = np.diag(m)  # [K]
        gt_area = m.sum(axis=1)  # [K]
        pred_area = m.sum(axis=0)  # [K]
        union = gt_area + pred_area - intersection  # [K]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, intersection / union, np.nan)  # [K]
            acc = np.where(gt_area > 0, intersection / gt_area, np.nan)  # [K]
        total = m.sum()
        per_class = [
            {
                "name": name,
                "iou": float(iou[k] * 100),
                "acc": float(acc[k] * 100),
                "gt_pixels": int(self.matrix[k].sum()),
                "pred_pixels": int(self.matrix[:, k].sum()),
            }
            for k, name in enumerate(self.class_names)
        ]
        return {
            "mIoU": _nanmean(iou) * 100,
            "mAcc": _nanmean(acc) * 100,
            "aAcc": float(intersection.sum() / total * 100) if total > 0 else math.nan,
            "per_class": per_class,
            "num_images": self.num_images,
        }

    # ------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` (matrix, class names, counts, config, shard ids), atomically."""
        from scclip_cli.files.atomic import atomic_path

        meta = {
            "format_version": _FORMAT_VERSION,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "num_images": self.num_images,
            "config": self.config,
            "shards": [list(s) for s in self.shards],
            "per_image": _nan_rows_to_none(self.per_image),
        }
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez(f, matrix=self.matrix, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> ConfusionMatrix:
        """Read a file written by :meth:`save`.

        Raises:
            EvaluationError: missing, unreadable or not a confusion-matrix file.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                matrix = np.asarray(data["matrix"], dtype=np.int64)
                meta = json.loads(str(data["meta"]))
        except FileNotFoundError:
            raise EvaluationError(f"{path}: no such file") from None
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise EvaluationError(f"{path}: not a confusion-matrix file ({err})") from None
        if meta.get("format_version") != _FORMAT_VERSION:
            raise EvaluationError(
                f"{path}: unsupported confusion-matrix format {meta.get('format_version')!r}"
            )
        k = len(meta["class_names"])
        if matrix.shape != (k, k):
            raise EvaluationError(f"{path}: matrix shape {matrix.shape} does not match {k} classes")
        cm = cls(k, meta["class_names"], ignore_index=meta["ignore_index"], config=meta["config"])
        cm.matrix = matrix
        cm.num_images = int(meta["num_images"])
        cm.shards = tuple(sorted((int(i), int(n)) for i, n in meta["shards"]))
        cm.per_image = _none_rows_to_nan(meta.get("per_image", []))  # absent in older files
        return cm


def merge_confusions(parts: Iterable[tuple[str, ConfusionMatrix]]) -> ConfusionMatrix:
    """Sum named confusion matrices (e.g. the shards of one run) into a new one.

    Args:
        parts: ``(name, matrix)`` pairs; names are used in error messages.

    Raises:
        EvaluationError: no parts, or parts that cannot be merged (see :meth:`ConfusionMatrix.merge`).
    """
    merged: ConfusionMatrix | None = None
    for name, part in parts:
        if merged is None:
            merged = ConfusionMatrix(
                part.num_classes,
                part.class_names,
                ignore_index=part.ignore_index,
                config=part.config,
            )
            merged.matrix += part.matrix
            merged.num_images = part.num_images
            merged.shards = part.shards
            merged.per_image = list(part.per_image)
        else:
            merged.merge(part, what=name)
    if merged is None:
        raise EvaluationError("nothing to merge")
    return merged


def image_scores(matrix: np.ndarray) -> dict[str, Any]:
    """One image's scores from its own ``[K, K]`` confusion matrix, in percent.

    Returns:
        ``{"mIoU", "aAcc": float (NaN when no pixel is scored), "classes": [{"index", "iou"}]}``
        where ``classes`` lists the classes in the image's ground truth or prediction (union > 0)
        and ``mIoU`` is their mean, the dataset definition applied to one image.
    """
    m = np.asarray(matrix, dtype=np.float64)  # [K, K]
    intersection = np.diag(m)  # [K]
    union = m.sum(axis=1) + m.sum(axis=0) - intersection  # [K]
    present = np.flatnonzero(union > 0)  # [P]
    iou = intersection[present] / union[present] * 100  # [P]
    total = m.sum()
    return {
        "mIoU": float(iou.mean()) if iou.size else math.nan,
        "aAcc": float(intersection.sum() / total * 100) if total > 0 else math.nan,
        "classes": [{"index": int(k), "iou": float(v)} for k, v in zip(present, iou, strict=True)],
    }


def _nan_rows_to_none(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-image rows for strict JSON (NaN → ``None``)."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows
    ]


def _none_rows_to_nan(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: math.nan if v is None else v for k, v in row.items()} for row in rows]


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _shard_text(shards: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"{i}/{n}" for i, n in shards)


def _names_preview(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")
