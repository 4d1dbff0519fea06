"""The commands produce what they produced before the modules moved into layer folders.

``tests/data/layout_snapshot.json`` was written by :mod:`support.layout_snapshot` on the flat layout
(commit 3fd873c): label maps and per-image JSON of ``scclip segment`` on the sample images, local
and on Ray, and the numbers of ``scclip eval``, all with the tiny model in float32 on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.layout_snapshot import SNAPSHOT, take_snapshot


@pytest.mark.slow
def test_segment_and_eval_outputs_match_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    taken = json.loads(json.dumps(take_snapshot(tmp_path)))  # the same JSON types as stored
    for part in ("segment", "segment_ray", "eval"):
        assert differences(taken[part], expected[part]) == [], part


FLOAT_TOLERANCE = 2e-6
"""Confidences are rounded to 6 decimals in the per-image JSON; the Ray workers run torch on one
thread where the local run uses two, which can move a float's last bits and so, rarely, a rounded
value by one unit. Labels (their digests) and every other value must be equal."""


def differences(got: Any, expected: Any, path: str = "") -> list[str]:
    """Where ``got`` differs from ``expected`` (floats within :data:`FLOAT_TOLERANCE`)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        if set(got) != set(expected):
            return [f"{path}: keys {sorted(got)} != {sorted(expected)}"]
        return [d for k in expected for d in differences(got[k], expected[k], f"{path}.{k}")]
    if isinstance(expected, list) and isinstance(got, list):
        if len(got) != len(expected):
            return [f"{path}: {len(got)} items != {len(expected)}"]
        return [
            d
            for i, (a, b) in enumerate(zip(got, expected, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    if isinstance(expected, float) and isinstance(got, float):
        return [] if abs(got - expected) <= FLOAT_TOLERANCE else [f"{path}: {got} != {expected}"]
    return [] if got == expected else [f"{path}: {got!r} != {expected!r}"]
