"""Where the profiler's own cost lands in a trace, from a calibration (facts ``calibration``).

Every recorded event costs a measured time (``cost_us`` per kind, see capture/calibrate.py).
That time is spent inside whatever encloses the event: an op nested in another op makes its
parent look longer, an allocation inside an op does too, and a top-level op, a module scope or an
annotation adds to the non-op time of the scope around it. So:

- ``op_cost_us``: per op, the cost of the events whose innermost enclosing op it is (nested ops,
  allocations, backward-node bookkeeping) — subtract it from the op's self time;
- ``window_cost_us``: for windows (a scope, a gap), the cost of every event inside them;
- ``predicted_us``: per window, the whole cost — e.g. a phase, against its measured time.

Costs are per event kind: ``op_top`` / ``op_nested`` by the op's depth, ``memory`` for allocator
events, ``scope`` for our hooked module scopes, ``annotation`` for bare ``record_function``
ranges (our phase and scale/add scopes, others' annotations), ``backward_node`` added for each
autograd node.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..events import Trace
from ..events.schema import BACKWARD_PREFIX
from ..names import parse_scope

KINDS = ("op_top", "op_nested", "memory", "scope", "annotation", "backward_node")


def costs(calibration: Optional[dict]) -> dict:
    """kind -> us per event (all 0 without a calibration)."""
    got = (calibration or {}).get("cost_us") or {}
    return {k: float(got.get(k) or 0.0) for k in KINDS}


def _thread_key(pid: np.ndarray, tid: np.ndarray, file: np.ndarray) -> np.ndarray:
    return (file.astype(np.int64) * 1_000_003 + pid.astype(np.int64)) * 1_000_003 + tid.astype(np.int64)


class Points:
    """Values at points in time on threads, summed over windows with two binary searches."""

    def __init__(self, ts: np.ndarray, value: np.ndarray, key: np.ndarray):
        order = np.lexsort((ts, key))
        self._ts, self._key = ts[order], key[order]
        self._cum = np.r_[0.0, np.cumsum(value[order])]

    def window_sum(self, ts: np.ndarray, end: np.ndarray, pid: np.ndarray, tid: np.ndarray,
                   file: np.ndarray) -> np.ndarray:
        """(windows,) sum of the values at points strictly inside each window, on its thread."""
        key = _thread_key(pid, tid, file)
        out = np.zeros(len(ts))
        for k in np.unique(key).tolist():
            lo_k = np.searchsorted(self._key, k, side="left")
            hi_k = np.searchsorted(self._key, k, side="right")
            sel = np.flatnonzero(key == k)
            t = self._ts[lo_k:hi_k]
            a = lo_k + np.searchsorted(t, ts[sel], side="right")
            b = lo_k + np.searchsorted(t, end[sel], side="left")
            out[sel] = self._cum[np.maximum(b, a)] - self._cum[a]
        return out


def top_op_time(trace: Trace) -> Points:
    """Durations of top-level ops at their start times: ``window_sum`` gives the op time inside a
    scope window (scopes never open inside an op, so an op inside one is top-level)."""
    ops = trace.ops
    top = ops.parent < 0
    return Points(ops.ts_us[top], ops.dur_us[top], _thread_key(ops.pid[top], ops.tid[top], ops.file[top]))


class EventCosts:
    """The profiler cost of every recorded event of a trace, as points in time per thread."""

    def __init__(self, trace: Trace, calibration: Optional[dict]):
        c = costs(calibration)
        self.cost = c
        ops, mem, sc, an = trace.ops, trace.memory, trace.scopes, trace.annotations
        prefix = trace.scope_prefix
        is_node = np.array([n.startswith(BACKWARD_PREFIX) for n in trace.names], dtype=bool)
        op_cost = np.where(ops.parent < 0, c["op_top"], c["op_nested"])  # (ops,) us
        op_cost = op_cost + np.where(is_node[ops.name] if len(ops.name) else False, c["backward_node"], 0.0)
        hooked = np.array([_is_hooked(trace.names[i], prefix) for i in sc.name.tolist()], dtype=bool)
        scope_cost = np.where(hooked, c["scope"], c["annotation"])
        self.op_cost = op_cost
        # points: (ts, cost, thread) of every event; ops' own cost sits at their start
        ts = np.concatenate([ops.ts_us, mem.ts_us, sc.ts_us, an.ts_us, trace.steps.ts_us])
        cost = np.concatenate([op_cost, np.full(len(mem.ts_us), c["memory"]), scope_cost,
                               np.full(len(an.ts_us), c["annotation"]),
                               np.full(len(trace.steps.ts_us), c["annotation"])])
        key = np.concatenate([_thread_key(ops.pid, ops.tid, ops.file), _thread_key(mem.pid, mem.tid, mem.file),
                              _thread_key(sc.pid, sc.tid, sc.file), _thread_key(an.pid, an.tid, an.file),
                              _thread_key(trace.steps.pid, trace.steps.tid, trace.steps.file)])
        self._trace = trace
        self._mem_op: Optional[np.ndarray] = None
        self._op_cost_in: Optional[np.ndarray] = None
        self._all = Points(ts, cost, key)
        # "free" events: those whose cost lies outside every op (top-level ops' own enter/exit,
        # allocations outside ops, scopes, annotations) — it shows as non-op time
        free = np.concatenate([ops.parent < 0, self.memory_owner() < 0,
                               np.ones(len(sc.ts_us) + len(an.ts_us) + len(trace.steps.ts_us), dtype=bool)])
        self._free = Points(ts[free], cost[free], key[free])

    def window_cost_us(self, ts: np.ndarray, end: np.ndarray, pid: np.ndarray, tid: np.ndarray,
                       file: np.ndarray) -> np.ndarray:
        """(windows,) us: the cost of every event starting strictly inside each window, on the
        window's thread."""
        return self._all.window_sum(ts, end, pid, tid, file)

    def free_cost_us(self, ts: np.ndarray, end: np.ndarray, pid: np.ndarray, tid: np.ndarray,
                     file: np.ndarray) -> np.ndarray:
        """(windows,) us: the cost inside each window that lies outside every op (it inflates
        the window's non-op time, not any op's duration)."""
        return self._free.window_sum(ts, end, pid, tid, file)

    def op_cost_us(self) -> np.ndarray:
        """(ops,) us of profiler cost inside each op's self time: its direct child ops' costs and
        the allocator events whose innermost op it is."""
        if self._op_cost_in is None:
            ops = self._trace.ops
            out = np.zeros(len(ops.name))
            child = ops.parent >= 0
            np.add.at(out, ops.parent[child], self.op_cost[child])
            owner = self.memory_owner()
            has = owner >= 0
            np.add.at(out, owner[has], self.cost["memory"])
            self._op_cost_in = out
        return self._op_cost_in

    def process_cost_us(self, ts: np.ndarray, end: np.ndarray, pid: np.ndarray, file: np.ndarray) -> np.ndarray:
        """(windows,) us: the cost of every event inside each window on any thread of its
        process (a phase: on CUDA the backward runs on an autograd thread)."""
        t = self._trace
        out = np.zeros(len(ts))
        threads = {(int(f), int(p), int(d)) for f, p, d in zip(t.ops.file.tolist(), t.ops.pid.tolist(), t.ops.tid.tolist())}
        for f, p, d in threads:
            sel = (file == f) & (pid == p)
            if sel.any():
                m = int(sel.sum())
                out[sel] += self._all.window_sum(ts[sel], end[sel], np.full(m, p), np.full(m, d), np.full(m, f))
        return out

    def memory_owner(self) -> np.ndarray:
        """(memory events,) the innermost op enclosing each allocator event on its thread, -1."""
        if self._mem_op is None:
            self._mem_op = innermost_op(self._trace, self._trace.memory.ts_us, self._trace.memory.pid,
                                        self._trace.memory.tid, self._trace.memory.file)
        return self._mem_op


def _is_hooked(name: str, prefix: str) -> bool:
    """A module scope opened by the capture hooks (not a phase or scale/add annotation)."""
    parsed = parse_scope(name, prefix)
    return parsed is not None and (parsed.kind == "module"
                                   or (parsed.kind == "adapter" and parsed.part != "scale_add"))


def innermost_op(trace: Trace, ts: np.ndarray, pid: np.ndarray, tid: np.ndarray,
                 file: np.ndarray) -> np.ndarray:
    """(points,) the innermost op of the same thread whose window holds each timestamp, -1."""
    ops = trace.ops
    out = np.full(len(ts), -1, dtype=np.int64)
    if not len(ops.name) or not len(ts):
        return out
    okey = _thread_key(ops.pid, ops.tid, ops.file)
    pkey = _thread_key(pid, tid, file)
    end = ops.ts_us + ops.dur_us
    for k in np.unique(pkey).tolist():
        cand = np.flatnonzero(okey == k)
        if not cand.size:
            continue
        cand = cand[np.argsort(ops.ts_us[cand], kind="stable")]
        sel = np.flatnonzero(pkey == k)
        pos = np.searchsorted(ops.ts_us[cand], ts[sel], side="right") - 1
        cur = np.where(pos >= 0, cand[np.maximum(pos, 0)], -1)
        # climb from the latest-starting op to the first one still open at the time
        for _ in range(64):
            bad = (cur >= 0) & (end[np.maximum(cur, 0)] < ts[sel])
            if not bad.any():
                break
            cur = np.where(bad, ops.parent[np.maximum(cur, 0)], cur)
        out[sel] = cur
    return out
