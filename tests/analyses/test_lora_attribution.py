"""LoRA attribution on synthetic traces (exact arithmetic) and on a real tiny run."""

import json

import numpy as np
import pytest

from lora_profiler.analyses.lora import lora_attribution
from lora_profiler.analyses.lora_attribution import attribute
from lora_profiler.analyses.lora_details import matmul_intensity
from lora_profiler.analyses.lora_roles import ROLES, assign_roles
from lora_profiler.events import load_trace

L = "lp/adapter/blk.q"


def op(name, ts, dur, seq=None, dims=None, tid=1):
    args = {}
    if seq is not None:
        args["Sequence number"] = seq
    if dims is not None:
        args["Input Dims"] = dims
    return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def scope(name, ts, dur, tid=1):
    return {"ph": "X", "cat": "user_annotation", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": {}}


def lora_step_events():
    """One step: forward through one adapted layer, backward, optimizer (times in us)."""
    return [
        scope("ProfilerStep#1", 0, 1000),
        scope("lp/phase/forward", 0, 400),
        scope(L, 10, 300),
        scope(L + "#base", 10, 100), op("aten::mm", 20, 80, seq=1, dims=[[64, 32], [32, 32]]),
        scope(L + "#dropout", 120, 40), op("aten::dropout", 125, 30, seq=2),
        scope(L + "#lora_A", 170, 30), op("aten::mm", 175, 20, seq=3, dims=[[64, 32], [32, 4]]),
        scope(L + "#lora_B", 210, 30), op("aten::mm", 215, 20, seq=4, dims=[[64, 4], [4, 32]]),
        scope(L + "#scale_add", 250, 50), op("aten::mul", 255, 15, seq=5), op("aten::add", 275, 15, seq=6),
        scope("lp/phase/backward", 400, 400),
        op("autograd::engine::evaluate_function: AddBackward0", 410, 10, seq=6),
        op("autograd::engine::evaluate_function: MulBackward0", 425, 10, seq=5),
        op("autograd::engine::evaluate_function: MmBackward0", 440, 50, seq=4),
        op("aten::mm", 445, 40),
        op("autograd::engine::evaluate_function: MmBackward0", 500, 60, seq=3),
        op("autograd::engine::evaluate_function: NativeDropoutBackward0", 565, 20, seq=2),
        op("autograd::engine::evaluate_function: MmBackward0", 590, 90, seq=1),
        op("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", 700, 5),
        op("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", 710, 5),
        scope("lp/phase/optimizer", 800, 150), op("aten::_foreach_add_", 810, 100),
    ]


def write_trace(tmp_path, events, name="t.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_roles_follow_scopes_and_sequence_numbers(tmp_path):
    trace = load_trace(str(write_trace(tmp_path, lora_step_events())))
    roles = assign_roles(trace)
    names = [trace.names[i] for i in trace.ops.name]
    got = {(names[i], float(trace.ops.ts_us[i])): ROLES[roles.op_role[i]] for i in range(len(names))}
    assert got[("aten::mm", 20.0)] == "base"
    assert got[("aten::mm", 175.0)] == "lora_A" and got[("aten::mm", 215.0)] == "lora_B"
    assert got[("aten::mul", 255.0)] == "scale_add"
    # backward nodes take the role of the forward op with their sequence number
    assert got[("autograd::engine::evaluate_function: MmBackward0", 440.0)] == "lora_B"
    assert got[("aten::mm", 445.0)] == "lora_B"  # nested in the node
    assert got[("autograd::engine::evaluate_function: MmBackward0", 590.0)] == "base"
    assert got[("autograd::engine::evaluate_function: NativeDropoutBackward0", 565.0)] == "dropout"
    assert got[("aten::_foreach_add_", 810.0)] == "none"
    assert roles.layers == ["blk.q"]


def facts(step_s, forward_s, backward_s, optimizer_s):
    return {"step_time_s": {"median": step_s},
            "phase_time_s": {"forward": forward_s, "backward": backward_s, "optimizer": optimizer_s,
                             "zero_grad": 0.0}}


def test_components_add_up_exactly(tmp_path):
    lora = load_trace(str(write_trace(tmp_path, lora_step_events())))
    # Measured phases equal to the traced ones: no profiler cost to remove.
    out = attribute(lora, None, facts(1000e-6, 400e-6, 400e-6, 150e-6), facts(600e-6, 300e-6, 300e-6, 0.0))
    c = {k: round(v * 1e6, 6) for k, v in out["components"].items()}
    assert out["profiler_cost_us_per_event"]["lora"] == {"forward": 0.0, "backward": 0.0}
    assert c["adapter_matmul_fwd"] == 20 + 20
    assert c["adapter_matmul_bwd"] == 50 + 60
    # dropout 30 + mul 15 + add 15 forward; Add/Mul/Dropout backward 10+10+20; AccumulateGrad 5+5
    assert c["adapter_elementwise"] == 30 + 15 + 15 + 10 + 10 + 20 + 5 + 5
    assert c["adapter_optimizer"] == 150  # measured optimizer phase, lora - frozen
    # forward path wall time (300 - 100 base) minus its ops (30+20+20+15+15) = 100; backward gaps
    # before adapter nodes: Add 0 (first), Mul 5, MmB(lora_B) 5, MmB(lora_A) 10, Dropout 5,
    # AccumulateGrad 20 and 5
    assert c["dispatch_overhead"] == 100 + 5 + 5 + 10 + 5 + 20 + 5
    assert "other_ops_delta" not in c  # no frozen trace given
    assert out["overhead_s"] == pytest.approx(400e-6)
    assert out["residual_s"] == pytest.approx(400e-6 - sum(out["components"].values()))
    assert out["phase_overhead_s"]["forward"] == pytest.approx(100e-6)
    # leaf adapter ops: forward dropout, mm, mm, mul, add; backward Add, Mul, the mm nested in
    # lora_B's node, lora_A's node, Dropout (AccumulateGrad is not on the adapter path)
    assert out["adapter_launches"] == 10


def test_profiler_cost_is_removed_per_event(tmp_path):
    lora = load_trace(str(write_trace(tmp_path, lora_step_events())))
    # forward window 0..400: 6 ops (3 mm, dropout, mul, add) and 6 lp/ scopes inside it
    fwd_events = 6 + 6
    out = attribute(lora, None, facts(1000e-6, (400 - fwd_events) * 1e-6, 400e-6, 0.0),
                    facts(0.0, 0.0, 0.0, 0.0))
    assert out["profiler_cost_us_per_event"]["lora"]["forward"] == pytest.approx(1.0)
    assert out["profiler_cost_us_per_event"]["lora"]["backward"] == 0.0
    # lora_A and lora_B forward mm: 40 us traced, 2 ops -> 38 us
    assert out["components"]["adapter_matmul_fwd"] == pytest.approx(38e-6)


def test_other_ops_delta_compares_the_frozen_trace(tmp_path):
    events = lora_step_events()
    lora = load_trace(str(write_trace(tmp_path, events, "lora.json")))
    # The frozen step: the same base op, 10 us faster, and no adapter path.
    frozen_events = [e for e in events if not (e["name"].startswith(L + "#") and e["name"] != L + "#base")]
    frozen_events = [dict(e, dur=70) if e["name"] == "aten::mm" and e["ts"] == 20 else e for e in frozen_events
                     if not (e["cat"] == "cpu_op" and e["ts"] in (125, 175, 215, 255, 275, 410, 425, 440, 445, 500, 565, 700, 710))]
    frozen = load_trace(str(write_trace(tmp_path, frozen_events, "frozen.json")))
    f = facts(1000e-6, 400e-6, 400e-6, 0.0)
    out = attribute(lora, frozen, f, f)
    assert out["components"]["other_ops_delta"] == pytest.approx(10e-6)


def test_matmul_intensity_from_dims():
    flops, intensity = matmul_intensity([[64, 32], [32, 4]], 4)
    assert flops == 2 * 64 * 32 * 4
    assert intensity == pytest.approx(flops / (4 * (64 * 32 + 32 * 4 + 64 * 4)))
    flops, _ = matmul_intensity([[32], [64, 32], [32, 32]], 2)  # addmm(bias, x, w)
    assert flops == 2 * 64 * 32 * 32
    assert matmul_intensity([[3]], 4) is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    from lora_profiler.capture.run import CaptureOptions, ProfileSchedule, capture
    from lora_profiler.workload.presets import get_preset
    from lora_profiler.workload.spec import LoraOptions, build_preset_workload

    out = tmp_path_factory.mktemp("run")
    wl = build_preset_workload(get_preset("tiny"), torch.device("cpu"), LoraOptions(dropout=0.1))
    facts = capture(wl, CaptureOptions(warmup_steps=1, steps=3, profile=ProfileSchedule(0, 1, 2)),
                    out, progress=False)
    traces = {m: load_trace([str(out / f) for f in e["trace_files"]]) for m, e in facts["modes"].items()}
    return facts, traces


def test_real_run_attribution(tiny_run):
    facts, traces = tiny_run
    att = lora_attribution(facts, traces)
    n_adapters = facts["adapters"]["count"]
    assert set(att["components"]) == {"adapter_matmul_fwd", "adapter_matmul_bwd", "adapter_elementwise",
                                      "dispatch_overhead", "adapter_optimizer", "other_ops_delta"}
    assert all(v >= 0 for k, v in att["components"].items() if k not in ("other_ops_delta", "adapter_optimizer"))
    t = {m: facts["modes"][m]["step_time_s"]["median"] for m in ("lora", "frozen")}
    assert att["overhead_s"] == pytest.approx(t["lora"] - t["frozen"])
    assert att["residual_s"] == pytest.approx(att["overhead_s"] - sum(att["components"].values()))
    # every adapter runs exactly one lora_A and one lora_B matmul per forward
    roles = assign_roles(traces["lora"])
    mm = np.isin(traces["lora"].ops.name, [i for i, n in enumerate(traces["lora"].names) if n == "aten::mm"])
    fwd_adapter_mm = mm & roles.role_mask(("lora_A", "lora_B")) & (roles.op_phase == 0) & (traces["lora"].ops.step >= 0)
    assert fwd_adapter_mm.sum() == 2 * n_adapters * len(traces["lora"].steps.dur_us)  # per recorded step
    assert len(roles.layers) == n_adapters
    sm = att["small_matmuls"]
    assert len(sm["adapter_us"]) >= 2 * n_adapters and sm["unit"] == "op"
    assert sm["adapter_intensity"] < sm["base_intensity"]  # rank-8 matmuls do less work per byte
    lines = {e["phase"] for e in att["timeline"]["events"]}
    assert lines == {"forward", "backward"}
    assert {e["role"] for e in att["timeline"]["events"]} >= {"base", "adapter"}
    assert att["extra_saved_activation_bytes"] == (facts["modes"]["lora"]["saved_activations"]["total_bytes"]
                                                   - facts["modes"]["frozen"]["saved_activations"]["total_bytes"])
    peaks = att["peak_memory_bytes"]
    for m in ("full", "lora", "frozen"):  # CPU: the accounted bytes
        mem, saved = facts["modes"][m]["memory"], facts["modes"][m]["saved_activations"]["total_bytes"]
        assert peaks[m] == mem["param_bytes"] + mem["grad_bytes"] + mem["optimizer_state_bytes"] + saved
    assert len(att["serial_path"]["layers"]) == n_adapters
    assert att["vs_full"]["saved"]["optimizer_s"] > 0


def test_no_attribution_without_lora_trace(tiny_run):
    facts, traces = tiny_run
    assert lora_attribution(facts, {m: t for m, t in traces.items() if m != "lora"}) is None


def gpu_step_events():
    """One CUDA step: base mm, lora_A mm, lora_B mm in the forward, lora_A's backward; each op
    launches one kernel on stream 7 (times in us). The GPU idles 5 us before lora_A's kernel
    and 35 us before lora_B's: it waits for the CPU to launch them."""
    def launch(ts, corr):
        return {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 4,
                "pid": 1, "tid": 1, "args": {"correlation": corr}}

    def kernel(name, ts, dur, corr):
        return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": 7,
                "args": {"correlation": corr, "device": 0, "stream": 7}}

    return [
        scope("ProfilerStep#1", 0, 1000),
        scope("lp/phase/forward", 0, 300),
        scope(L, 10, 200),
        scope(L + "#base", 10, 50), op("aten::mm", 12, 40, seq=1, dims=[[64, 32], [32, 32]]), launch(14, 1),
        scope(L + "#lora_A", 70, 40), op("aten::mm", 72, 30, seq=2, dims=[[64, 32], [32, 4]]), launch(74, 2),
        scope(L + "#lora_B", 120, 40), op("aten::mm", 122, 30, seq=3, dims=[[64, 4], [4, 32]]), launch(124, 3),
        kernel("sm90_xmma_gemm_bf16", 20, 60, 1),      # base: 20..80
        kernel("sm90_xmma_gemm_bf16", 85, 10, 2),      # lora_A: idle 5 before
        kernel("sm90_xmma_gemm_bf16", 130, 10, 3),     # lora_B: idle 35 before
        scope("lp/phase/backward", 300, 300),
        op("autograd::engine::evaluate_function: MmBackward0", 310, 40, seq=2), launch(315, 4),
        kernel("sm90_xmma_gemm_bf16", 330, 20, 4),     # lora_A backward
    ]


def test_gpu_components_from_kernels(tmp_path):
    lora = load_trace(str(write_trace(tmp_path, gpu_step_events())))
    assert lora.device == "cuda"
    out = attribute(lora, None, facts(1000e-6, 300e-6, 300e-6, 0.0), facts(0.0, 0.0, 0.0, 0.0))
    c = {k: round(v * 1e6, 6) for k, v in out["components"].items()}
    assert out["unit"] == "kernel"
    assert c["adapter_matmul_fwd"] == 10 + 10   # kernel time, not the ops' CPU time
    assert c["adapter_matmul_bwd"] == 20
    # idle before each adapter kernel: lora_A 85-80=5, lora_B 130-95=35; the backward kernel's
    # wait follows a forward kernel (the loss, the engine), not a launch of the adapter path
    assert c["gpu_idle_in_adapter"] == 5 + 35
    assert out["adapter_launches"] == 3          # adapter kernels per step
