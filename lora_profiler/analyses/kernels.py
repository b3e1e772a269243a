"""GPU kernel breakdown: where GPU time goes, per kernel name and per kind.

Kinds (``events.KIND_NAMES``): gemm, elementwise, reduction, memcpy, memset, communication,
other — classified from the kernel name by ``events.schema.kernel_kind``. Memcpy and memset
activities are included with their own kinds; ``kernels`` in the figures below means GPU
kernels proper (category "kernel").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..events import CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET, KIND_NAMES, Trace
from ..table import Column, Table, Tabular, fmt_count, fmt_pct, fmt_us
from .groups import group


@dataclass(frozen=True)
class KernelRow:
    """One kernel name: how often it ran and for how long (us)."""

    name: str
    kind: str
    count: int
    total_us: float
    mean_us: float
    min_us: float
    max_us: float
    fraction: float          # of all GPU activity time


@dataclass(frozen=True)
class KindRow:
    """One kernel kind (us)."""

    kind: str
    count: int
    total_us: float
    fraction: float


@dataclass(frozen=True, repr=False)
class KernelBreakdown(Tabular):
    """GPU activity totals (us) and their split by kind and by name (by_name: top first)."""

    kernel_count: int          # category "kernel"
    kernel_total_us: float
    memcpy_count: int
    memcpy_total_us: float
    memset_count: int
    memset_total_us: float
    total_us: float            # kernels + memcpy + memset (summed durations, overlap counted)
    by_kind: List[KindRow]
    by_name: List[KernelRow]
    names_total: int           # distinct names before the top-k cut

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> Table:
        """The kernel names, largest GPU time first (``by_kind_table()`` for the kinds)."""
        title = (f"GPU kernels: {self.kernel_count:,} kernels {fmt_us(self.kernel_total_us)}, "
                 f"{self.memcpy_count:,} memcpy {fmt_us(self.memcpy_total_us)}, "
                 f"{self.memset_count:,} memset {fmt_us(self.memset_total_us)}")
        notes = [f"top {len(self.by_name)} of {self.names_total} names"] if len(self.by_name) < self.names_total else []
        return Table([Column("name", "kernel"), "kind", Column("count", fmt=fmt_count),
                      Column("total_us", "total", fmt_us), Column("mean_us", "mean", fmt_us),
                      Column("min_us", "min", fmt_us), Column("max_us", "max", fmt_us),
                      Column("fraction", "share", fmt_pct)],
                     [(r.name, r.kind, r.count, r.total_us, r.mean_us, r.min_us, r.max_us, r.fraction)
                      for r in self.by_name], title=title, notes=notes)

    def by_kind_table(self) -> Table:
        """GPU time per kernel kind (gemm, elementwise, ...)."""
        return Table(["kind", Column("count", fmt=fmt_count), Column("total_us", "total", fmt_us),
                      Column("fraction", "share", fmt_pct)],
                     [(r.kind, r.count, r.total_us, r.fraction) for r in self.by_kind],
                     title="GPU time by kernel kind")


def kernel_breakdown(trace: Trace, top: Optional[int] = None) -> KernelBreakdown:
    """Per kernel name and per kind: count and total/mean/min/max duration.

    Args:
        trace: a loaded trace (or a ``for_step`` view).
        top: keep the ``top`` names by total time (all when None).
    """
    k = trace.kernels
    dur = k.dur_us
    total = float(dur.sum())
    denom = total if total > 0 else 1.0
    cat_tot = {c: (int((k.cat == c).sum()), float(dur[k.cat == c].sum()))
               for c in (CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET)}
    kinds = group(k.kind, dur)
    by_kind = [KindRow(KIND_NAMES[int(kd)], int(c), float(t), float(t) / denom)
               for kd, c, t in zip(kinds.keys, kinds.count, kinds.total)]
    by_kind.sort(key=lambda r: -r.total_us)
    # group by (name, kind): a name has one kind, but keep the pair for memcpy/memset names
    key = k.name.astype(np.int64) * 8 + k.kind
    g = group(key, dur)
    order = np.argsort(-g.total, kind="stable")
    if top is not None:
        order = order[:top]
    rows = [KernelRow(name=trace.name(int(g.keys[i] // 8)), kind=KIND_NAMES[int(g.keys[i] % 8)],
                      count=int(g.count[i]), total_us=float(g.total[i]),
                      mean_us=float(g.mean[i]), min_us=float(g.min[i]), max_us=float(g.max[i]),
                      fraction=float(g.total[i]) / denom)
            for i in order.tolist()]
    return KernelBreakdown(kernel_count=cat_tot[CAT_KERNEL][0],
                           kernel_total_us=cat_tot[CAT_KERNEL][1],
                           memcpy_count=cat_tot[CAT_MEMCPY][0],
                           memcpy_total_us=cat_tot[CAT_MEMCPY][1],
                           memset_count=cat_tot[CAT_MEMSET][0],
                           memset_total_us=cat_tot[CAT_MEMSET][1],
                           total_us=total, by_kind=by_kind, by_name=rows,
                           names_total=int(g.keys.size))
