"""Attribute LoRA's overhead, T_lora - T_frozen, to its causes.

The frozen mode runs the same network on the same batch, backward through every layer, only
without the adapters: what the LoRA step adds over it is the adapter path, the adapters'
optimizer, and whatever the adapter path does to the rest of the step. Components (seconds per
step):

- ``adapter_matmul_fwd`` / ``adapter_matmul_bwd``: lora_A and lora_B ops in the forward, and the
  backward nodes their forward ops created (weight and input gradients). GPU traces: the GPU
  time of the kernels they launched.
- ``adapter_elementwise``: dropout, scale and add (forward and backward) and the accumulation of
  the adapters' gradients (AccumulateGrad). GPU: their kernels' time.
- ``adapter_optimizer``: measured, not traced: the optimizer and zero_grad phases of the timed
  LoRA steps minus the frozen steps' (AdamW over the adapters).
- ``dispatch_overhead`` (CPU traces): time inside the adapter path spent in no op — the Python
  module calls of dropout, lora_A, lora_B and the adapted layer — plus the autograd engine's gap
  before each adapter backward node.
- ``gpu_idle_in_adapter`` (GPU traces): GPU idle time right before adapter kernels: the GPU
  waiting for the CPU to launch the adapter path.
- ``other_ops_delta``: how much longer (negative: shorter) every op off the adapter path took
  in the LoRA step than in the frozen step — the adapter path's cache and allocator pressure on
  the base network, less the backward work the frozen floor does and LoRA skips (the input
  gradient of a first layer whose adapters need none).

Trace times include the profiler's own cost, which is close to fixed per recorded event. For
each mode and phase it is estimated as (traced phase time - measured phase time) / events in
the phase, and every CPU component is corrected by that cost times its events. GPU kernel
durations are not inflated and are used as recorded. ``residual_s`` = overhead_s -
sum(components) is always reported.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..events import Trace
from .lora_roles import ADAPTER_ROLES, MATMUL_ROLES, PHASES, ROLES, Roles, assign_roles

FWD, BWD = PHASES.index("forward"), PHASES.index("backward")
TRACED = ("forward", "backward")  # phases whose components come from the trace


def _n_steps(trace: Trace) -> int:
    """ProfilerStep windows (rows of the steps table: one per step and file)."""
    return len(trace.steps.dur_us)


def _per_step(values: np.ndarray, step: np.ndarray, n_steps: int) -> float:
    """Median over step windows of the sum of ``values`` in each (rows outside every step are
    dropped): one disturbed step of a profiled run does not move it."""
    if n_steps == 0:
        return float(values.sum())
    rows = step >= 0
    sums = np.bincount(step[rows], weights=values[rows], minlength=n_steps)[:n_steps]  # (steps,) us
    return float(np.median(sums))


def median_step_us(trace: Trace) -> Optional[float]:
    """Median ProfilerStep duration in us (None when the trace has no steps)."""
    return float(np.median(trace.steps.dur_us)) if len(trace.steps.dur_us) else None


def _accumulate_grad_ids(trace: Trace) -> list:
    return [i for i, n in enumerate(trace.names) if "AccumulateGrad" in n and n.startswith("autograd::engine")]


def _top_ancestor(parent: np.ndarray) -> np.ndarray:
    """(ops,) index of each op's outermost enclosing op (itself when top level)."""
    top = np.arange(len(parent))
    p = parent.copy()
    while (p >= 0).any():
        has = p >= 0
        top = np.where(has, p, top)
        p = np.where(has, parent[np.maximum(p, 0)], -1)
    return top


def accumulate_grad_mask(trace: Trace) -> np.ndarray:
    """(ops,) bool: AccumulateGrad nodes and every op nested in one."""
    ops = trace.ops
    roots = np.isin(ops.name, _accumulate_grad_ids(trace)) & ops.is_top
    return roots[_top_ancestor(ops.parent)] | roots


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


def phase_time_us(trace: Trace, roles: Roles, phase: str) -> float:
    """Median traced wall time per step of the ``lp/phase/<phase>`` scopes (us)."""
    mask = roles.scope_phase == PHASES.index(phase)
    return _per_step(trace.scopes.dur_us[mask], trace.scopes.step[mask], _n_steps(trace))


def phase_events(trace: Trace, roles: Roles, phase: str) -> float:
    """Recorded events (ops and lp/ scopes) per step inside a phase."""
    p = PHASES.index(phase)
    n = max(_n_steps(trace), 1)
    ops = float(((roles.op_phase == p) & (trace.ops.step >= 0)).sum())
    sc = trace.scopes
    start = sc.ts_us[roles.scope_phase == p]
    end = start + sc.dur_us[roles.scope_phase == p]
    inside = np.zeros(len(sc.ts_us), dtype=bool)
    for s, e in zip(start, end):
        inside |= (sc.ts_us > s) & (sc.ts_us < e)
    return (ops + float(inside.sum())) / n


def profiler_cost(trace: Trace, roles: Roles, phases_s: dict) -> dict:
    """Profiler cost per recorded event (us) in each traced phase of one mode.

    (traced phase time - measured phase time) / events in the phase, never below 0.

    Args:
        trace, roles: the mode's trace and its roles.
        phases_s: the mode's measured median phase times (facts ``phase_time_s``).
    """
    out = {}
    for phase in TRACED:
        events = phase_events(trace, roles, phase)
        extra = phase_time_us(trace, roles, phase) - phases_s.get(phase, 0.0) * 1e6
        out[phase] = max(extra, 0.0) / events if events else 0.0
    return out


def cpu_components(trace: Trace, roles: Roles) -> dict:
    """Adapter components of a CPU trace: name -> {phase: (traced us per step, events per step)}."""
    ops = trace.ops
    n = _n_steps(trace)
    adapter, matmul, root = roles.role_mask(ADAPTER_ROLES), roles.role_mask(MATMUL_ROLES), roles.op_root
    in_step = ops.step >= 0
    acc_all = accumulate_grad_mask(trace)
    acc_top = acc_all & ops.is_top

    def part(roots, members):
        return (_per_step(ops.dur_us[roots], ops.step[roots], n), float((members & in_step).sum()) / max(n, 1))

    out = {"adapter_matmul_fwd": {}, "adapter_matmul_bwd": {}, "adapter_elementwise": {}, "dispatch_overhead": {}}
    for phase, p in (("forward", FWD), ("backward", BWD)):
        in_phase = roles.op_phase == p
        key = "adapter_matmul_fwd" if p == FWD else "adapter_matmul_bwd"
        out[key][phase] = part(root & matmul & in_phase, matmul & in_phase)
        el = part(root & adapter & ~matmul & in_phase, adapter & ~matmul & in_phase)
        acc = part(acc_top & in_phase, acc_all & in_phase)
        out["adapter_elementwise"][phase] = (el[0] + acc[0], el[1] + acc[1])
    # Forward: adapter-path wall time (adapted layer scope minus its base) spent in no op.
    sc = trace.scopes
    path_us = _per_step(adapter_path_us(trace, roles), sc.step, n)
    fwd_ops = root & adapter & (roles.op_phase == FWD)
    ops_us = _per_step(ops.dur_us[fwd_ops], ops.step[fwd_ops], n)
    adapter_scopes = np.array([p is not None and p != "base" for p in roles.scope_part], dtype=bool)
    n_scopes = float((adapter_scopes & (sc.step >= 0)).sum()) / max(n, 1)
    out["dispatch_overhead"]["forward"] = (max(path_us - ops_us, 0.0), n_scopes)
    # Backward: the autograd engine's gap before each adapter (or AccumulateGrad) node.
    top = np.flatnonzero(ops.is_top & (roles.op_phase == BWD))
    top = top[np.lexsort((ops.ts_us[top], ops.tid[top]))]
    prev_end = np.r_[np.nan, (ops.ts_us + ops.dur_us)[top][:-1]]
    same = np.r_[False, ops.tid[top][1:] == ops.tid[top][:-1]]
    gap = np.clip(np.nan_to_num(np.where(same, ops.ts_us[top] - prev_end, 0.0)), 0.0, None)
    mine = adapter[top] | acc_top[top]
    out["dispatch_overhead"]["backward"] = (_per_step(gap[mine], ops.step[top][mine], n), 0.0)
    return out


def gap_before(trace: Trace, phase: Optional[np.ndarray] = None) -> np.ndarray:
    """(kernels,) us the kernel's stream sat idle right before it started.

    With ``phase`` (kernels,) given, a gap after a kernel of another phase counts 0: the wait
    between forward and backward is the loss and the engine, not the kernel's launch.
    """
    k = trace.kernels
    order = np.lexsort((k.ts_us, k.stream, k.device))
    end = (k.ts_us + k.dur_us)[order]
    same = np.r_[False, (k.device[order][1:] == k.device[order][:-1]) & (k.stream[order][1:] == k.stream[order][:-1])]
    if phase is not None:
        same &= np.r_[False, phase[order][1:] == phase[order][:-1]]
    prev_end = np.maximum.accumulate(np.where(same, np.r_[0.0, end[:-1]], -np.inf))
    gap = np.where(same, np.clip(k.ts_us[order] - prev_end, 0.0, None), 0.0)
    out = np.empty_like(gap)
    out[order] = gap
    return out


def _kernel_in_acc(trace: Trace) -> np.ndarray:
    k = trace.kernels
    acc = accumulate_grad_mask(trace)
    out = np.zeros(len(k.name), dtype=bool)
    has = k.op >= 0
    out[has] = acc[k.op[has]]
    return out


def gpu_components(trace: Trace, roles: Roles) -> dict:
    """Adapter components of a GPU trace from kernel time and idle gaps (0 events: GPU time is
    not inflated by the profiler): name -> {phase: (us per step, 0)}."""
    k = trace.kernels
    n = _n_steps(trace)
    adapter = roles.role_mask(ADAPTER_ROLES, kernels=True)
    matmul = roles.role_mask(MATMUL_ROLES, kernels=True)
    in_acc = _kernel_in_acc(trace)
    gap = gap_before(trace, roles.kernel_phase)
    out = {"adapter_matmul_fwd": {}, "adapter_matmul_bwd": {}, "adapter_elementwise": {}, "gpu_idle_in_adapter": {}}
    for phase, p in (("forward", FWD), ("backward", BWD)):
        in_phase = roles.kernel_phase == p

        def per_step(mask, values=k.dur_us):
            return (_per_step(values[mask], k.step[mask], n), 0.0)

        out["adapter_matmul_fwd" if p == FWD else "adapter_matmul_bwd"][phase] = per_step(matmul & in_phase)
        el, acc = per_step(adapter & ~matmul & in_phase), per_step(in_acc & in_phase)
        out["adapter_elementwise"][phase] = (el[0] + acc[0], 0.0)
        out["gpu_idle_in_adapter"][phase] = per_step((adapter | in_acc) & in_phase, gap)
    return out


def other_ops_us(trace: Trace, roles: Roles, cost: dict, gpu: bool) -> float:
    """Per-step time of everything off the adapter path in the forward and backward, corrected
    for the profiler's cost (CPU: root ops; GPU: kernels)."""
    n = _n_steps(trace)
    total = 0.0
    if gpu:
        k = trace.kernels
        off = ~roles.role_mask(ADAPTER_ROLES, kernels=True) & ~_kernel_in_acc(trace)
        for p in (FWD, BWD):
            m = off & (roles.kernel_phase == p)
            total += _per_step(k.dur_us[m], k.step[m], n)
        return total
    ops = trace.ops
    off = ~roles.role_mask(ADAPTER_ROLES) & ~accumulate_grad_mask(trace)
    for phase, p in (("forward", FWD), ("backward", BWD)):
        m = off & (roles.op_phase == p)
        events = float((m & (ops.step >= 0)).sum()) / max(n, 1)
        total += _per_step(ops.dur_us[m & roles.op_root], ops.step[m & roles.op_root], n) - cost[phase] * events
    return total


def attribute(lora: Trace, frozen: Optional[Trace], lora_facts: dict, frozen_facts: dict) -> dict:
    """Split the measured overhead T_lora - T_frozen into components.

    Args:
        lora, frozen: the two modes' traces (frozen may be None: no ``other_ops_delta``).
        lora_facts, frozen_facts: the modes' entries of facts.json (``step_time_s``,
            ``phase_time_s``), measured without the profiler.

    Returns:
        ``{"overhead_s", "components", "residual_s", "phase_overhead_s",
        "profiler_cost_us_per_event", "trace_overhead_s", "adapter_launches", "unit", "method"}``.
    """
    roles = assign_roles(lora)
    gpu = lora.device != "cpu" and len(lora.kernels.name) > 0
    lp, fp = lora_facts.get("phase_time_s") or {}, frozen_facts.get("phase_time_s") or {}
    cost = {"lora": profiler_cost(lora, roles, lp)}
    raw = gpu_components(lora, roles) if gpu else cpu_components(lora, roles)
    components = {}
    for name, by_phase in raw.items():
        sec = sum(max(us - cost["lora"][ph] * ev, 0.0) for ph, (us, ev) in by_phase.items()) * 1e-6
        components[name] = sec
    components["adapter_optimizer"] = ((lp.get("optimizer", 0.0) + lp.get("zero_grad", 0.0))
                                       - (fp.get("optimizer", 0.0) + fp.get("zero_grad", 0.0)))
    trace_overhead = None
    if frozen is not None:
        froles = assign_roles(frozen)
        cost["frozen"] = profiler_cost(frozen, froles, fp)
        components["other_ops_delta"] = (other_ops_us(lora, roles, cost["lora"], gpu)
                                         - other_ops_us(frozen, froles, cost["frozen"], gpu)) * 1e-6
        if median_step_us(lora) and median_step_us(frozen):
            trace_overhead = (median_step_us(lora) - median_step_us(frozen)) * 1e-6
    overhead = lora_facts["step_time_s"]["median"] - frozen_facts["step_time_s"]["median"]
    warnings = []
    for mode, trace, entry in (("lora", lora, lora_facts), ("frozen", frozen, frozen_facts)):
        ratio = disturbance(trace, entry)
        if ratio is not None and ratio > DISTURBED_RATIO:
            warnings.append(f"the {mode} profiled steps took {ratio:.1f}x its timed steps: the machine was "
                            "probably busy while profiling; the components are unreliable, run again")
    n = max(_n_steps(lora), 1)
    adapter_rows = roles.role_mask(ADAPTER_ROLES, kernels=gpu)
    rows_in_step = (lora.kernels.step if gpu else lora.ops.step) >= 0
    leaf = adapter_rows & rows_in_step & (True if gpu else roles.op_leaf)
    return {
        "overhead_s": overhead,
        "components": components,
        "residual_s": overhead - sum(components.values()),
        "phase_overhead_s": {ph: lp.get(ph, 0.0) - fp.get(ph, 0.0) for ph in PHASES},
        "profiler_cost_us_per_event": cost,
        "trace_overhead_s": trace_overhead,
        "adapter_launches": float(leaf.sum()) / n,
        "unit": "kernel" if gpu else "op",
        "method": "gpu kernels" if gpu else "cpu ops",
        "warnings": warnings,
    }


DISTURBED_RATIO = 1.5  # profiled / timed step time above which the profiled run is suspect


def disturbance(trace: Optional[Trace], entry: dict) -> Optional[float]:
    """Median profiled step time over the median timed step time (None when unknown)."""
    step = median_step_us(trace) if trace is not None else None
    timed = (entry.get("step_time_s") or {}).get("median")
    return step * 1e-6 / timed if step and timed else None
