"""What the numbers mean: every sentence of the advice follows from the report's numbers."""

import pytest

from lora_profiler.report.advice import advice
from lora_profiler.report.tables import Attribution, causes_table, modes_table, notes
from lora_profiler.units import fmt_s


def test_speedup_and_largest_causes(report):
    said = advice(report)
    t = {m: report["modes"][m]["step_time_s"]["median"] for m in ("full", "lora", "frozen")}
    kept = (t["full"] - t["lora"]) / (t["full"] - t["frozen"])
    assert said[0].startswith(f"**LoRA is {report['speedup']['lora_vs_full']:.2f}x faster")
    assert f"keeps {100 * kept:.0f}% of the time it could save" in said[0]
    att = report["attribution"]
    share = att["causes"]["dropout"]["seconds"] / att["overhead_s"]
    assert said[1].startswith(f"**dropout is {100 * share:.0f}% of LoRA's overhead**") and "dropout=0" in said[1]
    assert "lower rank" in said[2]  # lora_A, the second largest, gets the rank advice
    assert any("no-dropout" in s and "agrees" in s for s in said)
    assert any("rank-x4" in s and "disagrees" in s for s in said)


def test_lora_slower_than_full(report):
    report["modes"]["lora"]["step_time_s"]["median"] = 0.05
    report["speedup"]["lora_vs_full"] = report["modes"]["full"]["step_time_s"]["median"] / 0.05
    assert advice(report)[0].startswith("**LoRA is not faster here**")


def test_unreliable_numbers_are_named(report):
    report["attribution"]["reliability"] = [{"numbers": "overhead", "reason": "wide"}]
    assert "1 number(s) marked unreliable (overhead)" in advice(report)[-1]


def test_no_lora_no_advice():
    assert advice({"modes": {}, "speedup": {}}) == []


def test_report_tables(report):
    modes = modes_table(report)
    assert modes.column("mode") == list(report["modes"])
    assert modes.column("median_s") == [e["step_time_s"]["median"] for e in report["modes"].values()]
    att = report["attribution"]
    causes = causes_table(att)
    assert causes.column("cause")[-1] == "residual" and fmt_s(att["overhead_s"]) in causes.title
    # the causes and the residual add up to the overhead (the fixture's causes are overhead - residual)
    assert sum(causes.column("share")) == pytest.approx(1.0)
    assert Attribution(att).largest(2) == [("dropout", "dropout", 0.0025), ("lora_A", "lora_A matmul", 0.0015)]
    report["notes"] = ["x", "x"]
    assert notes(report) == ["x"]
