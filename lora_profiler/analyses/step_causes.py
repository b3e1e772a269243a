"""The time of every cause in every recorded step of one mode's trace (no pairing yet).

For each step window (one per profiled round, see docs/FORMAT.md), phase and adapted layer:

- the time of each role's ops (``lora_roles``), counted exclusively — every op's self time goes
  to its own role — and corrected for the profiler's cost recorded inside it (the calibration);
- ``dispatch``: on CPU traces the adapter path's time outside any op (the Python of the adapted
  layer and of its dropout / lora_A / lora_B modules in the forward, the autograd engine's gap
  before each adapter node and its AccumulateGrad in the backward), corrected for the cost of the
  events recorded there (the ops' own enter/exit, the hooks' scopes); on GPU traces the GPU's
  idle time right before adapter kernels;
- the backward nodes off the adapter path, keyed by what created them, so the floor's extra
  nodes (input gradients LoRA does not need) can be matched against another mode's.

GPU traces take kernel time per role instead of op time: kernel durations carry no profiler cost.

Every round's items (an op's self time, a window's non-op time, a kernel) are summed per cause,
phase, layer and dispatch part; the attribution combines the rounds (``attribution``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..events import Trace
from .lora_roles import ADAPTER_ROLES, PHASES, R, ROLES, Roles, top_ancestor
from .profiler_cost import EventCosts, top_op_time

FWD, BWD = PHASES.index("forward"), PHASES.index("backward")
TRACED = (FWD, BWD)
OTHER_ROLES = ("none", "module", "base")
# Causes a trace gives, in report order. "other" is every op off the adapter path.
TRACE_CAUSES = ADAPTER_ROLES + ("accumulate_grad", "engine", "weight_grad", "dispatch", "other")
C = {name: i for i, name in enumerate(TRACE_CAUSES)}
_ROLE_CAUSE = {R[r]: C[r] for r in ADAPTER_ROLES + ("accumulate_grad", "engine", "weight_grad")}
_ROLE_CAUSE.update({R[r]: C["other"] for r in OTHER_ROLES})
# (DoRA's module: its backward nodes' gaps; its forward dispatch counts in "layer")
DISPATCH_PARTS = ("layer", "dropout", "lora_A", "lora_B", "scale", "add", "adapter_other", "dora", "accumulate_grad")


@dataclass
class StepCauses:
    """Per step window of one trace (arrays indexed by step row, in time order).

    Attributes:
        gpu: the causes come from kernels (True) or CPU ops (False).
        steps: step rows of the trace, in time order.
        value_us: (steps, causes, 2) us per cause and phase (forward, backward).
        layer_us: (steps, layers, causes) us per adapted layer (both phases).
        dispatch_us: (steps, len(DISPATCH_PARTS)) us of dispatch per part of the adapter path.
        nodes: per step, {(node name, creator scope): [count, us]} of backward nodes off the
            adapter path (their ops' exclusive corrected time).
        events: (steps,) recorded events per step (ops + allocator events + scopes).
        layers: adapted layer paths.
    """

    gpu: bool
    steps: np.ndarray
    value_us: np.ndarray
    layer_us: np.ndarray
    dispatch_us: np.ndarray
    nodes: list
    events: np.ndarray
    layers: list


class _Items:
    """Timed items of a trace: (round, phase, cause, layer, dispatch part, kind, name, depth, ts,
    us) rows, gathered from several sources, then summed per round."""

    def __init__(self):
        self.cols: list[tuple] = []

    def add(self, pos, step, phase, cause, layer, part, kind, name, depth, ts, us) -> None:
        """Add rows (arrays of one length); rows without a step, a traced phase or a cause are
        dropped."""
        step = np.asarray(step)
        ok = (step >= 0) & np.isin(phase, TRACED) & (np.asarray(cause) >= 0)
        r = np.where(ok, pos[np.maximum(step, 0)], -1)
        ok &= r >= 0
        n = int(ok.sum())
        if not n:
            return
        full = lambda v: np.broadcast_to(np.asarray(v), ok.shape)[ok]  # noqa: E731
        self.cols.append((r[ok], (full(phase) == BWD).astype(np.int64), full(cause), full(layer),
                          full(part), np.full(n, kind), full(name), full(depth), full(ts), full(us)))

    def arrays(self):
        if not self.cols:
            z = np.zeros(0)
            return [z.astype(np.int64)] * 8 + [z, z]
        return [np.concatenate([c[i] for c in self.cols]) for i in range(10)]


def _sum_items(items: _Items, n_steps: int, n_layers: int):
    """Per-round sums: (value, layer, dispatch) arrays."""
    r, ph, cause, lay, part, kind, name, depth, ts, us = items.arrays()
    value = np.zeros((n_steps, len(TRACE_CAUSES), 2))
    layer = np.zeros((n_steps, n_layers, len(TRACE_CAUSES)))
    dispatch = np.zeros((n_steps, len(DISPATCH_PARTS)))
    np.add.at(value, (r, cause, ph), us)
    has = lay >= 0
    np.add.at(layer, (r[has], lay[has], cause[has]), us[has])
    hp = part >= 0
    np.add.at(dispatch, (r[hp], part[hp]), us[hp])
    return value, layer, dispatch


_OP, _WINDOW, _GAP, _KERNEL, _IDLE = range(5)  # item kinds


def step_causes(trace: Trace, roles: Roles, costs: EventCosts) -> StepCauses:
    """Every cause's time in every step of ``trace`` (see the module doc)."""
    steps = np.argsort(trace.steps.ts_us, kind="stable")
    gpu = trace.device != "cpu" and len(trace.kernels.name) > 0
    n_steps, n_layers = len(steps), len(roles.layers)
    pos = np.full(max(len(trace.steps.ts_us), 1), -1, dtype=np.int64)
    pos[steps] = np.arange(n_steps)
    items = _Items()
    if gpu:
        _gpu_values(trace, roles, pos, items)
    else:
        _cpu_values(trace, roles, costs, pos, items)
    value, layer, dispatch = _sum_items(items, n_steps, n_layers)
    nodes = _off_path_nodes(trace, roles, costs, pos, n_steps, gpu)
    events = np.bincount(pos[np.maximum(trace.ops.step, 0)][trace.ops.step >= 0], minlength=n_steps)[:n_steps] \
        + np.bincount(pos[np.maximum(trace.memory.step, 0)][trace.memory.step >= 0], minlength=n_steps)[:n_steps] \
        + np.bincount(pos[np.maximum(trace.scopes.step, 0)][trace.scopes.step >= 0], minlength=n_steps)[:n_steps]
    return StepCauses(gpu=gpu, steps=steps, value_us=value, layer_us=layer, dispatch_us=dispatch,
                      nodes=nodes, events=events.astype(np.float64), layers=list(roles.layers))


def _cause_of(role: np.ndarray) -> np.ndarray:
    """(rows,) cause index of each role (-1: no cause)."""
    table = np.full(len(ROLES), -1, dtype=np.int64)
    for r, c in _ROLE_CAUSE.items():
        table[r] = c
    return table[role]


def _cpu_values(trace, roles, costs, pos, items: _Items) -> None:
    ops = trace.ops
    self_us = ops.self_us - costs.op_cost_us()  # (ops,) exclusive time without the profiler's
    items.add(pos, ops.step, roles.op_phase, _cause_of(roles.op_role), roles.op_layer, -1, _OP, ops.name,
              ops.depth, ops.ts_us, self_us)
    fwd = _cpu_dispatch_forward(trace, roles, costs, pos, items)
    bwd = _cpu_dispatch_backward(trace, roles, costs, pos, items)
    _cpu_other_nonop(trace, roles, costs, pos, items, fwd + bwd)


def _cpu_other_nonop(trace, roles, costs, pos, items: _Items, dispatch: list) -> None:
    """The rest of each phase's time outside ops (the Python of the other modules, the engine's
    gaps before their nodes, the loss), less the profiler's cost there, as ``other``: with it,
    every traced microsecond of a phase belongs to a cause or to the profiler."""
    sc = trace.scopes
    rows = np.flatnonzero(np.isin(roles.scope_phase, TRACED) & (sc.step >= 0))
    if not rows.size:
        return
    ts, end, pid, tid, file = _scope_windows(trace, rows)
    nonop = sc.dur_us[rows] - top_op_time(trace).window_sum(ts, end, pid, tid, file) \
        - costs.free_cost_us(ts, end, pid, tid, file)
    # less what the adapter path's dispatch already holds: (step, phase) -> us
    held: dict = {}
    for step, phase, us in dispatch:
        for s_, p_, u in zip(step.tolist(), np.broadcast_to(phase, step.shape).tolist(), us.tolist()):
            held[(s_, p_)] = held.get((s_, p_), 0.0) + u
    phase = roles.scope_phase[rows]
    rest = nonop - np.array([held.get((int(s_), int(p_)), 0.0) for s_, p_ in zip(sc.step[rows], phase)])
    items.add(pos, sc.step[rows], phase, C["other"], -1, -1, _WINDOW, -2, 0, ts, rest)


def _scope_windows(trace: Trace, rows: np.ndarray):
    sc = trace.scopes
    return sc.ts_us[rows], sc.ts_us[rows] + sc.dur_us[rows], sc.pid[rows], sc.tid[rows], sc.file[rows]


def _cpu_dispatch_forward(trace, roles, costs, pos, items: _Items) -> list:
    """Adapter-path time outside ops in each adapted layer's forward scope (less its base): each
    part scope's own non-op time, and the rest (the adapted layer's own Python) as the layer's."""
    sc = trace.scopes
    part = roles.scope_part
    layer_rows = np.array([i for i, p in enumerate(part) if p == ""], dtype=np.int64)
    if not layer_rows.size:
        return []
    base_of = {int(sc.parent[i]): i for i, p in enumerate(part) if p == "base" and sc.parent[i] >= 0}
    ops_in = top_op_time(trace).window_sum

    def nonop(rows):  # (rows,) us of each scope window outside ops and the profiler's cost there
        ts, end, pid, tid, file = _scope_windows(trace, rows)
        return sc.dur_us[rows] - ops_in(ts, end, pid, tid, file) - costs.free_cost_us(ts, end, pid, tid, file)

    path = nonop(layer_rows)
    base = np.array([base_of.get(int(i), -1) for i in layer_rows], dtype=np.int64)
    has = base >= 0
    if has.any():
        path[has] -= nonop(base[has])
    part_rows = np.array([i for i, p in enumerate(part) if p in ("dropout", "lora_A", "lora_B")], dtype=np.int64)
    parts_us = nonop(part_rows) if part_rows.size else np.zeros(0)
    # the layer's own share: its path less its parts' (parts nest in their layer's scope)
    own = dict(zip(layer_rows.tolist(), path.tolist()))
    for i, u in zip(part_rows.tolist(), parts_us.tolist()):
        if sc.parent[i] in own:
            own[sc.parent[i]] -= u
    dc = C["dispatch"]
    items.add(pos, sc.step[layer_rows], FWD, dc, roles.scope_layer[layer_rows], DISPATCH_PARTS.index("layer"),
              _WINDOW, -1, 0, sc.ts_us[layer_rows], np.array([own[i] for i in layer_rows.tolist()]))
    if part_rows.size:
        pidx = np.array([DISPATCH_PARTS.index(part[i]) for i in part_rows], dtype=np.int64)
        items.add(pos, sc.step[part_rows], FWD, dc, roles.scope_layer[part_rows], pidx, _WINDOW, -1, 0,
                  sc.ts_us[part_rows], parts_us)
    return [(sc.step[layer_rows], FWD, path)]


def _cpu_dispatch_backward(trace, roles, costs, pos, items: _Items) -> list:
    """The engine's gap before each adapter node and its AccumulateGrad, per thread."""
    ops = trace.ops
    top = np.flatnonzero(ops.is_top & (roles.op_phase == BWD))
    if not top.size:
        return []
    top = top[np.lexsort((ops.ts_us[top], ops.tid[top], ops.pid[top], ops.file[top]))]
    end = ops.ts_us[top] + ops.dur_us[top]
    same = np.r_[False, (ops.tid[top][1:] == ops.tid[top][:-1]) & (ops.pid[top][1:] == ops.pid[top][:-1])
                 & (ops.file[top][1:] == ops.file[top][:-1]) & (ops.step[top][1:] == ops.step[top][:-1])]
    prev_end = np.r_[np.nan, end[:-1]]
    role = roles.op_role[top]
    mine = np.isin(role, [R[r] for r in ADAPTER_ROLES]) | ((role == R["accumulate_grad"]) & (roles.op_layer[top] >= 0))
    sel = same & mine
    rows = top[sel]
    gap = ops.ts_us[rows] - prev_end[sel]
    free = costs.free_cost_us(prev_end[sel], ops.ts_us[rows], ops.pid[rows], ops.tid[rows], ops.file[rows])
    gap = gap - free - costs.op_cost[rows]  # the node's own enter/exit lies in the gaps around it
    part = np.array([DISPATCH_PARTS.index(ROLES[r]) for r in role[sel]], dtype=np.int64)
    items.add(pos, ops.step[rows], BWD, C["dispatch"], roles.op_layer[rows], part, _GAP, ops.name[rows], 0,
              ops.ts_us[rows], gap)
    return [(ops.step[rows], BWD, gap)]


def gap_before(trace: Trace, phase: Optional[np.ndarray] = None) -> np.ndarray:
    """(kernels,) us the kernel's stream sat idle right before it started (0 for the first
    kernel of each device and stream).

    With ``phase`` (kernels,) given, a gap after a kernel of another phase counts 0: the wait
    between forward and backward is the loss and the engine, not the kernel's launch. Each
    (file, device, stream) group is its own timeline: the end of another stream's kernels never
    hides a gap.
    """
    k = trace.kernels
    out = np.zeros(len(k.name))
    if not len(k.name):
        return out
    key = (k.file.astype(np.int64) * 1_000_003 + k.device) * 1_000_003 + k.stream
    for g in np.unique(key).tolist():
        rows = np.flatnonzero(key == g)
        rows = rows[np.argsort(k.ts_us[rows], kind="stable")]
        end = np.maximum.accumulate(k.ts_us[rows] + k.dur_us[rows])  # (rows,) latest end so far
        gap = np.r_[0.0, np.clip(k.ts_us[rows][1:] - end[:-1], 0.0, None)]
        if phase is not None:
            gap[1:] = np.where(phase[rows][1:] == phase[rows][:-1], gap[1:], 0.0)
        out[rows] = gap
    return out


def _gpu_values(trace, roles, pos, items: _Items) -> None:
    k = trace.kernels
    items.add(pos, k.step, roles.kernel_phase, _cause_of(roles.kernel_role), roles.kernel_layer, -1, _KERNEL,
              k.name, 0, k.ts_us, k.dur_us)
    gap = gap_before(trace, roles.kernel_phase)
    mine = np.isin(roles.kernel_role, [R[r] for r in ADAPTER_ROLES]) | (
        (roles.kernel_role == R["accumulate_grad"]) & (roles.kernel_layer >= 0))
    part = np.array([DISPATCH_PARTS.index(ROLES[r]) if ROLES[r] in DISPATCH_PARTS else 0
                     for r in roles.kernel_role], dtype=np.int64)
    items.add(pos, np.where(mine, k.step, -1), roles.kernel_phase, C["dispatch"], roles.kernel_layer, part,
              _IDLE, k.name, 0, k.ts_us, gap)


def _off_path_nodes(trace, roles, costs, pos, n_steps, gpu) -> list:
    """Per step: {(node name, creator scope name): [count, us]} of top-level backward nodes whose
    role is off the adapter path, with their subtree's time in the off-path roles."""
    ops = trace.ops
    out = [dict() for _ in range(n_steps)]
    node = np.flatnonzero(ops.is_top & ops.is_backward & np.isin(roles.op_role, [R[r] for r in OTHER_ROLES]))
    if not node.size:
        return out
    other = np.isin(roles.op_role, [R[r] for r in OTHER_ROLES])
    if gpu:
        k = trace.kernels
        us_op = np.zeros(len(ops.name))
        has = (k.op >= 0) & other[np.maximum(k.op, 0)]
        np.add.at(us_op, k.op[has], k.dur_us[has])
    else:
        us_op = np.where(other, ops.self_us - costs.op_cost_us(), 0.0)
    top = top_ancestor(ops.parent)
    sub = np.zeros(len(ops.name))
    np.add.at(sub, top, us_op)  # (ops,) us of each top-level op's subtree, off-path roles only
    creator = np.where(ops.fwd_op[node] >= 0, ops.scope[np.maximum(ops.fwd_op[node], 0)], -1)
    names = trace.names
    for i, c in zip(node.tolist(), creator.tolist()):
        s = ops.step[i]
        if s < 0 or pos[s] < 0:
            continue
        key = (names[ops.name[i]], names[trace.scopes.name[c]] if c >= 0 else "")
        entry = out[pos[s]].setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += float(sub[i])
    return out
