"""The attribution on synthetic traces (exact arithmetic worked out by hand) and on a real tiny run."""

import json

import numpy as np
import pytest

from lora_profiler.analyses.attribution import ModeTrace, attribute
from lora_profiler.analyses.lora_details import matmul_intensity
from lora_profiler.analyses.lora_roles import ROLES, assign_roles
from lora_profiler.analyses.step_causes import gap_before
from lora_profiler.events import load_trace

L = "lp/adapter/blk.q"
K = "lp/module/blk.k"
# The profiler's cost per event used by the synthetic tests (us); backward_node 0.
CAL = {"cost_us": {"op_top": 1.0, "op_nested": 0.5, "memory": 0.25, "scope": 2.0, "annotation": 0.1,
                   "backward_node": 0.0}}


def op(name, ts, dur, seq=None, dims=None, tid=1):
    args = {}
    if seq is not None:
        args["Sequence number"] = seq
    if dims is not None:
        args["Input Dims"] = dims
    return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def scope(name, ts, dur, tid=1):
    return {"ph": "X", "cat": "user_annotation", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": {}}


def mem(ts, nbytes, tid=1):
    return {"ph": "i", "cat": "cpu_instant_event", "name": "[memory]", "ts": ts, "pid": 1, "tid": tid, "s": "t",
            "args": {"Bytes": nbytes, "Total Allocated": 0, "Total Reserved": 0, "Device Type": 0, "Device Id": -1}}


def lora_step(t0=0, step=1):
    """One LoRA step: one adapted layer (blk.q) and one other module (blk.k); times in us."""
    e = [
        scope(f"ProfilerStep#{step}", 0, 1000),
        scope("lp/phase/forward", 0, 400),
        scope(L, 10, 300),
        scope(L + "#base", 11, 99), op("aten::mm", 20, 80, seq=1, dims=[[64, 32], [32, 32]]),
        scope(L + "#dropout", 120, 40), op("aten::dropout", 125, 30, seq=2),
        op("aten::bernoulli_", 130, 15), mem(131, 1024), mem(152, -1024),
        scope(L + "#lora_A", 170, 30), op("aten::mm", 175, 20, seq=3, dims=[[64, 32], [32, 4]]),
        scope(L + "#lora_B", 210, 30), op("aten::mm", 215, 20, seq=4, dims=[[64, 4], [4, 32]]),
        scope(L + "#scale_add", 250, 50), op("aten::mul", 255, 15, seq=5), op("aten::add", 275, 15, seq=6),
        scope(K, 320, 40), op("aten::mm", 325, 30, seq=7, dims=[[64, 32], [32, 32]]),
        scope("lp/phase/backward", 400, 400),
        op("autograd::engine::evaluate_function: AddBackward0", 410, 10, seq=6),
        op("autograd::engine::evaluate_function: MulBackward0", 425, 10, seq=5),
        op("autograd::engine::evaluate_function: MmBackward0", 440, 50, seq=4),
        op("MmBackward0", 441, 48), op("aten::mm", 445, 40),
        op("autograd::engine::evaluate_function: MmBackward0", 500, 60, seq=3),
        op("MmBackward0", 501, 44),
        op("aten::add_", 550, 8),  # the engine summing two gradients of the layer's input
        op("autograd::engine::evaluate_function: NativeDropoutBackward0", 565, 20, seq=2),
        op("autograd::engine::evaluate_function: MmBackward0", 590, 90, seq=1),
        op("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", 700, 5),
        op("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", 710, 5),
        scope("lp/phase/optimizer", 800, 150), op("aten::_foreach_add_", 810, 100),
    ]
    for x in e:
        x["ts"] += t0
    return e


def frozen_step(t0=0, step=1):
    """The floor: the same network without the adapter path; its base mm 10 us faster, and it
    computes blk.k's input gradient, which LoRA skips. Outside ops, its phases spend what LoRA's
    spend outside the adapter path (83 us forward, 98 us backward, after the profiler's cost)."""
    e = [
        scope(f"ProfilerStep#{step}", 0, 1000),
        scope("lp/phase/forward", 0, 192),
        scope(L, 10, 102),  # the disabled adapted layer: its base, and 3 us of its own Python
        scope(L + "#base", 11, 99), op("aten::mm", 20, 70, seq=1, dims=[[64, 32], [32, 32]]),
        scope(K, 120, 40), op("aten::mm", 125, 30, seq=7, dims=[[64, 32], [32, 32]]),
        scope("lp/phase/backward", 200, 230),
        op("autograd::engine::evaluate_function: MmBackward0", 210, 90, seq=1),
        op("autograd::engine::evaluate_function: MmBackward0", 310, 40, seq=7),
    ]
    for x in e:
        x["ts"] += t0
    return e


def write(tmp_path, events, name="t.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def rounds(tmp_path, make, name, n=3):
    """n one-step files of a mode, each round its own step number (as capture writes them)."""
    return load_trace([str(write(tmp_path, make(t0=10_000 * r, step=2 * r + 1), f"{name}{r}.json"))
                       for r in range(n)])


def facts_for(t_lora, t_frozen, opt_lora=150e-6):
    n = len(t_lora)
    return {"modes": {
        "lora": {"status": "ok", "step_time_s": {"median": float(np.median(t_lora)), "samples": list(t_lora)},
                 "phase_samples_s": {"optimizer": [opt_lora] * n, "zero_grad": [0.0] * n, "forward": [0.0] * n,
                                     "backward": [0.0] * n}},
        "frozen": {"status": "ok", "step_time_s": {"median": float(np.median(t_frozen)), "samples": list(t_frozen)},
                   "phase_samples_s": {"optimizer": [0.0] * n, "zero_grad": [0.0] * n, "forward": [0.0] * n,
                                       "backward": [0.0] * n}}}}


def test_roles_follow_scopes_and_sequence_numbers(tmp_path):
    trace = load_trace(str(write(tmp_path, lora_step())))
    roles = assign_roles(trace)
    names = [trace.names[i] for i in trace.ops.name]
    got = {(names[i], float(trace.ops.ts_us[i])): ROLES[roles.op_role[i]] for i in range(len(names))}
    assert got[("aten::mm", 20.0)] == "base"
    assert got[("aten::mm", 175.0)] == "lora_A" and got[("aten::mm", 215.0)] == "lora_B"
    assert got[("aten::mul", 255.0)] == "scale" and got[("aten::add", 275.0)] == "add"
    assert got[("aten::bernoulli_", 130.0)] == "dropout"  # nested ops keep their root's role
    # backward nodes take the role of the forward op with their sequence number
    assert got[("autograd::engine::evaluate_function: MmBackward0", 440.0)] == "lora_B"
    assert got[("aten::mm", 445.0)] == "lora_B"  # nested in the node
    assert got[("autograd::engine::evaluate_function: MulBackward0", 425.0)] == "scale"
    assert got[("autograd::engine::evaluate_function: MmBackward0", 590.0)] == "base"
    assert got[("autograd::engine::evaluate_function: NativeDropoutBackward0", 565.0)] == "dropout"
    assert got[("aten::add_", 550.0)] == "engine"
    assert got[("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", 700.0)] == "accumulate_grad"
    assert got[("aten::_foreach_add_", 810.0)] == "none"
    assert roles.layers == ["blk.q"]
    acc = [i for i, n in enumerate(names) if "AccumulateGrad" in n]
    assert set(roles.op_layer[acc].tolist()) == {0}  # after blk.q's base node


def test_roles_use_the_traces_own_scope_prefix(tmp_path):
    events = [dict(e, name=e["name"].replace("lp/", "xy/")) for e in lora_step()]
    path = write(tmp_path, events)
    roles = assign_roles(load_trace(str(path), scope_prefix="xy/"))
    assert roles.layers == ["blk.q"]
    assert roles.role_mask(["lora_A"]).sum() == 3  # forward mm, its backward node and node function


def test_causes_exact_with_calibrated_costs(tmp_path):
    lora = rounds(tmp_path, lora_step, "lora")
    frozen = rounds(tmp_path, frozen_step, "frozen")
    f = facts_for([1000e-6, 1010e-6, 990e-6], [600e-6, 600e-6, 600e-6])
    att = attribute(ModeTrace(lora, CAL), ModeTrace(frozen, CAL), f)
    c = {k: round(v["seconds"] * 1e6, 6) for k, v in att["causes"].items()}
    ph = {k: {p: round(x * 1e6, 6) for p, x in v["phases"].items()} for k, v in att["causes"].items()}
    assert att["rounds"] == 3 and att["causes"]["lora_A"]["n"] == 3
    # dropout forward: root self 30-15 less a nested op 0.5 and an allocation 0.25; bernoulli
    # 15 less its allocation 0.25; backward 20
    assert ph["dropout"] == {"forward": 14.25 + 14.75, "backward": 20}
    # node: its own self time less its children's cost, the node function's, the matmul's; the
    # engine's add_ inside lora_A's node is not lora_A's
    assert ph["lora_A"] == {"forward": 20, "backward": (60 - 44 - 8 - 0.5 - 0.5) + 44}
    assert ph["lora_B"] == {"forward": 20, "backward": (50 - 48 - 0.5) + (48 - 40 - 0.5) + 40}
    assert c["scale"] == 15 + 10 and c["add"] == 15 + 10
    assert c["grad_input_sum"] == 8
    assert c["grad_accumulation"] == 10
    # forward dispatch: layer 300 - base 99 - adapter ops 100, less the free events' cost in the
    # path: 4 hooked scopes (2 each), 1 annotation (0.1), 5 top-level ops (1 each); backward: the
    # gaps before the adapter nodes and AccumulateGrads (5+5+10+5+20+5) less each node's own 1;
    # less the floor's: its disabled layer's 3 us outside the base, less the base scope's cost
    assert c["dispatch"] == pytest.approx((300 - 99 - 100 - (8 + 0.1 + 5)) + (50 - 6) - (3 - 2))
    assert c["optimizer"] == 150
    # floor-only: blk.k's input gradient (40); the rest: lora's base mm 10 us slower
    assert c["floor_only_nodes"] == -40 and c["mode_only_nodes"] == 0
    assert ph["rest_of_network"] == {"forward": 10, "backward": 0}
    assert att["overhead_s"] == pytest.approx(400e-6)
    assert att["residual_s"] == pytest.approx(400e-6 - sum(v["seconds"] for v in att["causes"].values()))
    groups = {k: round(v["seconds"] * 1e6, 6) for k, v in att["groups"].items()}
    assert groups["adapter_matmul_fwd"] == 40 and groups["adapter_matmul_bwd"] == 51 + 49
    assert groups["other_ops_delta"] == -30
    assert sum(groups.values()) == pytest.approx(sum(c.values()))
    bl = att["by_layer"]["blk.q"]
    assert bl["lora_A"] * 1e6 == pytest.approx(71) and bl["grad_accumulation"] * 1e6 == pytest.approx(10)
    parts = {k: round(v * 1e6, 6) for k, v in att["dispatch_parts"].items()}
    # the dropout scope: 40 - its op 30 - the op's own cost 1; its backward gap 5 - 1
    assert parts["dropout"] == pytest.approx(9 + 4)


def test_spread_comes_from_rounds(tmp_path):
    def slower(t0=0, step=1):
        e = lora_step(t0, step)
        if step == 3:  # the second round's lora_A forward op takes 40 us instead of 20
            for x in e:
                if x["name"] == "aten::mm" and x["ts"] == t0 + 175:
                    x["dur"] = 40
        return e
    att = attribute(ModeTrace(rounds(tmp_path, slower, "lora"), CAL), None, facts_for([1e-3] * 3, [6e-4] * 3))
    a = att["causes"]["lora_A"]
    assert (a["min"] * 1e6, a["max"] * 1e6) == pytest.approx((71, 91))
    assert a["seconds"] * 1e6 == pytest.approx(71)  # the median round


def test_no_calibration_means_no_correction(tmp_path):
    lora = rounds(tmp_path, lora_step, "lora", n=1)
    att = attribute(ModeTrace(lora, None), None, facts_for([1e-3], [6e-4]))
    assert att["causes"]["dropout"]["phases"]["forward"] * 1e6 == pytest.approx(30)


def test_cost_larger_than_the_op_is_clipped_and_flagged(tmp_path):
    cal = {"cost_us": dict(CAL["cost_us"], op_nested=100.0)}
    att = attribute(ModeTrace(rounds(tmp_path, lora_step, "lora", n=1), cal), None, facts_for([1e-3], [6e-4]))
    d = att["causes"]["dropout"]
    assert d["clipped"] and d["seconds"] == 0 and d["raw_seconds"] < 0


def test_weight_gradients_found_by_shape(tmp_path):
    events = [
        scope("ProfilerStep#1", 0, 1000), scope("lp/phase/forward", 0, 100),
        scope("lp/module/lin", 10, 50), op("aten::mm", 15, 40, seq=1, dims=[[512, 32], [32, 16]]),
        scope("lp/phase/backward", 100, 400),
        op("autograd::engine::evaluate_function: MmBackward0", 110, 200, seq=1), op("MmBackward0", 111, 198),
        op("aten::mm", 120, 70, dims=[[16, 512], [512, 32]]),   # grad W: [16, 32], over the tokens
        op("aten::mm", 200, 60, dims=[[512, 16], [16, 32]]),    # grad x: [512, 32]
    ]
    trace = load_trace(str(write(tmp_path, events)))
    roles = assign_roles(trace, weight_shapes=[[[32, 16], 1]])  # the weight, stored (in, out) like Conv1D
    got = [ROLES[r] for r in roles.op_role]
    assert got[3] == "weight_grad" and got[4] == "module"
    assert assign_roles(trace).op_role[3] == roles.op_role[4]  # without shapes: not found


def test_gap_before_keeps_streams_apart(tmp_path, ev, mk):
    trace = mk([ev.kern("a", 0, 100, 1, stream=7), ev.kern("b", 10, 5, 2, stream=8),
                ev.kern("c", 40, 5, 3, stream=8), ev.kern("d", 150, 5, 4, stream=7)])
    gaps = dict(zip(trace.names_of(trace.kernels.name), gap_before(trace)))
    # stream 8's second kernel waited 25 us after its first, though stream 7 was busy till 100
    assert gaps == {"a": 0, "b": 0, "c": 25, "d": 50}


def test_matmul_intensity_from_dims():
    flops, intensity = matmul_intensity([[64, 32], [32, 4]], 4)
    assert flops == 2 * 64 * 32 * 4
    assert intensity == pytest.approx(flops / (4 * (64 * 32 + 32 * 4 + 64 * 4)))
    flops, _ = matmul_intensity([[32], [64, 32], [32, 32]], 2)  # addmm(bias, x, w)
    assert flops == 2 * 64 * 32 * 32
    assert matmul_intensity([[3]], 4) is None


def stall(events, at, delta):
    """The events as if the thread stopped for ``delta`` us at time ``at``: what starts later
    starts later, what spans it lasts longer."""
    out = []
    for e in events:
        e = dict(e)
        if e["ts"] > at:
            e["ts"] += delta
        elif e.get("dur") is not None and e["ts"] + e["dur"] > at:
            e["dur"] += delta
        out.append(e)
    return out


def test_typical_step_ignores_a_stall_in_one_round(tmp_path):
    def stalled(t0=0, step=1):
        e = lora_step(t0, step)
        # one round's blk.k matmul stalls 300 us (a preemption, a page-fault storm)
        return stall(e, t0 + 340, 300) if step == 3 else e
    frozen = rounds(tmp_path, frozen_step, "frozen")
    att = attribute(ModeTrace(rounds(tmp_path, stalled, "lora"), CAL), ModeTrace(frozen, CAL),
                    facts_for([1e-3] * 3, [6e-4] * 3))
    rest = att["causes"]["rest_of_network"]
    assert rest["seconds"] * 1e6 == pytest.approx(10)  # the typical step: lora's base mm 80 vs 70
    assert rest["max"] * 1e6 == pytest.approx(310)  # the stalled round, shown in the spread


def launch(ts, corr, tid=1):
    return {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 4,
            "pid": 1, "tid": tid, "args": {"correlation": corr}}


def kernel(name, ts, dur, corr, stream=7):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": stream,
            "args": {"correlation": corr, "device": 0, "stream": stream}}


def gpu_step(t0=0, step=1, stream_b=7):
    """One CUDA step through one adapted layer. The base mm's kernel runs 20..80; lora_A's kernel
    is launched at 74 but queued behind the base kernel (starts 80: no idle before it); lora_B's
    launch comes late, the GPU idles 35 us before it. With ``stream_b`` lora_B runs on another
    stream, where it waits for nothing."""
    e = [
        scope(f"ProfilerStep#{step}", 0, 1000),
        scope("lp/phase/forward", 0, 300),
        scope(L, 10, 200),
        scope(L + "#base", 11, 49), op("aten::mm", 12, 40, seq=1, dims=[[64, 32], [32, 32]]), launch(14, 1),
        scope(L + "#lora_A", 70, 40), op("aten::mm", 72, 30, seq=2, dims=[[64, 32], [32, 4]]), launch(74, 2),
        scope(L + "#lora_B", 120, 40), op("aten::mm", 122, 30, seq=3, dims=[[64, 4], [4, 32]]), launch(124, 3),
        kernel("gemm_base", 20, 60, 1),
        kernel("gemm_lora_A", 80, 10, 2),
        kernel("gemm_lora_B", 125, 10, 3, stream=stream_b),
        scope("lp/phase/backward", 300, 300),
        op("autograd::engine::evaluate_function: MmBackward0", 310, 40, seq=2), launch(315, 4),
        kernel("gemm_lora_A_bwd", 330, 20, 4),
    ]
    for x in e:
        x["ts"] += t0
    return e


def test_gpu_causes_from_kernels_and_idle(tmp_path):
    trace = rounds(tmp_path, gpu_step, "gpu", n=2)
    assert trace.device == "cuda"
    att = attribute(ModeTrace(trace, CAL), None, facts_for([1e-3] * 2, [6e-4] * 2))
    ph = {k: {p: round(x * 1e6, 6) for p, x in v["phases"].items()} for k, v in att["causes"].items()}
    assert att["unit"] == "kernel" and "gpu_idle_in_adapter" in att["groups"]
    # kernel time, not the ops' CPU time (and no profiler correction: kernels carry none)
    assert ph["lora_A"] == {"forward": 10, "backward": 20} and ph["lora_B"] == {"forward": 10, "backward": 0}
    # idle right before adapter kernels: lora_A queued behind the base kernel waited for nothing,
    # lora_B's stream sat idle 125 - 90 = 35 us; the backward kernel follows the forward's (the
    # loss and the engine), which is not the adapter path's launch
    assert att["causes"]["dispatch"]["seconds"] * 1e6 == pytest.approx(35)


def test_gpu_idle_is_per_stream(tmp_path):
    trace = rounds(tmp_path, lambda t0=0, step=1: gpu_step(t0, step, stream_b=8), "gpu2", n=2)
    att = attribute(ModeTrace(trace, CAL), None, facts_for([1e-3] * 2, [6e-4] * 2))
    # on its own stream, lora_B's kernel is the stream's first: no idle is counted before it,
    # whatever the other stream did
    assert att["causes"]["dispatch"]["seconds"] == 0
    assert att["causes"]["lora_B"]["phases"]["forward"] * 1e6 == pytest.approx(10)


def test_page_faults_the_trace_missed(tmp_path):
    f = facts_for([1e-3] * 3, [6e-4] * 3)
    zero = {"zero_grad": [0] * 3, "optimizer": [0] * 3}
    f["modes"]["lora"]["page_faults"] = {"timed": {"forward": [3000, 3100, 2900], "backward": [1000] * 3, **zero},
                                         "profiled": {"forward": [500] * 3, "backward": [0] * 3, **zero}}
    f["modes"]["frozen"]["page_faults"] = {"timed": {"forward": [1000] * 3, "backward": [0] * 3, **zero},
                                           "profiled": {"forward": [0] * 3, "backward": [0] * 3, **zero}}
    f["calibration"] = {"page_fault_us": 0.5}
    lora = rounds(tmp_path, lora_step, "lora")
    att = attribute(ModeTrace(lora, CAL), ModeTrace(rounds(tmp_path, frozen_step, "frozen"), CAL), f)
    pf = att["causes"]["page_faults_unseen"]
    # timed: lora faulted 2000 more forward, 1000 more backward; profiled: 500 more forward
    assert pf["phases"]["forward"] * 1e6 == pytest.approx((2000 - 500) * 0.5)
    assert pf["phases"]["backward"] * 1e6 == pytest.approx(1000 * 0.5)
    assert att["page_faults"]["timed_difference_s"] * 1e6 == pytest.approx(3000 * 0.5)
    assert "page_faults_unseen" in att["groups"]["other_ops_delta"]["causes"]


def test_page_fault_cost_is_measured():
    from lora_profiler.capture.calibrate import page_fault_cost
    from lora_profiler.capture.step import minor_faults

    if minor_faults() == 0:
        pytest.skip("this OS does not count page faults")
    cost = page_fault_cost(megabytes=64, repeats=3)
    assert cost is not None and 0.01 < cost < 50  # us per fault: a few hundred ns to a few us
