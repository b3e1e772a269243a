"""The detail behind LoRA's overhead: small matmuls, the serial adapter path, memory, and what
LoRA saves against full fine-tuning. Pure functions of traces and facts (docs/FORMAT.md)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..events import Trace, parse_dims
from .devices import device_peak
from .lora_roles import ADAPTER_ROLES, MATMUL_LEAF_OPS, PHASES, ROLES, Roles
from .step_causes import gap_before

FWD, BWD = PHASES.index("forward"), PHASES.index("backward")


def _mm_ids(trace: Trace) -> list:
    return [i for i, n in enumerate(trace.names) if n in MATMUL_LEAF_OPS]


def _in_first_step(trace: Trace, step: np.ndarray) -> np.ndarray:
    """Rows in the first step window in time order (every row when the trace has no steps)."""
    if not len(trace.steps.dur_us):
        return np.ones(step.shape, dtype=bool)
    return step == int(np.argmin(trace.steps.ts_us))


def matmul_intensity(dims: list, elem_bytes: int) -> Optional[tuple[float, float]]:
    """(FLOPs, FLOP per byte moved) of one mm/addmm/bmm from its recorded input dims.

    mm [[M,K],[K,N]]; addmm [[N] or [M,N], [M,K], [K,N]]; bmm [[B,M,K],[B,K,N]]. Bytes are the
    two inputs and the output read or written once — the lower bound a kernel moves.
    """
    shapes = [d for d in dims if isinstance(d, list)]
    mats = [d for d in shapes if len(d) in (2, 3)]
    if len(mats) < 2:
        return None
    a, b = mats[-2], mats[-1]
    if len(a) == 3 and len(b) == 3:
        batch, (m, k), n = a[0], a[1:], b[2]
    elif len(a) == 2 and len(b) == 2:
        batch, (m, k), n = 1, a, b[1]
    else:
        return None
    flops = 2.0 * batch * m * k * n
    moved = elem_bytes * batch * (m * k + k * n + m * n)
    return (flops, flops / moved) if moved else None


def small_matmuls(trace: Trace, roles: Roles, launch_cost_us: Optional[float], elem_bytes: int = 4) -> dict:
    """Durations and arithmetic intensity of adapter vs base matmuls in one profiled step.

    On a GPU trace the durations are those of the GEMM kernels launched by the matmul ops;
    on a CPU trace, those of the leaf matmul ops (aten::mm/addmm/bmm). ``elem_bytes`` is the
    size of one element of the model's dtype (facts ``workload.dtype``), for the intensity.
    """
    ops = trace.ops
    is_mm = np.isin(ops.name, _mm_ids(trace))
    in_step = _in_first_step(trace, ops.step)
    adapter_op = is_mm & in_step & roles.role_mask(("lora_A", "lora_B"))
    base_op = is_mm & in_step & roles.role_mask(("base",))
    gpu = trace.device != "cpu" and len(trace.kernels.name) > 0
    if gpu:
        k = trace.kernels
        kop = np.maximum(k.op, 0)
        adapter_us = k.dur_us[(k.op >= 0) & adapter_op[kop]]
        base_us = k.dur_us[(k.op >= 0) & base_op[kop]]
    else:
        adapter_us, base_us = ops.dur_us[adapter_op], ops.dur_us[base_op]
    elem = elem_bytes  # bytes per element of the model's dtype

    def median_intensity(mask):
        vals = [v[1] for v in (matmul_intensity(parse_dims(trace, int(i)), elem)
                               for i in np.flatnonzero(mask)) if v]
        return (float(np.median(vals)) if vals else None), vals

    a_int, a_vals = median_intensity(adapter_op)
    b_int, _ = median_intensity(base_op)
    peak = device_peak(trace)
    ridge = peak["ridge_flop_per_byte"] if peak else None
    return {
        "unit": "kernel" if gpu else "op",
        "adapter_us": [float(x) for x in adapter_us],
        "base_us": [float(x) for x in base_us],
        "launch_cost_us": launch_cost_us,
        "adapter_intensity": a_int,
        "base_intensity": b_int,
        "ridge_flop_per_byte": ridge,
        "device_peak": peak,
        "below_ridge_fraction": (float(np.mean(np.asarray(a_vals) < ridge)) if ridge and a_vals else None),
    }


def launch_cost_us(trace: Trace) -> Optional[float]:
    """Median CPU cost of queuing one unit of work.

    GPU traces: the median duration of the launch calls (cudaLaunchKernel & co). CPU traces:
    the median duration of leaf ``aten::view``-like ops (no compute; dispatcher cost alone).
    """
    if len(trace.launches.name):
        return float(np.median(trace.launches.dur_us))
    cheap = [i for i, n in enumerate(trace.names) if n in ("aten::view", "aten::as_strided", "aten::t",
                                                           "aten::transpose", "aten::detach")]
    durs = trace.ops.dur_us[np.isin(trace.ops.name, cheap)]
    return float(np.median(durs)) if durs.size else None


def adapter_path_us(trace: Trace, roles: Roles) -> np.ndarray:
    """(scopes,) us of the forward adapter path in each adapted-layer scope: the layer's time
    minus its base — the ``#base`` scope, or (torchtune: no base module) the base matmul ops
    recorded directly in the layer's scope."""
    sc, ops = trace.scopes, trace.ops
    is_layer = np.array([p == "" for p in roles.scope_part], dtype=bool)
    out = np.where(is_layer, sc.dur_us, 0.0)
    for i, part in enumerate(roles.scope_part):
        if part == "base" and sc.parent[i] >= 0:
            out[sc.parent[i]] -= sc.dur_us[i]  # the base scope nests in its layer's scope
    in_layer = np.r_[is_layer, False][np.where(ops.scope >= 0, ops.scope, len(out))]
    base_here = roles.op_root & (roles.op_role == ROLES.index("base")) & in_layer & (roles.op_phase == FWD)
    out -= np.bincount(ops.scope[base_here], weights=ops.dur_us[base_here], minlength=len(out))[:len(out)]
    return out


def serial_path(trace: Trace, roles: Roles) -> dict:
    """Per adapted layer: time of its base layer and of its adapter path, forward and backward.

    Forward times are scope wall times (the adapter path runs after the base layer, on the same
    stream: it adds to the layer's latency); backward times are the durations of the autograd
    nodes each part's forward ops created. Per step, as traced (the profiler's cost included).
    """
    ops, sc = trace.ops, trace.scopes
    n = max(len(trace.steps.dur_us), 1)  # step windows (one per recorded step and file)
    layers = roles.layers
    out = []
    base_role, adapter_roles = ROLES.index("base"), [ROLES.index(r) for r in ADAPTER_ROLES]
    top_bwd = ops.is_top & (roles.op_phase == BWD) & (roles.op_layer >= 0)
    gpu = trace.device != "cpu" and len(trace.kernels.name) > 0
    idle = gap_before(trace, roles.kernel_phase) if gpu else None
    is_layer = np.array([p == "" for p in roles.scope_part], dtype=bool)
    path_us = adapter_path_us(trace, roles)  # (scopes,) adapter part of each layer scope
    for li, path in enumerate(layers):
        mine = (roles.scope_layer == li) & is_layer
        layer_us = float(sc.dur_us[mine].sum())
        base_us = layer_us - float(path_us[mine].sum())
        row = top_bwd & (roles.op_layer == li)
        bwd_base = float(ops.dur_us[row & (roles.op_role == base_role)].sum())
        bwd_adapter = float(ops.dur_us[row & np.isin(roles.op_role, adapter_roles)].sum())
        entry = {"path": path, "fwd_base_us": base_us / n, "fwd_adapter_us": (layer_us - base_us) / n,
                 "bwd_base_us": bwd_base / n, "bwd_adapter_us": bwd_adapter / n, "gpu_idle_us": 0.0}
        if idle is not None:
            k = (roles.kernel_layer == li) & np.isin(roles.kernel_role, adapter_roles)
            entry["gpu_idle_us"] = float(idle[k].sum()) / n
        out.append(entry)
    return {
        "layers": out,
        "fwd_adapter_s": sum(e["fwd_adapter_us"] for e in out) * 1e-6,
        "bwd_adapter_s": sum(e["bwd_adapter_us"] for e in out) * 1e-6,
        "fwd_base_s": sum(e["fwd_base_us"] for e in out) * 1e-6,
        "bwd_base_s": sum(e["bwd_base_us"] for e in out) * 1e-6,
    }


def timeline(trace: Trace, roles: Roles) -> Optional[dict]:
    """One adapted layer's forward and backward in the first profiled step, for figure g.

    Picks the first adapted layer of the second block when there is one (the first block's
    backward stops early when its input needs no gradient), else the first. Events are the
    outermost ops of each part (forward) and the autograd nodes (backward); on a GPU trace
    their kernels too. ``start_us`` is relative to the first event of the same phase.
    """
    if not roles.layers:
        return None
    def block(path):  # the first numeric component: the transformer block index
        return next((x for x in path.split(".") if x.isdigit()), None)

    first = block(roles.layers[0])
    later = [p for p in roles.layers if block(p) not in (None, first)]
    pick = later[0] if later else roles.layers[0]
    li = roles.layers.index(pick)
    ops = trace.ops
    in_step = _in_first_step(trace, ops.step)
    sel = (roles.op_layer == li) & in_step & ((roles.op_phase == FWD) & roles.op_root
                                             | (roles.op_phase == BWD) & ops.is_top)
    events = []
    for i in np.flatnonzero(sel):
        role = ROLES[roles.op_role[i]]
        events.append({"name": trace.names[ops.name[i]],
                       "role": "base" if role == "base" else ("adapter" if role in ADAPTER_ROLES else "other"),
                       "phase": PHASES[roles.op_phase[i]], "lane": "cpu",
                       "start_us": float(ops.ts_us[i]), "dur_us": float(ops.dur_us[i])})
    k = trace.kernels
    if trace.device != "cpu" and len(k.name):
        kop = np.maximum(k.op, 0)
        kin = (roles.kernel_layer == li) & (k.op >= 0) & in_step[kop]
        for i in np.flatnonzero(kin & ((roles.kernel_phase == FWD) | (roles.kernel_phase == BWD))):
            role = ROLES[roles.kernel_role[i]]
            events.append({"name": trace.names[k.name[i]],
                           "role": "base" if role == "base" else ("adapter" if role in ADAPTER_ROLES else "other"),
                           "phase": PHASES[roles.kernel_phase[i]], "lane": "gpu",
                           "start_us": float(k.ts_us[i]), "dur_us": float(k.dur_us[i])})
    for phase in ("forward", "backward"):
        group = [e for e in events if e["phase"] == phase]
        if group:
            t0 = min(e["start_us"] for e in group)
            for e in group:
                e["start_us"] -= t0
    events.sort(key=lambda e: (e["phase"] != "forward", e["lane"], e["start_us"]))
    return {"layer": pick, "events": events}


def trace_peak_bytes(trace: Trace) -> Optional[float]:
    """Median over the trace's steps of the step's allocation peak above what was allocated when
    it began (bytes): the running sum of the allocator events' +/- bytes, at its highest.

    Allocator totals written in CPU traces count blocks allocated before profiling began whose
    frees it never saw; the running sum within a step does not depend on them.
    """
    mem = trace.memory
    if not len(mem.bytes) or not len(trace.steps.dur_us):
        return None
    peaks = []
    for s in range(len(trace.steps.dur_us)):
        rows = np.flatnonzero(mem.step == s)
        if rows.size:
            rows = rows[np.argsort(mem.ts_us[rows], kind="stable")]
            peaks.append(float(np.cumsum(mem.bytes[rows]).max()))
    return float(np.median(peaks)) if peaks else None


def memory_peaks(facts: dict, step_peaks: Optional[dict] = None) -> dict:
    """Peak memory per mode (bytes) and where it comes from.

    CUDA: the allocator's peak over the profiled steps (``memory.peak_bytes``). CPU: what was
    resident when the step began (parameters and optimizer state) plus the step's allocation peak
    from the allocator events of the profiled steps (``step_peaks``: mode -> bytes). Without
    either: the accounted bytes (parameters + gradients + optimizer state + saved activations).
    """
    out = {}
    for mode, entry in facts["modes"].items():
        mem = entry.get("memory") or {}
        transient = (step_peaks or {}).get(mode)
        if mem.get("peak_bytes") is not None:
            out[mode] = mem["peak_bytes"]
        elif transient is not None and mem.get("param_bytes") is not None:
            out[mode] = mem["param_bytes"] + (mem.get("optimizer_state_bytes") or 0) + transient
        else:
            out[mode] = mem.get("accounted_bytes")
    return out
