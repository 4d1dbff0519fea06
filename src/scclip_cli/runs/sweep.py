"""Threshold sweeps: every combination of post-processing settings scored in one pass.

    scclip eval --images IMGS --gt LABELS --vocab v.npz \\
        --sweep prob-threshold=0,0.1,0.2,0.3 --sweep logit-scale=40,50

Each image's window features are computed (or read from the feature cache) once; each combination
then only post-processes them (:meth:`~scclip_cli.predict.segmenter.Segmenter.segment_variants`),
so a sweep's labels are those of separate runs with each setting, bit for bit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from scclip_cli.errors import UsageError

SWEEPABLE = {
    "prob-threshold": "prob_threshold",
    "logit-scale": "logit_scale",
    "area-threshold": "area_threshold",
}
"""What a sweep may vary (the option's name: the :class:`~scclip_cli.config.ProtocolConfig`
field): post-processing only, so one pass over the features serves every combination."""
MAX_COMBINATIONS = 256


def parse_sweep(specs: Sequence[str]) -> dict[str, tuple[float | None, ...]]:
    """``["prob-threshold=0,0.1", "logit-scale=40,50"]`` → ``{"prob_threshold": (0.0, 0.1),
    "logit_scale": (40.0, 50.0)}`` (``none`` turns the area rule off).

    Raises:
        UsageError: an unknown setting, a setting given twice, an empty or unreadable value, or
            more than :data:`MAX_COMBINATIONS` combinations.
    """
    axes: dict[str, tuple[float | None, ...]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().lower().lstrip("-")
        if not sep or name not in SWEEPABLE:
            raise UsageError(
                f"cannot read --sweep {spec!r}: write NAME=V1,V2,... with NAME one of "
                f"{', '.join(SWEEPABLE)}"
            )
        field = SWEEPABLE[name]
        if field in axes:
            raise UsageError(f"--sweep {name} is given twice")
        parsed: list[float | None] = []
        for text in values.split(","):
            text = text.strip()
            if field == "area_threshold" and text.lower() == "none":
                parsed.append(None)
                continue
            try:
                value = float(text)
            except ValueError:
                raise UsageError(f"--sweep {name}: {text!r} is not a number") from None
            if not math.isfinite(value):
                raise UsageError(f"--sweep {name}: {text!r} is not a finite number")
            parsed.append(value)
        if not parsed or len(set(parsed)) != len(parsed):
            raise UsageError(f"--sweep {name}: give distinct values, e.g. {name}=0,0.1")
        axes[field] = tuple(parsed)
    count = math.prod(len(v) for v in axes.values())
    if count > MAX_COMBINATIONS:
        raise UsageError(f"--sweep makes {count} combinations; at most {MAX_COMBINATIONS}")
    return axes


def combinations(axes: Mapping[str, Sequence[float | None]]) -> list[dict[str, float | None]]:
    """Every combination of the axes' values, the first axis slowest."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def sweep_rows(
    settings: Sequence[Mapping[str, float | None]], metrics: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One JSON-ready row per combination: its settings, mIoU, mAcc, aAcc and ``best`` (the first
    combination with the highest mIoU)."""
    best = max(range(len(metrics)), key=lambda i: (metrics[i]["mIoU"], -i))
    return [
        {
            "settings": {name.replace("_", "-"): value for name, value in setting.items()},
            "mIoU": metric["mIoU"],
            "mAcc": metric["mAcc"],
            "aAcc": metric["aAcc"],
            "best": i == best,
        }
        for i, (setting, metric) in enumerate(zip(settings, metrics, strict=True))
    ]


def format_sweep(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sweep as a plain-text table, the best row marked with ``*``."""
    names = list(rows[0]["settings"]) if rows else []
    header = [*names, "mIoU", "mAcc", "aAcc", ""]
    lines = [header]
    for row in rows:
        values = ["none" if v is None else f"{v:g}" for v in row["settings"].values()]
        metrics = [f"{row[k]:.2f}" for k in ("mIoU", "mAcc", "aAcc")]
        lines.append([*values, *metrics, "*best" if row["best"] else ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
