"""Per-op-name table: CPU time and the GPU time each op caused (op -> kernel attribution).

For each op name (e.g. ``aten::addmm``):
- ``count``: calls; ``cpu_total_us``: summed durations of its calls that are not nested in a
  call of the same name (so recursion is not counted twice); ``cpu_self_us``: summed self
  time (duration minus child ops), which adds up to the total CPU op time without overlap.
- ``device_self_us``: GPU time of the activities its calls launched directly (the launch's
  innermost enclosing op is this op); ``device_total_us``: GPU time launched by its calls or
  any op nested in them, each activity counted once per name. Summing ``device_self_us`` over
  names gives all linked GPU time exactly once.
On a CPU-only trace the device columns are 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..events import Trace
from ..table import Column, Table, Tabular, fmt_count, fmt_us
from .groups import group


@dataclass(frozen=True)
class OpRow:
    """One op name; times in us."""

    name: str
    count: int
    cpu_total_us: float
    cpu_self_us: float
    cpu_mean_us: float
    device_self_us: float
    device_total_us: float
    launches: int              # GPU activities launched directly


@dataclass(frozen=True, repr=False)
class OpTable(Tabular):
    """Op names sorted by the chosen key; totals are over all names (us)."""

    rows: List[OpRow]
    names_total: int
    op_count: int
    cpu_self_us: float         # all op self time = CPU time spent inside ops
    device_linked_us: float    # GPU time launched from inside an op
    device_unattributed_us: float  # GPU time of activities with no op (unlinked or outside ops)
    sort_by: str

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> Table:
        """Op names by ``sort_by``; the device columns only when the trace has GPU time."""
        gpu = self.device_linked_us > 0 or self.device_unattributed_us > 0
        cols = [Column("name", "op"), Column("count", fmt=fmt_count), Column("cpu_total_us", "CPU total", fmt_us),
                Column("cpu_self_us", "CPU self", fmt_us), Column("cpu_mean_us", "CPU mean", fmt_us)]
        if gpu:
            cols += [Column("device_self_us", "GPU self", fmt_us), Column("device_total_us", "GPU total", fmt_us)]
        rows = [(r.name, r.count, r.cpu_total_us, r.cpu_self_us, r.cpu_mean_us)
                + ((r.device_self_us, r.device_total_us) if gpu else ()) for r in self.rows]
        notes = [f"top {len(self.rows)} of {self.names_total} names"] if len(self.rows) < self.names_total else []
        return Table(cols, rows, title=f"ops by {self.sort_by}: {self.op_count:,} calls, CPU self "
                                       f"{fmt_us(self.cpu_self_us)}", notes=notes)


def op_table(trace: Trace, top: Optional[int] = None, sort_by: str = "auto") -> OpTable:
    """CPU and attributed GPU time per op name.

    Args:
        trace: a loaded trace (or a ``for_step`` view).
        top: keep the first ``top`` names (all when None).
        sort_by: a numeric OpRow field; "auto" sorts GPU traces by device_total_us and
            CPU-only ones by cpu_self_us.
    """
    ops, k = trace.ops, trace.kernels
    n = len(ops)
    outer = outermost_of_name(ops.name, ops.parent)                  # (ops,) bool
    dev_self = np.zeros(n)
    has = k.op >= 0
    np.add.at(dev_self, k.op[has], k.dur_us[has])                    # (ops,) us
    dev_total = device_total(ops.parent, k.op[has], k.dur_us[has], n)
    launches = np.bincount(k.op[has], minlength=n)
    name = ops.name
    g_count = group(name, np.ones(n))
    g_cpu = group(name[outer], ops.dur_us[outer])
    g_dev_tot = group(name[outer], dev_total[outer])
    cpu_tot = dict(zip(g_cpu.keys.tolist(), g_cpu.total.tolist()))
    dev_tot = dict(zip(g_dev_tot.keys.tolist(), g_dev_tot.total.tolist()))
    g_self, g_dself = group(name, ops.self_us), group(name, dev_self)
    g_launch = group(name, launches.astype(np.float64))
    rows = []
    for i, nid in enumerate(g_count.keys.tolist()):
        c = int(g_count.count[i])
        ct = cpu_tot.get(nid, 0.0)
        rows.append(OpRow(name=trace.name(nid), count=c, cpu_total_us=ct,
                          cpu_self_us=float(g_self.total[i]), cpu_mean_us=ct / max(c, 1),
                          device_self_us=float(g_dself.total[i]),
                          device_total_us=dev_tot.get(nid, 0.0),
                          launches=int(g_launch.total[i])))
    if sort_by == "auto":
        sort_by = "device_total_us" if len(k) else "cpu_self_us"
    rows.sort(key=lambda r: -getattr(r, sort_by))
    linked = float(k.dur_us[has].sum())
    return OpTable(rows=rows if top is None else rows[:top], names_total=len(rows), op_count=n,
                   cpu_self_us=float(ops.self_us.sum()), device_linked_us=linked,
                   device_unattributed_us=float(k.dur_us.sum()) - linked, sort_by=sort_by)


def outermost_of_name(name: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """(n,) bool: no ancestor of the op has the same name."""
    n = len(name)
    outer = np.ones(n, dtype=bool)
    rows = np.flatnonzero(parent >= 0)
    anc = parent[rows].astype(np.int64)
    while rows.size:
        same = name[anc] == name[rows]
        outer[rows[same]] = False
        keep = ~same
        rows, anc = rows[keep], parent[anc[keep]].astype(np.int64)
        live = anc >= 0
        rows, anc = rows[live], anc[live]
    return outer


def device_total(parent: np.ndarray, kernel_op: np.ndarray, kernel_us: np.ndarray,
                 n: int) -> np.ndarray:
    """(n,) us: GPU time launched by each op or any op nested in it."""
    total = np.zeros(n)
    cur = kernel_op.astype(np.int64)
    w = kernel_us
    while cur.size:
        np.add.at(total, cur, w)
        cur = parent[cur].astype(np.int64)
        live = cur >= 0
        cur, w = cur[live], w[live]
    return total
