"""The commands produce what they produced before the modules moved into layer folders.

``tests/data/layout_snapshot.json`` was written by :mod:`support.layout_snapshot` on the flat layout
(commit 3fd873c): label maps and per-image JSON of ``scclip segment`` on the sample images, local
and on Ray, and the numbers of ``scclip eval``, all with the tiny model in float32 on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    assert taken["segment"] == expected["segment"]
    assert taken["segment_ray"] == expected["segment_ray"]
    assert taken["eval"] == expected["eval"]
