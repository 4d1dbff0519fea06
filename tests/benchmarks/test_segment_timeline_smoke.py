"""benchmarks/segment_timeline.py stays runnable: one round on the tiny model.

A correctness test only: no timing is asserted beyond the phases fitting in the call.
"""

from __future__ import annotations

import json

from support.benchmark_scripts import load_benchmark


def test_one_round_times_every_phase_within_the_call(tmp_path, capsys):
    module = load_benchmark("segment_timeline")
    out = tmp_path / "timeline.json"
    argv = ["--model", "scclip-tiny", "--pretrained", "random:7", "--megapixels", "0.3"]
    module.main([*argv, "--classes", "5", "--rounds", "2", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["image"] == "640x480" and result["classes"] == 5
    assert len(result["rounds"]) == 2
    for phases in result["rounds"]:
        assert set(phases) == set(module.PHASES)
        parts = [phases[p] for p in module.PHASES if p != "whole call"]
        assert all(value > 0 for value in parts)
        # read, model and post-processing run one after the other within the call
        assert phases["read"] + phases["model"] + phases["post-processing"] < phases["whole call"]
    printed = capsys.readouterr().out
    assert "| post-processing |" in printed and "| whole call |" in printed
