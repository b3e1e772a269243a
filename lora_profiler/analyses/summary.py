"""Headline figures of a trace and the per-step view of the generic analyses.

``headline`` gives the flat figures a script checks first (dotted keys, us); ``per_step``
repeats the cheap analyses for every ``ProfilerStep#N`` window.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..events import CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET, Trace
from .idle import gpu_idle
from .launches import launch_stats


def headline(trace: Trace) -> Dict[str, Any]:
    """Flat whole-trace figures, e.g. ``gpu.kernel.count``, ``launches.linked`` (times in us)."""
    k, L, ops = trace.kernels, trace.launches, trace.ops
    out: Dict[str, Any] = {"device": trace.device, "steps": len(trace.step_numbers()),
                           "events": int(trace.counts.get("events", 0))}
    for label, cat in (("kernel", CAT_KERNEL), ("memcpy", CAT_MEMCPY), ("memset", CAT_MEMSET)):
        m = k.cat == cat
        out[f"gpu.{label}.count"] = int(m.sum())
        out[f"gpu.{label}.total_us"] = float(k.dur_us[m].sum())
    out["gpu.kernel.unlinked"] = int(((k.launch < 0) & (k.cat == CAT_KERNEL)).sum())
    out["launches.count"] = len(L)
    out["launches.linked"] = int((L.n_gpu > 0).sum())
    out["ops.count"] = len(ops)
    out["ops.self_us"] = float(ops.self_us.sum())
    out["scopes.count"] = len(trace.scopes)
    out["skipped"] = int(sum(trace.skipped.values()))
    return out


def per_step(trace: Trace) -> List[Dict[str, Any]]:
    """For each step number: wall time, GPU totals, launches, idle time and op time (us)."""
    rows = []
    for number in trace.step_numbers():
        s = trace.for_step(number)
        k = s.kernels
        idle = gpu_idle(s)
        ls = launch_stats(s)
        kern = k.cat == CAT_KERNEL
        rows.append({
            "step": number,
            "wall_us": float(s.steps.dur_us.max()) if len(s.steps) else 0.0,
            "gpu.kernel.count": int(kern.sum()),
            "gpu.kernel.total_us": float(k.dur_us[kern].sum()),
            "gpu.memcpy.count": int((k.cat == CAT_MEMCPY).sum()),
            "gpu.memset.count": int((k.cat == CAT_MEMSET).sum()),
            "gpu.busy_us": float(sum(d.busy_us for d in idle.devices)),
            "gpu.idle_us": float(sum(d.idle_us for d in idle.devices)),
            "launches.count": ls.count,
            "launches.linked": ls.linked,
            "launches.cpu_us": ls.cpu_us["total"],
            "launches.launch_bound": ls.launch_bound,
            "launches.delay_median_us": ls.delay_us["median"],
            "ops.count": len(s.ops),
            "ops.self_us": float(s.ops.self_us.sum()),
            "ops.backward": int(np.count_nonzero(s.ops.is_backward)),
        })
    return rows
