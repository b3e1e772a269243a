"""Two traces side by side: headline figures, kernel by kernel and op by op.

Rows are matched by name (name ids differ between traces). ``delta = b - a`` in the unit of
the figure; rows are ordered by the size of the time delta. Totals are whole-trace sums, so
compare traces with the same number of profiled steps (``steps`` is shown for that check).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..events import Trace
from .groups import group
from .summary import headline


def compare_traces(a: Trace, b: Trace, top: Optional[int] = 20) -> Dict[str, Any]:
    """Compare ``a`` (baseline) with ``b``.

    Returns:
        {"headline": {key: {"a", "b", "delta"}}, "kernels": [...], "ops": [...]} where each
        kernel/op row holds count_a, count_b, count_delta, total_us_a, total_us_b, delta_us
        (kernels: GPU time; ops: CPU self time).
    """
    ha, hb = headline(a), headline(b)
    head = {}
    for key in ha:
        va, vb = ha[key], hb.get(key)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            head[key] = {"a": va, "b": vb, "delta": vb - va}
        else:
            head[key] = {"a": va, "b": vb}
    kernels = _side_by_side(_by_name(a, a.kernels.name, a.kernels.dur_us),
                            _by_name(b, b.kernels.name, b.kernels.dur_us), top)
    ops = _side_by_side(_by_name(a, a.ops.name, a.ops.self_us),
                        _by_name(b, b.ops.name, b.ops.self_us), top)
    return {"headline": head, "kernels": kernels, "ops": ops}


def _by_name(trace: Trace, names: np.ndarray, values: np.ndarray) -> Dict[str, tuple]:
    """name -> (count, total) of ``values`` grouped by name id."""
    g = group(names, values)
    return {trace.name(int(n)): (int(c), float(t)) for n, c, t in zip(g.keys, g.count, g.total)}


def _side_by_side(ga: Dict[str, tuple], gb: Dict[str, tuple], top: Optional[int]
                  ) -> List[Dict[str, Any]]:
    rows = []
    for name in set(ga) | set(gb):
        ca, ta = ga.get(name, (0, 0.0))
        cb, tb = gb.get(name, (0, 0.0))
        rows.append({"name": name, "count_a": ca, "count_b": cb, "count_delta": cb - ca,
                     "total_us_a": ta, "total_us_b": tb, "delta_us": tb - ta})
    rows.sort(key=lambda r: (-abs(r["delta_us"]), r["name"]))
    return rows if top is None else rows[:top]
