"""benchmarks/report_speed.py stays runnable: a generated run of a few images, built and opened.

A correctness test only: no timing is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.benchmark_scripts import load_benchmark


def test_report_speed_runs_end_to_end(tmp_path: Path) -> None:
    from support.browser import browser_missing

    module = load_benchmark("report_speed")
    numbers = tmp_path / "numbers.json"
    args = ["--images", "7", "--size", "64x48", "--loads", "1", "--json", str(numbers)]
    assert module.main([*args, "--workdir", str(tmp_path / "run")]) == 0
    result = json.loads(numbers.read_text())
    assert result["images"] == 7 and result["thumbnails_drawn"] == 7
    assert len(list((tmp_path / "run" / "out").rglob("photo_*.json"))) == 7
    page = result["page"]
    if browser_missing() is None:
        assert page["cards"] == 7 and page["console_errors"] == []
        assert page["cards_ms"] <= page["ready_ms"]
    else:
        assert page == {"skipped": browser_missing()}
