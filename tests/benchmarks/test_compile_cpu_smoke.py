"""benchmarks/compile_cpu.py and benchmarks/bf16.py stay runnable: their pieces on the tiny model.

Correctness only: no timing is asserted, and the torch.compile variants (tens of seconds of
compiling) are left to the script itself.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"scclip_benchmark_{name}", BENCHMARKS / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_tower_variants_match_eager_and_the_table_reads_them() -> None:
    bench = load("compile_cpu")
    eager = bench.run_tower("scclip-tiny", "eager", 1, 1)
    scripted = bench.run_tower("scclip-tiny", "torchscript-onednn", 1, 1)
    assert eager["max_abs_diff"] == 0.0
    assert scripted["max_abs_diff"] < 1e-4
    step = bench.run_step("eager", 8, 1)
    assert step["max_abs_diff"] == 0.0 and step["best_s"] > 0
    text = bench.table("t", {"eager": eager, "torchscript-onednn": scripted}, "call")
    assert "| eager |" in text and "| torchscript-onednn |" in text and "1.00" in text
    failed = bench.table("t", {"eager": eager, "compile": {"error": "no compiler"}}, "call")
    assert "failed: no compiler" in failed


def test_precision_agreement_names_the_precision_it_measured() -> None:
    bench = load("bf16")
    result = bench.measure("scclip-tiny", 5, 1, [0.1], device="cpu", low="bfloat16")
    assert result["device"] == "cpu" and result["precision"] == "bfloat16"
    assert result["crops"] > 0 and len(result["seconds"]["bfloat16"]) == 1
    assert set(result["agreement"]) >= {"generated-0", "generated-1"}
    for values in result["agreement"].values():
        assert 0.0 <= values["all"] <= 1.0
