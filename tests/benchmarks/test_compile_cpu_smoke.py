"""benchmarks/compile_cpu.py and benchmarks/bf16.py stay runnable: their pieces on the tiny model.

Correctness only: no timing is asserted, and the torch.compile variants (tens of seconds of
compiling) are left to the script itself.
"""

from __future__ import annotations

from support.benchmark_scripts import load_benchmark


def test_the_tower_variants_match_eager_and_the_table_reads_them() -> None:
    bench = load_benchmark("compile_cpu")
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
    bench = load_benchmark("bf16")
    result = bench.measure("scclip-tiny", 5, 1, [0.1], device="cpu", low="bfloat16")
    assert result["device"] == "cpu" and result["precision"] == "bfloat16"
    assert result["crops"] > 0 and len(result["seconds"]["bfloat16"]) == 1
    assert set(result["agreement"]) >= {"generated-0", "generated-1"}
    for values in result["agreement"].values():
        assert 0.0 <= values["all"] <= 1.0
