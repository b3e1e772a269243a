"""Dispatch overhead: the fixed CPU cost every op call pays, however small its work.

Method. An op's self time is dispatch (argument parsing, dispatcher, autograd bookkeeping,
profiler hooks) plus its own work. Ops that only rewrite tensor metadata — views such as
``aten::view``, ``aten::t``, ``aten::as_strided``, ``aten::expand`` — do no work on data, so
the self time of such a call with no child op is dispatch alone. The per-call cost ``c0`` is
the median self time of those calls (falling back to the 10th percentile of all leaf-op self
times when a trace has fewer than ``MIN_SAMPLES`` view calls). The estimated dispatch overhead
is then ``c0`` times the number of op calls, capped per op name at the name's own median self
time (a name cannot spend more on dispatch than it spends in total). This is a floor-style
estimate: it assumes every call pays the cheapest observed dispatch, and it includes the
profiler's own per-op cost, which is part of what a profiled run measures.

``tiny`` ops are calls shorter than ``tiny_us`` in total (children included): for them the
fixed cost dominates, and their summed self time is reported as a second, upper-style figure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..events import Trace
from ..table import Column, Table, Tabular, fmt_count, fmt_us
from .groups import group

VIEW_OPS = frozenset({
    "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::t", "aten::transpose",
    "aten::permute", "aten::expand", "aten::reshape", "aten::slice", "aten::select",
    "aten::unsqueeze", "aten::squeeze", "aten::detach", "detach", "aten::alias",
    "aten::resolve_conj", "aten::resolve_neg", "aten::_reshape_alias", "aten::expand_as",
    "aten::view_as", "aten::split", "aten::chunk", "aten::narrow", "aten::unbind",
})
MIN_SAMPLES = 20
TINY_US = 10.0


@dataclass(frozen=True)
class DispatchRow:
    """One op name: calls, median self time and its estimated dispatch cost (us)."""

    name: str
    count: int
    self_median_us: float
    overhead_us: float


@dataclass(frozen=True, repr=False)
class DispatchOverhead(Tabular):
    """Per-call dispatch cost and the total it adds up to (us)."""

    per_call_us: float           # c0
    method: str                  # "view-ops median" or "leaf-ops p10"
    samples: int                 # calls c0 was estimated from
    op_calls: int
    overhead_us: float           # sum over names of min(c0, median self) * count
    cpu_self_us: float           # all op self time, for scale
    overhead_fraction: float     # overhead / cpu self time
    tiny_threshold_us: float
    tiny_calls: int
    tiny_self_us: float
    by_name: List[DispatchRow]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> Table:
        """The op names whose calls cost the most dispatch time, under a one-line estimate."""
        title = (f"dispatch overhead: {self.per_call_us:.2f} us per op call ({self.method}, "
                 f"{self.samples:,} samples) x {self.op_calls:,} calls = {fmt_us(self.overhead_us)}, "
                 f"{100 * self.overhead_fraction:.1f}% of op self time")
        return Table([Column("name", "op"), Column("count", fmt=fmt_count),
                      Column("self_median_us", "median self", fmt_us),
                      Column("overhead_us", "dispatch", fmt_us)],
                     [(r.name, r.count, r.self_median_us, r.overhead_us) for r in self.by_name], title=title,
                     notes=[f"{self.tiny_calls:,} ops under {self.tiny_threshold_us:g} us spend "
                            f"{fmt_us(self.tiny_self_us)}"])


def dispatch_overhead(trace: Trace, tiny_us: float = TINY_US,
                      top: Optional[int] = None) -> DispatchOverhead:
    """Estimate the fixed per-op CPU cost and its total (see module docstring)."""
    ops = trace.ops
    n = len(ops)
    leaf = np.ones(n, dtype=bool)
    leaf[ops.parent[ops.parent >= 0]] = False                          # (ops,) no child op
    view_ids = trace.name_ids(lambda s: s in VIEW_OPS)
    views = leaf & np.isin(ops.name, view_ids)
    if views.sum() >= MIN_SAMPLES:
        c0, method, samples = float(np.median(ops.self_us[views])), "view-ops median", views
    elif leaf.any():
        c0, method, samples = float(np.quantile(ops.self_us[leaf], 0.1)), "leaf-ops p10", leaf
    else:
        c0, method, samples = 0.0, "no ops", leaf
    g = group(ops.name, ops.self_us)
    med = _medians(ops.name, ops.self_us)
    rows = [DispatchRow(trace.name(int(nid)), int(c), med[int(nid)],
                        min(c0, med[int(nid)]) * int(c))
            for nid, c in zip(g.keys, g.count)]
    rows.sort(key=lambda r: -r.overhead_us)
    total = float(sum(r.overhead_us for r in rows))
    cpu_self = float(ops.self_us.sum())
    tiny = ops.dur_us < tiny_us
    return DispatchOverhead(per_call_us=c0, method=method, samples=int(samples.sum()),
                            op_calls=n, overhead_us=total, cpu_self_us=cpu_self,
                            overhead_fraction=total / cpu_self if cpu_self > 0 else 0.0,
                            tiny_threshold_us=tiny_us, tiny_calls=int(tiny.sum()),
                            tiny_self_us=float(ops.self_us[tiny].sum()),
                            by_name=rows if top is None else rows[:top])


def _medians(keys: np.ndarray, values: np.ndarray) -> Dict[int, float]:
    """Median of ``values`` per key (sort once, pick the middle of each run)."""
    if len(keys) == 0:
        return {}
    o = np.lexsort((values, keys))
    k, v = keys[o], values[o]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], k.size]
    lo, hi = (starts + ends - 1) // 2, (starts + ends) // 2                # middle pair
    med = 0.5 * (v[lo] + v[hi])
    return dict(zip(k[starts].tolist(), med.tolist()))
