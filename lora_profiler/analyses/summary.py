"""Headline figures of a trace and the per-step view of the generic analyses.

``headline`` gives the flat figures a script checks first (dotted keys, us); ``per_step``
repeats the cheap analyses for every step window: one ``ProfilerStep#N`` of one file (the
profiled rounds of a run and the ranks of a distributed job are windows of their own, never
pooled). Rows are grouped by their ``step`` column with one sort per table, so the cost does not
grow with steps x rows.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..events import CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET, Trace
from .idle import union_gaps


def headline(trace: Trace) -> Dict[str, Any]:
    """Flat whole-trace figures, e.g. ``gpu.kernel.count``, ``launches.linked`` (times in us)."""
    k, L, ops = trace.kernels, trace.launches, trace.ops
    out: Dict[str, Any] = {"device": trace.device, "steps": len(trace.steps),
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
    """For each step window (file, then time order): its number, file, wall time, GPU totals,
    launches, idle time and op time (us).

    ``gpu.idle_us`` is the idle time inside the union of each device's activities of the step
    (see ``idle``), summed over devices; ``launches.launch_bound`` counts the step's kernels
    shorter than their launch call; ``launches.delay_median_us`` is the median of first GPU
    start - launch start over the step's linked launches.
    """
    st = trace.steps
    if len(st.number) == 0:
        return []
    k, L, ops = trace.kernels, trace.launches, trace.ops
    kg, lg, og = _groups(k.step), _groups(L.step), _groups(ops.step)
    rows = []
    for w in np.lexsort((st.ts_us, st.file)).tolist():
        ki, li, oi = kg.get(w, _NONE), lg.get(w, _NONE), og.get(w, _NONE)
        kern = ki[k.cat[ki] == CAT_KERNEL]
        linked_l = li[L.n_gpu[li] > 0]
        kk = kern[k.launch[kern] >= 0]
        bound = k.dur_us[kk] < L.dur_us[k.launch[kk]]
        delay = k.ts_us[L.kernel[linked_l]] - L.ts_us[linked_l]
        busy = idle = 0.0
        dev_key = k.file[ki].astype(np.int64) * 65536 + k.device[ki]
        for dk in np.unique(dev_key).tolist():
            on = ki[dev_key == dk]
            span = float((k.ts_us[on] + k.dur_us[on]).max() - k.ts_us[on].min())
            gap = float(union_gaps(k.ts_us[on], k.dur_us[on]).sum())
            busy, idle = busy + span - gap, idle + gap
        rows.append({
            "step": int(st.number[w]),
            "file": int(st.file[w]),
            "wall_us": float(st.dur_us[w]),
            "gpu.kernel.count": int(kern.size),
            "gpu.kernel.total_us": float(k.dur_us[kern].sum()),
            "gpu.memcpy.count": int((k.cat[ki] == CAT_MEMCPY).sum()),
            "gpu.memset.count": int((k.cat[ki] == CAT_MEMSET).sum()),
            "gpu.busy_us": busy,
            "gpu.idle_us": idle,
            "launches.count": int(li.size),
            "launches.linked": int(linked_l.size),
            "launches.cpu_us": float(L.dur_us[linked_l].sum()),
            "launches.launch_bound": int(bound.sum()),
            "launches.delay_median_us": float(np.median(delay)) if delay.size else None,
            "ops.count": int(oi.size),
            "ops.self_us": float(ops.self_us[oi].sum()),
            "ops.backward": int(np.count_nonzero(ops.is_backward[oi])),
        })
    return rows


_NONE = np.zeros(0, dtype=np.int64)


def _groups(key: np.ndarray) -> Dict[int, np.ndarray]:
    """Row indices per key value (one stable sort), skipping key -1."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if k.size else _NONE
    ends = np.r_[starts[1:], k.size]
    return {int(k[s]): order[s:e] for s, e in zip(starts.tolist(), ends.tolist())
            if k[s] != -1}
