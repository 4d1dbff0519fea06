"""benchmarks/report_speed.py stays runnable: a generated run of a few images, built and opened.

A correctness test only: no timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report_speed.py"


def test_report_speed_runs_end_to_end(tmp_path: Path) -> None:
    from support.browser import browser_missing

    spec = importlib.util.spec_from_file_location("scclip_benchmark_report_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
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
