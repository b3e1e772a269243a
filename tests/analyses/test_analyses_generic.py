"""Generic analyses on a hand-made GPU trace (numbers worked out in the comments) and on a
real one (invariants)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lora_profiler.analyses.compare import compare_traces
from lora_profiler.analyses.dispatch import dispatch_overhead
from lora_profiler.analyses.idle import gpu_idle, union_gaps
from lora_profiler.analyses.kernels import kernel_breakdown
from lora_profiler.analyses.launches import launch_stats, launch_table
from lora_profiler.analyses.ops import op_table
from lora_profiler.analyses.summary import headline, per_step
from lora_profiler.events import load_trace


@pytest.fixture
def gpu_trace(mk, ev):
    return mk([
        ev.step(1, 0, 250),
        ev.op("aten::linear", 0, 100), ev.op("aten::addmm", 10, 80),
        ev.launch(20, 10, 1), ev.kern("volta_sgemm_128x64_nn", 40, 20, 1),        # not bound
        ev.op("aten::add", 120, 30), ev.launch(125, 8, 2),
        ev.kern("void at::native::vectorized_elementwise_kernel<4>", 135, 3, 2),   # bound
        ev.op("aten::sum", 160, 20), ev.launch(165, 5, 3),
        ev.kern("void at::native::reduce_kernel<512>", 175, 2, 3),                 # bound
        ev.launch(190, 4, 4, name="cudaMemcpyAsync"),
        ev.kern("Memcpy HtoD (Pageable -> Device)", 200, 10, 4, cat="gpu_memcpy"),
        ev.kern("ncclKernel_AllReduce_RING_LL_Sum_float", 50, 100, 99, stream=8),  # no launch
    ])


def test_kernel_breakdown(gpu_trace):
    kb = kernel_breakdown(gpu_trace)
    assert (kb.kernel_count, kb.kernel_total_us) == (4, 125.0)
    assert (kb.memcpy_count, kb.memcpy_total_us, kb.memset_count) == (1, 10.0, 0)
    assert {r.kind: r.total_us for r in kb.by_kind} == {
        "communication": 100.0, "gemm": 20.0, "memcpy": 10.0, "elementwise": 3.0,
        "reduction": 2.0}
    assert kb.by_name[0].name.startswith("ncclKernel") and kb.by_name[0].fraction == 100 / 135
    assert len(kernel_breakdown(gpu_trace, top=2).by_name) == 2
    json.dumps(kb.to_dict())


def test_launch_stats(gpu_trace):
    ls = launch_stats(gpu_trace)
    assert (ls.count, ls.linked, ls.unlinked, ls.kernels_unlinked) == (4, 4, 0, 1)
    assert ls.delay_us["median"] == 10.0 and ls.delay_us["max"] == 20.0   # 20, 10, 10, 10
    assert ls.cpu_us["total"] == 27.0
    assert ls.launch_bound == 2 and ls.launch_bound_fraction == pytest.approx(2 / 3)
    assert ls.launch_bound_gpu_us == 5.0
    assert {r.name: r.count for r in ls.by_api} == {"cudaLaunchKernel": 3, "cudaMemcpyAsync": 1}
    rows = launch_table(gpu_trace)
    assert sum(r["launch_bound"] for r in rows) == 2
    json.dumps(ls.to_dict())


def test_gpu_idle(gpu_trace):
    idle = gpu_idle(gpu_trace)
    (dev,) = idle.devices
    # union: [40,150] [175,177] [200,210] -> busy 122 of span 170
    assert (dev.span_us, dev.busy_us, dev.idle_us, dev.gaps) == (170.0, 122.0, 48.0, 2)
    s7 = next(r for r in idle.streams if r.stream == 7)
    assert (s7.busy_us, s7.idle_us, s7.gaps, s7.max_gap_us) == (35.0, 135.0, 3, 75.0)
    assert union_gaps(np.array([0.0, 1.0, 10.0]), np.array([5.0, 1.0, 1.0])).tolist() == [5.0]
    json.dumps(idle.to_dict())


def test_op_table_attributes_device_time(gpu_trace):
    t = op_table(gpu_trace)
    rows = {r.name: r for r in t.rows}
    assert t.sort_by == "device_total_us" and t.rows[0].name in ("aten::linear", "aten::addmm")
    assert (rows["aten::linear"].device_self_us, rows["aten::linear"].device_total_us) == (0, 20)
    assert (rows["aten::addmm"].device_self_us, rows["aten::addmm"].device_total_us) == (20, 20)
    assert rows["aten::linear"].cpu_self_us == 20 and rows["aten::addmm"].cpu_self_us == 80
    assert rows["aten::add"].launches == 1 and rows["aten::sum"].device_total_us == 2
    assert t.device_linked_us == 25.0 and t.device_unattributed_us == 110.0
    json.dumps(t.to_dict())


def test_op_table_counts_recursion_once(mk, ev):
    t = op_table(mk([ev.op("aten::copy_", 0, 100), ev.op("aten::to", 10, 50),
                     ev.op("aten::copy_", 20, 30)]))
    rows = {r.name: r for r in t.rows}
    assert rows["aten::copy_"].count == 2 and rows["aten::copy_"].cpu_total_us == 100
    assert rows["aten::copy_"].cpu_self_us == 50 + 30 and t.sort_by == "cpu_self_us"


def test_dispatch_overhead_from_view_ops(mk, ev):
    events = [ev.op("aten::view", 10 * i, 2 + (i % 3)) for i in range(25)]   # median 3
    events += [ev.op("aten::mm", 1000 + 100 * i, 50) for i in range(3)]
    events += [ev.op("aten::linear", 2000, 60), ev.op("aten::mm", 2005, 50)]
    d = dispatch_overhead(mk(events))
    assert d.method == "view-ops median" and d.per_call_us == 3.0 and d.samples == 25
    rows = {r.name: r for r in d.by_name}
    assert rows["aten::view"].overhead_us == 25 * 3            # min(c0, median self) * count
    assert rows["aten::mm"].overhead_us == 4 * 3
    assert rows["aten::linear"].overhead_us == 3               # self 10 > c0
    assert d.overhead_us == 75 + 12 + 3 and d.op_calls == 30
    assert d.tiny_calls == 25 and d.tiny_self_us == sum(2 + (i % 3) for i in range(25))
    json.dumps(d.to_dict())


def test_dispatch_overhead_falls_back_to_leaf_quantile(mk, ev):
    d = dispatch_overhead(mk([ev.op("aten::mm", 10 * i, 1 + i) for i in range(5)]))
    assert d.method == "leaf-ops p10" and d.per_call_us == pytest.approx(1.4)


def test_headline_per_step_and_compare(mk, ev, gpu_trace):
    h = headline(gpu_trace)
    assert (h["gpu.kernel.count"], h["gpu.memcpy.count"], h["launches.count"],
            h["launches.linked"], h["steps"], h["device"]) == (4, 1, 4, 4, 1, "cuda")
    (row,) = per_step(gpu_trace)
    assert row["step"] == 1 and row["gpu.kernel.count"] == 4 and row["launches.launch_bound"] == 2
    other = mk([ev.step(1, 0, 100), ev.op("aten::add", 0, 30), ev.launch(5, 8, 1),
                ev.kern("void at::native::vectorized_elementwise_kernel<4>", 20, 3, 1),
                ev.launch(15, 8, 2),
                ev.kern("void at::native::vectorized_elementwise_kernel<4>", 30, 5, 2)])
    c = compare_traces(gpu_trace, other)
    assert c["headline"]["gpu.kernel.count"] == {"a": 4, "b": 2, "delta": -2}
    k = {r["name"]: r for r in c["kernels"]}
    el = k["void at::native::vectorized_elementwise_kernel<4>"]
    assert (el["count_a"], el["count_b"], el["delta_us"]) == (1, 2, 5.0)
    assert c["kernels"][0]["name"].startswith("ncclKernel")    # largest |delta| first
    json.dumps(c)


def test_invariants_on_a_real_trace(traces_dir):
    t = load_trace(traces_dir / "hta" / "ddp_v100_rank1")
    kb = kernel_breakdown(t)
    assert kb.total_us == pytest.approx(t.kernels.dur_us.sum())
    assert sum(r.total_us for r in kb.by_name) == pytest.approx(kb.total_us)
    ot = op_table(t)
    assert sum(r.device_self_us for r in ot.rows) == pytest.approx(ot.device_linked_us)
    assert ot.device_linked_us + ot.device_unattributed_us == pytest.approx(kb.total_us)
    idle = gpu_idle(t)
    for r in idle.devices + idle.streams:
        assert 0 <= r.busy_us <= r.span_us and r.idle_us >= 0
    steps = per_step(t)
    assert [s["step"] for s in steps] == t.step_numbers()
    assert sum(s["gpu.kernel.count"] for s in steps) == int(
        ((t.kernels.step >= 0) & (t.kernels.cat == 0)).sum())
    for row in steps:                        # grouped per-step figures == analyses of a view
        view = t.for_step(row["step"])
        lv, iv = launch_stats(view), gpu_idle(view)
        assert (row["launches.count"], row["launches.linked"], row["launches.launch_bound"]) == (
            lv.count, lv.linked, lv.launch_bound)
        assert row["launches.delay_median_us"] == lv.delay_us["median"]
        assert row["gpu.idle_us"] == pytest.approx(sum(d.idle_us for d in iv.devices))
    ls = launch_stats(t)
    assert ls.linked == int((t.launches.n_gpu > 0).sum()) and ls.linked <= ls.count
    assert 0 < ls.launch_bound < kb.kernel_count
