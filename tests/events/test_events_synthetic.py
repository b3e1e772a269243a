"""Edge cases on a few inline events: schema variants, odd fields, every link."""

from __future__ import annotations

import numpy as np
import pytest

from lora_profiler.events import (KIND_NAMES, TraceError, effective_scope,
                                  kernel_effective_scope, load_trace, parse_dims)


@pytest.fixture
def mk(tmp_path, ev):
    """mk(events, **top) -> Trace, written to a fresh file each call."""
    count = [0]

    def make(events, gz=False, **top):
        count[0] += 1
        path = tmp_path / f"t{count[0]}.json" if not gz else tmp_path / f"t{count[0]}.json.gz"
        return load_trace(ev.write(path, events, gz=gz, **top))
    return make


def names(t, ids):
    return t.names_of(ids)


def test_nested_ops_parent_depth_self(mk, ev):
    t = mk([ev.op("outer", 0, 100), ev.op("mid", 10, 50), ev.op("leaf", 20, 10),
            ev.op("leaf2", 70, 20), ev.op("other_thread", 5, 10, tid=2)])
    o = t.ops
    by = {n: i for i, n in enumerate(names(t, o.name))}
    assert o.parent[by["mid"]] == by["outer"] and o.parent[by["leaf"]] == by["mid"]
    assert o.parent[by["leaf2"]] == by["outer"] and o.parent[by["other_thread"]] == -1
    assert o.depth[by["leaf"]] == 2 and o.is_top[by["outer"]] and not o.is_top[by["mid"]]
    assert o.self_us[by["outer"]] == 100 - 50 - 20
    assert o.self_us[by["mid"]] == 40 and o.self_us[by["leaf"]] == 10


def test_launch_kernel_op_links_without_flows(mk, ev):
    t = mk([ev.op("aten::mm", 0, 50, External_id=7),
            ev.rt("cudaLaunchKernel", 10, 5, corr=100, ext=7),
            ev.kern("volta_sgemm_128x64_nn", 30, 20, corr=100),
            ev.rt("cudaLaunchKernel", 200, 5, corr=101, ext=7),      # outside every op
            ev.kern("void at::native::vectorized_elementwise_kernel<4>", 220, 3, corr=101),
            ev.kern("orphan_kernel", 300, 1, corr=999),
            ev.rt("cudaStreamSynchronize", 210, 1, corr=102)])
    k, L = t.kernels, t.launches
    assert len(L) == 2                                   # the sync call is not a launch
    assert t.counts["kernels_unlinked"] == 1 and t.counts["runtime_calls"] == 3
    assert k.launch.tolist() == [0, 1, -1]
    assert k.op.tolist() == [0, 0, -1]                   # second one by External id
    assert L.kernel.tolist() == [0, 1] and L.n_gpu.tolist() == [1, 1]
    assert [KIND_NAMES[i] for i in k.kind] == ["gemm", "elementwise", "other"]
    assert t.device == "cuda"


def test_memcpy_memset_and_legacy_schema(mk, ev):
    events = [
        {"ph": "X", "cat": "Operator", "name": "ProfilerStep#3", "pid": 9, "tid": "9",
         "ts": 0, "dur": 1000},
        {"ph": "X", "cat": "Operator", "name": "aten::copy_", "pid": 9, "tid": "9", "ts": 10,
         "dur": 100, "args": {"External id": 5, "Input Dims": [[2, 3], [2, 3], []]}},
        {"ph": "X", "cat": "Runtime", "name": "cudaMemcpyAsync", "pid": 9, "tid": "9",
         "ts": 20, "dur": 10, "args": {"correlation": 50, "external id": 5}},
        {"ph": "X", "cat": "Memcpy", "name": "Memcpy HtoD", "pid": 0, "tid": "stream 7",
         "ts": 40, "dur": 30, "args": {"device": 0, "stream": 7, "correlation": 50,
                                       "external id": 5, "bytes": 24}},
        {"ph": "X", "cat": "Runtime", "name": "cudaMemsetAsync", "pid": 9, "tid": "9",
         "ts": 150, "dur": 10, "args": {"correlation": 51, "external id": 6}},
        {"ph": "X", "cat": "Memset", "name": "Memset (Device)", "pid": 0, "tid": "stream 7",
         "ts": 170, "dur": 2, "args": {"device": 0, "stream": 7, "correlation": 51}},
        {"ph": "f", "id": 50, "pid": 0, "tid": "stream 7", "ts": 40, "cat": "async",
         "name": "launch", "bp": "e"},
        {"ph": "i", "s": "t", "name": "[memory]", "pid": 9, "tid": 9, "ts": 30,
         "args": {"Device Type": 1, "Device Id": 0, "Bytes": 24}},
    ]
    t = mk(events)
    assert len(t.ops) == 1 and t.ops.tid[0] == 9 and t.ops.ext[0] == 5
    assert t.steps.number.tolist() == [3]
    assert t.kernels.cat.tolist() == [1, 2]
    assert [KIND_NAMES[i] for i in t.kernels.kind] == ["memcpy", "memset"]
    assert t.kernels.bytes.tolist() == [24, -1]
    assert t.kernels.launch.tolist() == [0, 1] and t.kernels.op.tolist() == [0, -1]
    assert t.kernels.ext.tolist() == [5, -1]
    assert (t.kernels.step == 0).all() and t.ops.step[0] == 0
    assert parse_dims(t, 0) == [[2, 3], [2, 3], []]
    assert t.memory.total_allocated.tolist() == [-1] and t.memory.step.tolist() == [0]
    assert t.ignored["ph=f"] == 1


def test_amd_and_driver_launch_names(mk, ev):
    evs = []
    for i, api in enumerate(["hipLaunchKernel", "hipExtModuleLaunchKernel",
                             "hipModuleLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx",
                             "cudaLaunchKernelExC"]):
        cat = "cuda_driver" if api.startswith("cu") and not api.startswith("cuda") \
            else "cuda_runtime"
        evs.append(ev.rt(api, i * 10, 2, corr=i, cat=cat))
    evs.append(ev.kern("Cijk_Ailk_Bljk_HHS_BH_MT128x128", 100, 5, corr=0))
    t = mk(evs)
    assert len(t.launches) == 6 and t.launches.n_gpu.tolist() == [1, 0, 0, 0, 0, 0]
    assert t.device == "rocm" and KIND_NAMES[t.kernels.kind[0]] == "gemm"


def test_cpu_only_trace_is_cpu(mk, ev):
    t = mk([ev.op("aten::add", 0, 5)])
    assert t.device == "cpu" and len(t.kernels) == 0 and len(t.launches) == 0


def test_ns_display_unit_and_float_times_are_microseconds(mk, ev):
    t = mk([ev.op("a", 1712195495519689.0, 63.813)], displayTimeUnit="ns")
    assert t.ops.dur_us[0] == pytest.approx(63.813)
    assert t.ops.ts_us[0] == pytest.approx(1712195495519689.0)
    assert t.meta[0]["displayTimeUnit"] == "ns"


def test_odd_events_are_skipped_and_counted(mk, ev):
    good = ev.op("ok", 0, 1)
    t = mk([good,
            {"ph": "X", "cat": "cpu_op", "name": "no_ts", "dur": 1},
            {"ph": "X", "cat": "cpu_op", "name": "bad_dur", "ts": 1, "dur": "3"},
            {"ph": "X", "cat": "cpu_op", "name": "neg", "ts": 1, "dur": -3},
            {"ph": "X", "cat": "cpu_op", "name": 17, "ts": 1, "dur": 3},
            {"ph": "X", "cat": "cpu_op", "name": "bad_ext", "ts": 1, "dur": 3,
             "args": {"External id": "x"}},
            {"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 3,
             "args": {"correlation": [1]}},
            {"ph": "i", "name": "[memory]", "ts": 1},
            {"cat": "cpu_op", "name": "no_ph"},
            ["not", "an", "event"],
            {"ph": "X", "cat": "python_function", "name": "f", "ts": 0, "dur": 1},
            {"ph": "X", "name": "no cat", "ts": 0, "dur": 1}])
    assert len(t.ops) == 1 and len(t.kernels) == 0
    assert t.skipped == {"missing ts": 1, "non-numeric dur": 1, "negative dur": 1,
                         "non-string name": 1, "non-numeric External id": 1,
                         "non-numeric correlation": 1, "missing args": 1,
                         "missing ph": 1, "not an object": 1}
    assert t.ignored["python_function"] == 1 and t.ignored["None"] == 1


def test_out_of_range_and_wrong_typed_values_are_skipped(tmp_path, ev):
    """What used to reach the tables silently (1e300, inf, booleans, fractional ids)."""
    events = [ev.op("ok", 0, 1),
              ev.op("huge_ts", 1e300, 1), ev.op("neg_huge_ts", -2.0 ** 62, 1),
              ev.op("long_dur", 0, 8 * 86400e6), ev.op("bool_ts", True, 1),
              ev.op("bool_dur", 0, False), ev.op("frac_ext", 0, 1, External_id=1.5),
              ev.op("huge_seq", 0, 1, Sequence_number=2.0 ** 60),
              ev.op("bool_pid", 0, 1, pid=True), ev.op("list_tid", 0, 1, tid=[1]),
              ev.rt("cudaLaunchKernel", 0, 1, corr=True),
              ev.kern("k", 0, 1, corr=1, stream=1e300),
              ev.kern("k", 0, 1, corr=1, device=0.5), ev.mem(0, 8, 10, device_id=40000),
              {"ph": "X", "cat": "cpu_op", "name": "args_str", "ts": 0, "dur": 1, "args": "x"},
              {"ph": "X", "cat": ["cpu_op"], "name": "cat_list", "ts": 0, "dur": 1},
              {"ph": 7, "name": "ph_number"},
              ev.mem(0, True, 10), ev.mem(float("nan"), 8, 10)]
    path = tmp_path / "t.json"
    path.write_text(__import__("json").dumps({"traceEvents": events}))   # NaN as a literal
    t = load_trace(path)
    assert t.names_of(t.ops.name) == ["ok"] and len(t.kernels) == 0
    assert len(t.launches) == 0 and len(t.memory) == 0
    assert t.skipped == {"ts out of range": 2, "dur out of range": 1, "non-numeric ts": 1,
                         "non-numeric dur": 1, "bad External id": 1,
                         "bad Sequence number": 1, "non-numeric pid": 1,
                         "non-numeric tid": 1, "non-numeric correlation": 1, "bad stream": 1,
                         "bad device": 1, "bad Device Id": 1, "args not an object": 1, "non-string cat": 1,
                         "non-string ph": 1, "non-numeric Bytes": 1, "non-finite ts": 1}


def test_sequence_number_links_backward_to_forward(mk, ev):
    # forward on thread 1: linear(seq 0) > t(seq 0) ; addmm(seq 1) inside linear
    # backward on thread 2 with Fwd thread id, nested aten ops inherit
    f = [ev.op("aten::linear", 0, 100, Sequence_number=0, Fwd_thread_id=0),
         ev.op("aten::t", 5, 10, Sequence_number=0, Fwd_thread_id=0),
         ev.op("aten::addmm", 20, 70, Sequence_number=1, Fwd_thread_id=0),
         ev.op("aten::sum", 120, 10, Sequence_number=2)]
    b = [ev.op("autograd::engine::evaluate_function: SumBackward0", 200, 10, tid=2,
               Sequence_number=2, Fwd_thread_id=1),
         ev.op("autograd::engine::evaluate_function: AddmmBackward0", 220, 50, tid=2,
               Sequence_number=1, Fwd_thread_id=1),
         ev.op("AddmmBackward0", 221, 40, tid=2, Sequence_number=1, Fwd_thread_id=1),
         ev.op("aten::mm", 230, 20, tid=2),
         ev.op("autograd::engine::evaluate_function: TBackward0", 280, 10, tid=2,
               Sequence_number=0, Fwd_thread_id=1),
         ev.op("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad",
               300, 5, tid=2),
         ev.op("aten::add_", 301, 2, tid=2)]
    t = mk(f + b)
    n = names(t, t.ops.name)
    idx = {name: i for i, name in enumerate(n)}
    fwd = [n[j] if j >= 0 else None for j in t.ops.fwd_op]
    assert fwd[idx["autograd::engine::evaluate_function: SumBackward0"]] == "aten::sum"
    assert fwd[idx["AddmmBackward0"]] == "aten::addmm"
    assert fwd[idx["aten::mm"]] == "aten::addmm"               # inherited from its node
    # TBackward0's creator is aten::t, whose outermost same-seq ancestor is aten::linear
    assert fwd[idx["autograd::engine::evaluate_function: TBackward0"]] == "aten::linear"
    assert fwd[idx["aten::add_"]] is None                     # AccumulateGrad: no forward
    assert t.ops.is_backward.tolist() == [False] * 4 + [True] * 7


def test_scopes_and_effective_scope(mk, ev):
    events = [ev.ann("ProfilerStep#0", 0, 1000),
              ev.ann("lp/adapter/q", 10, 200), ev.ann("lp/adapter/q#lora_A", 20, 50),
              ev.ann("nccl:all_reduce", 300, 5), ev.ann("ProfilerStep#0", 0, 1000, tid=5,
                                                         cat="gpu_user_annotation"),
              ev.op("aten::linear", 25, 40, Sequence_number=4),
              ev.rt("cudaLaunchKernel", 30, 5, corr=1),
              ev.kern("gemv_kernel", 40, 3, corr=1),
              ev.op("aten::add", 100, 10, Sequence_number=5),
              ev.op("autograd::engine::evaluate_function: MmBackward0", 500, 20, tid=2,
                    Sequence_number=4, Fwd_thread_id=1),
              ev.op("aten::mm", 505, 10, tid=2),
              ev.rt("cudaLaunchKernel", 506, 2, corr=2, tid=2),
              ev.kern("gemv_kernel", 520, 3, corr=2)]
    t = mk(events)
    sc = names(t, t.scopes.name)
    assert sc == ["lp/adapter/q", "lp/adapter/q#lora_A"]
    assert t.scopes.parent.tolist() == [-1, 0] and t.scopes.depth.tolist() == [0, 1]
    assert names(t, t.annotations.name) == ["nccl:all_reduce"]
    assert t.ops.scope.tolist() == [1, 0, -1, -1]
    assert effective_scope(t).tolist() == [1, 0, 1, 1]
    assert t.kernels.scope.tolist() == [1, -1]
    assert kernel_effective_scope(t).tolist() == [1, 1]
    assert t.launches.scope.tolist() == [1, -1]
    assert (t.ops.step == 0).all() and (t.kernels.step == 0).all()
    assert t.steps.gpu_ts_us.tolist() == [0.0]             # from the gpu_user_annotation


def test_custom_scope_prefix(tmp_path, ev):
    path = ev.write(tmp_path / "t.json", [ev.ann("mine/x", 0, 10), ev.ann("lp/y", 0, 10),
                                          ev.op("a", 1, 2)])
    t = load_trace(path, scope_prefix="mine/")
    assert names(t, t.scopes.name) == ["mine/x"] and t.ops.scope.tolist() == [0]


def test_steps_and_unlinked_kernels_by_gpu_window(mk, ev):
    events = [ev.ann("ProfilerStep#1", 0, 100), ev.ann("ProfilerStep#2", 100, 100),
              ev.op("a", 10, 20), ev.rt("cudaLaunchKernel", 12, 2, corr=1),
              ev.kern("k", 50, 10, corr=1),
              ev.op("b", 110, 20), ev.rt("cudaLaunchKernel", 112, 2, corr=2),
              ev.kern("k", 150, 30, corr=2),
              ev.kern("graph_kernel", 160, 5, corr=77),            # no launch: by GPU window
              ev.kern("late", 5000, 1, corr=78),                   # outside every window
              ev.mem(115, 64, 1064)]
    t = mk(events)
    assert t.step_numbers() == [1, 2]
    assert t.kernels.step.tolist() == [0, 1, 1, -1]
    assert t.steps.gpu_ts_us.tolist() == [50.0, 150.0]
    assert t.steps.gpu_end_us.tolist() == [60.0, 180.0]
    assert t.memory.step.tolist() == [1] and t.memory.total_allocated.tolist() == [1064]
    s = t.for_step(2)
    assert len(s.kernels) == 2 and len(s.ops) == 1 and len(s.launches) == 1
    assert s.kernels.launch.tolist() == [0, -1] and s.launches.kernel.tolist() == [0]
    assert s.kernels.op.tolist() == [0] + [-1]
    assert s.steps.number.tolist() == [2]


@pytest.mark.parametrize("gz", [False, True])
def test_several_files_concatenate(tmp_path, ev, gz):
    a = ev.write(tmp_path / "a.json", [ev.op("x", 0, 10), ev.rt("cudaLaunchKernel", 1, 1, 5),
                                       ev.kern("k", 3, 1, 5)], gz=gz)
    b = ev.write(tmp_path / "b.json", [ev.op("y", 0, 10), ev.rt("cudaLaunchKernel", 1, 1, 5),
                                       ev.kern("k", 3, 1, 5)], gz=gz)
    t = load_trace([a, b])
    assert t.files == [str(a), str(b)] and t.ops.file.tolist() == [0, 1]
    assert t.kernels.launch.tolist() == [0, 1] and t.kernels.op.tolist() == [0, 1]
    assert t.counts["events"] == 6


def test_gzip_detected_by_content(tmp_path, ev):
    path = ev.write(tmp_path / "no_suffix", [ev.op("x", 0, 1)], gz=True)
    assert len(load_trace(path).ops) == 1


def test_bare_array_format(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 0, "dur": 1}]')
    assert len(load_trace(path).ops) == 1


@pytest.mark.parametrize("content, match", [
    ("", "empty file"),
    ("not json at all", "not valid JSON"),
    ('{"schemaVersion": 1}', "without a 'traceEvents'"),
    ('{"traceEvents": []}', "no events"),
    ("[[1, 2, 3], [4, 5, 6]]", "not trace events"),
])
def test_bad_files_raise_trace_error(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TraceError, match=match) as exc:
        load_trace(path)
    assert str(path) in str(exc.value)


def test_bad_paths_raise_trace_error(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "missing.json")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "notes.txt").write_text("x")
    with pytest.raises(TraceError, match="folder holds no trace"):
        load_trace(tmp_path / "empty_dir")
    with pytest.raises(TraceError, match="no trace path"):
        load_trace([])


def test_tables_are_numpy_and_names_interned(mk, ev):
    t = mk([ev.op("a", 0, 1), ev.op("a", 2, 1), ev.op("b", 4, 1)])
    assert isinstance(t.ops.ts_us, np.ndarray) and t.ops.ts_us.dtype == np.float64
    assert t.ops.name.dtype == np.int32 and t.ops.name[0] == t.ops.name[1]
    assert t.summary()["ops"] == 3
