"""Attribute LoRA's overhead, T_lora - T_frozen, to its causes.

The frozen mode runs the same network with the same batch and backward through every layer,
only without the adapters; so what the LoRA step adds over it is the adapter path and the
adapters' optimizer. Each component is measured in the LoRA trace (per step, mean over the
profiled steps):

- ``adapter_matmul_fwd`` / ``adapter_matmul_bwd``: lora_A and lora_B ops in the forward, and
  the backward ops their autograd nodes ran (weight and input gradients). On a GPU trace, the
  GPU time of the kernels they launched.
- ``adapter_elementwise``: dropout, scale and add (forward and backward) and the accumulation of
  the adapters' gradients (AccumulateGrad). GPU: their kernels' time.
- ``adapter_optimizer``: the optimizer and zero_grad phases (AdamW over the adapters; the frozen
  mode has none). Wall time on the main thread.
- ``dispatch_overhead`` (CPU traces): time inside the adapter path not spent in any op — the
  Python module calls and hooks of dropout, lora_A, lora_B and the adapted layer — plus the
  autograd engine's gaps before each adapter backward node.
- ``gpu_idle_in_adapter`` (GPU traces): GPU idle time right before adapter kernels, i.e. the GPU
  waiting for the CPU to launch the adapter path.

Trace times are inflated by the profiler, and the measured T_lora is not. The profiler's cost
is close to fixed per recorded event, so each component's traced time is corrected by
``profiler_cost_us_per_event`` x (events inside it), the cost estimated from the same mode's
traced and measured step times; the components are then in the same seconds as ``overhead_s``. ``residual_s`` = overhead_s - sum(components) is always reported; it
holds what the components miss (differences outside the adapter path, and noise).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..events import Trace
from .lora_roles import ADAPTER_ROLES, MATMUL_ROLES, PHASES, ROLES, Roles, assign_roles

FWD, BWD = PHASES.index("forward"), PHASES.index("backward")


def step_numbers(trace: Trace) -> list:
    """ProfilerStep numbers present in the trace ([] for a trace without step markers)."""
    return trace.step_numbers()


def _per_step(values: np.ndarray, step: np.ndarray, n_steps: int) -> float:
    """Mean over steps of the sum of ``values`` (rows outside every step are dropped)."""
    if n_steps == 0:
        return float(values.sum())
    return float(values[step >= 0].sum()) / n_steps


def mean_step_us(trace: Trace) -> Optional[float]:
    """Mean ProfilerStep duration in us (None when the trace has no steps)."""
    if len(trace.steps.dur_us) == 0:
        return None
    return float(np.mean(trace.steps.dur_us))


def _accumulate_grad_ids(trace: Trace) -> list:
    return [i for i, n in enumerate(trace.names) if "AccumulateGrad" in n and n.startswith("autograd::engine")]


def _adapter_scope_time_us(trace: Trace, roles: Roles) -> np.ndarray:
    """(scopes,) us of the forward adapter path in each adapted-layer scope (layer - base)."""
    sc = trace.scopes
    is_layer = np.array([p == "" for p in roles.scope_part], dtype=bool)
    out = np.where(is_layer, sc.dur_us, 0.0)
    for i, part in enumerate(roles.scope_part):
        if part == "base" and sc.parent[i] >= 0:
            out[sc.parent[i]] -= sc.dur_us[i]  # the base scope nests in its layer's scope
    return out


def _descendant_mask(parent: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """(ops,) bool: the ops in ``roots`` and every op nested inside one of them."""
    top = _top_ancestor(parent)
    return roots[top] | roots


def cpu_components(trace: Trace, roles: Roles) -> dict:
    """Components from CPU op durations (CPU-only traces).

    Returns:
        name -> (trace us per step, profiler events per step inside it).
    """
    ops = trace.ops
    n = max(len(step_numbers(trace)), 0)
    adapter = roles.role_mask(ADAPTER_ROLES)
    matmul = roles.role_mask(MATMUL_ROLES)
    root = roles.op_root
    in_step = ops.step >= 0
    fwd, bwd = roles.op_phase == FWD, roles.op_phase == BWD
    acc_top = np.isin(ops.name, _accumulate_grad_ids(trace)) & ops.is_top & bwd
    acc_all = _descendant_mask(ops.parent, acc_top)

    def part(roots, members):
        """(us of the roots, events = ops of the region) per step."""
        return (_per_step(ops.dur_us[roots], ops.step[roots], n),
                float((members & in_step).sum()) / max(n, 1))

    out = {
        "adapter_matmul_fwd": part(root & matmul & fwd, matmul & fwd),
        "adapter_matmul_bwd": part(root & matmul & bwd, matmul & bwd),
    }
    el_us, el_n = part(root & adapter & ~matmul & (fwd | bwd), adapter & ~matmul & (fwd | bwd))
    acc_us, acc_n = part(acc_top, acc_all)
    out["adapter_elementwise"] = (el_us + acc_us, el_n + acc_n)
    # Forward: adapter-path wall time (layer scope minus its base) not covered by adapter ops:
    # the Python module calls and hooks of dropout, lora_A, lora_B and the layer.
    sc = trace.scopes
    path_fwd_us = _per_step(_adapter_scope_time_us(trace, roles), sc.step, n)
    ops_fwd_us = _per_step(ops.dur_us[root & adapter & fwd], ops.step[root & adapter & fwd], n)
    adapter_scopes = np.array([p is not None and p != "base" for p in roles.scope_part], dtype=bool)
    n_scopes = float((adapter_scopes & (sc.step >= 0)).sum()) / max(n, 1)
    # Backward: the autograd engine's gap before each adapter (or AccumulateGrad) node.
    top_bwd = np.flatnonzero(ops.is_top & bwd)
    top_bwd = top_bwd[np.lexsort((ops.ts_us[top_bwd], ops.tid[top_bwd]))]
    prev_end = np.r_[np.nan, (ops.ts_us + ops.dur_us)[top_bwd][:-1]]
    same_thread = np.r_[False, ops.tid[top_bwd][1:] == ops.tid[top_bwd][:-1]]
    gap = np.clip(np.nan_to_num(np.where(same_thread, ops.ts_us[top_bwd] - prev_end, 0.0)), 0.0, None)
    is_adapter_node = adapter[top_bwd] | acc_top[top_bwd]
    gaps_us = _per_step(gap[is_adapter_node], ops.step[top_bwd][is_adapter_node], n)
    out["dispatch_overhead"] = (max(path_fwd_us - ops_fwd_us, 0.0) + gaps_us, n_scopes)
    return out


def gpu_components(trace: Trace, roles: Roles) -> dict:
    """Components from GPU kernel durations and idle gaps: name -> (trace us per step, 0)."""
    k = trace.kernels
    n = max(len(step_numbers(trace)), 0)
    adapter = roles.role_mask(ADAPTER_ROLES, kernels=True)
    matmul = roles.role_mask(MATMUL_ROLES, kernels=True)
    fwd, bwd = roles.kernel_phase == FWD, roles.kernel_phase == BWD
    acc_ops = np.isin(trace.ops.name, _accumulate_grad_ids(trace))
    # kernels launched under an AccumulateGrad node (its op or any op nested in it)
    top = _top_ancestor(trace.ops.parent)
    in_acc = np.zeros(len(k.name), dtype=bool)
    has = k.op >= 0
    in_acc[has] = acc_ops[top[k.op[has]]]

    def per_step(mask):
        return _per_step(k.dur_us[mask], k.step[mask], n)

    # idle gap before each kernel on its (device, stream), in time order
    order = np.lexsort((k.ts_us, k.stream, k.device))
    ts, end = k.ts_us[order], (k.ts_us + k.dur_us)[order]
    same = np.r_[False, (k.device[order][1:] == k.device[order][:-1]) & (k.stream[order][1:] == k.stream[order][:-1])]
    prev_end = np.maximum.accumulate(np.where(same, np.r_[0.0, end[:-1]], -np.inf))
    gap = np.where(same, np.clip(ts - prev_end, 0.0, None), 0.0)
    gap_by_kernel = np.empty_like(gap)
    gap_by_kernel[order] = gap
    adapter_any = (adapter | in_acc) & (fwd | bwd)
    # GPU time is not inflated by the CPU-side profiler: 0 profiler events to correct for.
    return {
        "adapter_matmul_fwd": (per_step(matmul & fwd), 0.0),
        "adapter_matmul_bwd": (per_step(matmul & bwd), 0.0),
        "adapter_elementwise": (per_step(adapter & ~matmul & (fwd | bwd)) + per_step(in_acc & bwd), 0.0),
        "gpu_idle_in_adapter": (_per_step(gap_by_kernel[adapter_any], k.step[adapter_any], n), 0.0),
    }


def _top_ancestor(parent: np.ndarray) -> np.ndarray:
    """(ops,) index of each op's outermost enclosing op (itself when top level)."""
    top = np.arange(len(parent))
    p = parent.copy()
    while True:
        has = p >= 0
        if not has.any():
            return top
        top = np.where(has, p, top)
        p = np.where(has, parent[np.maximum(p, 0)], -1)


def phase_time_us(trace: Trace, roles: Roles, phase: str) -> tuple[float, float]:
    """(mean us per step of the ``lp/phase/<phase>`` scopes, ops per step inside them)."""
    mask = roles.scope_phase == PHASES.index(phase)
    n = len(step_numbers(trace))
    ops = (roles.op_phase == PHASES.index(phase)) & (trace.ops.step >= 0)
    return (_per_step(trace.scopes.dur_us[mask], trace.scopes.step[mask], n),
            float(ops.sum()) / max(n, 1))


def profiler_cost_us(trace: Trace, t_measured_s: float) -> float:
    """Profiler cost per recorded event (us): (traced step - measured step) / events per step.

    The profiler adds a roughly fixed cost to every op and scope it records (more with
    record_shapes and profile_memory), so a region's traced time is its real time plus that
    cost times the events inside it. Estimated from the same mode's two step times.
    """
    step_us = mean_step_us(trace)
    n = len(step_numbers(trace))
    if not step_us or not n:
        return 0.0
    events = (float((trace.ops.step >= 0).sum()) + float((trace.scopes.step >= 0).sum())) / n
    return max(step_us - t_measured_s * 1e6, 0.0) / events if events else 0.0


def attribute(lora: Trace, frozen: Optional[Trace], t_lora_s: float, t_frozen_s: float) -> dict:
    """Split the measured overhead T_lora - T_frozen into components.

    Args:
        lora: the lora mode's trace; frozen: the frozen mode's trace (for the traced overhead;
            may be None).
        t_lora_s, t_frozen_s: measured median step times (seconds, no profiler).

    Returns:
        ``{"overhead_s", "components", "residual_s", "trace_overhead_s",
        "profiler_cost_us_per_event", "adapter_launches", "unit", "method"}``.
    """
    roles = assign_roles(lora)
    gpu = lora.device != "cpu" and len(lora.kernels.name) > 0
    raw = gpu_components(lora, roles) if gpu else cpu_components(lora, roles)
    opt, zero = phase_time_us(lora, roles, "optimizer"), phase_time_us(lora, roles, "zero_grad")
    raw["adapter_optimizer"] = (opt[0] + zero[0], opt[1] + zero[1])
    cost = profiler_cost_us(lora, t_lora_s)
    # Remove the profiler's own cost from each component: real = traced - cost x events.
    components = {name: max(us - cost * events, 0.0) * 1e-6 for name, (us, events) in raw.items()}
    overhead = t_lora_s - t_frozen_s
    trace_overhead = None
    if frozen is not None and mean_step_us(lora) and mean_step_us(frozen):
        trace_overhead = (mean_step_us(lora) - mean_step_us(frozen)) * 1e-6
    n = max(len(step_numbers(lora)), 1)
    adapter_rows = roles.role_mask(ADAPTER_ROLES, kernels=gpu)
    if gpu:
        launches = float(np.sum(adapter_rows & (lora.kernels.step >= 0))) / n
    else:
        launches = float(np.sum(roles.op_leaf & adapter_rows & (lora.ops.step >= 0))) / n
    return {
        "overhead_s": overhead,
        "components": components,
        "residual_s": overhead - sum(components.values()),
        "trace_overhead_s": trace_overhead,
        "profiler_cost_us_per_event": cost,
        "adapter_launches": launches,
        "unit": "kernel" if gpu else "op",
        "method": "gpu kernels" if gpu else "cpu ops",
    }
