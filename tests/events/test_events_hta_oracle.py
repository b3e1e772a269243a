"""Oracle: per kernel name totals agree with Holistic Trace Analysis (dev-only dependency)."""

from __future__ import annotations

import logging

import pytest

from lora_profiler.analyses.kernels import kernel_breakdown
from lora_profiler.events import load_trace

hta_ta = pytest.importorskip("hta.trace_analysis")
pytestmark = pytest.mark.filterwarnings("ignore")  # pandas/HTA deprecation noise

from conftest import SHARED_TRACES as TRACES  # noqa: E402 (tests/conftest.py: the one place it is defined)


# HTA truncates fractional durations to whole microseconds, so the oracle uses traces written
# with integer times; it also lists cuda_sync events ("Stream Wait Event"), which are not GPU
# activities and which we do not tabulate.
@pytest.mark.parametrize("folder", ["hta/critical_path_alexnet", "hta/ddp_v100_rank1"])
def test_kernel_totals_match_hta(folder):
    path = TRACES / folder
    if not path.is_dir():
        pytest.skip(f"real traces not found at {TRACES.resolve()}")
    logging.disable(logging.WARNING)
    try:
        ta = hta_ta.TraceAnalysis(trace_dir=str(path), include_last_profiler_step=True)
        _, per_name = ta.get_gpu_kernel_breakdown(visualize=False, num_kernels=10 ** 6,
                                                  include_memory_kernels=True)
    finally:
        logging.disable(logging.NOTSET)
    ours = {r.name: r for r in kernel_breakdown(load_trace(path)).by_name}
    theirs = {row["name"]: row for _, row in per_name.iterrows()}
    assert set(theirs) - set(ours) <= {"Stream Wait Event", "Event Sync"}
    assert set(ours) <= set(theirs)
    for name, row in theirs.items():
        if name not in ours:
            continue
        r = ours[name]
        assert r.total_us == pytest.approx(row["sum (us)"], rel=1e-9)
        assert r.max_us == pytest.approx(row["max (us)"], rel=1e-9)
        assert r.min_us == pytest.approx(row["min (us)"], rel=1e-9)
