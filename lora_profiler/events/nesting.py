"""Interval nesting on a thread, vectorised: parents, depths and innermost-enclosing lookups.

Intervals are grouped by an integer ``group`` (one per pid/tid/file thread). Within a group,
sorting by (start ascending, end descending) puts every interval after all intervals that
enclose it, so an interval's parent is the nearest earlier interval whose end is not before
its own end. That "nearest previous greater-or-equal" is found for all rows at once by pointer
jumping: each row keeps a candidate and jumps to the candidate's candidate while the candidate
ends too early; every jump skips only intervals that cannot enclose the row, and the number of
rounds grows with log(rows), not with rows.

An interval that overruns its parent (integer-microsecond rounding can make a child end up to
1 us after its parent) is attached one level higher; lookups by a point (``enclosing``) are
unaffected by such overruns.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def thread_groups(*keys: np.ndarray) -> Tuple[np.ndarray, int]:
    """Dense group ids (int64, 0..g-1) for rows with equal key tuples, and the number of groups.

    Rows come in event order, in long runs of one thread, so only the first row of each run
    is ranked (np.unique on run heads, not on every row).
    """
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    keys = [np.asarray(k) for k in keys]
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    heads = np.flatnonzero(change)                     # (runs,) first row of each run
    combined = np.zeros(heads.size, dtype=np.int64)
    for k in keys:                                    # mixed-radix code of the per-key ranks
        uniq, rank = np.unique(k[heads], return_inverse=True)
        combined = combined * len(uniq) + rank.reshape(-1)
        if len(uniq) > 1:                             # re-densify so the code cannot overflow
            _, combined = np.unique(combined, return_inverse=True)
            combined = combined.reshape(-1).astype(np.int64)
    uniq, inv = np.unique(combined, return_inverse=True)
    run = np.cumsum(change) - 1                        # (n,) run index of every row
    return inv.reshape(-1).astype(np.int64)[run], len(uniq)


def nest(group: np.ndarray, start: np.ndarray, end: np.ndarray):
    """Parent and depth of each interval among intervals of the same group.

    Args:
        group: (n,) int thread id per interval.
        start, end: (n,) float64 us.

    Returns:
        order: (n,) int64 row order by (group, start asc, end desc) — used by ``enclosing``.
        parent: (n,) int32 row index of the innermost enclosing interval, -1 at top level.
        depth: (n,) int16 nesting depth, 0 at top level.
    """
    n = len(start)
    parent = np.full(n, -1, dtype=np.int32)
    depth = np.zeros(n, dtype=np.int16)
    if n == 0:
        return np.zeros(0, dtype=np.int64), parent, depth
    order = np.lexsort((-end, start, group))
    g, e = group[order], end[order]
    cand = np.arange(-1, n - 1, dtype=np.int64)                  # (n,) sorted positions
    cand[1:][g[1:] != g[:-1]] = -1                               # no candidates across threads
    active = np.flatnonzero(cand >= 0)
    while active.size:
        c = cand[active]
        bad = active[e[c] < e[active]]                           # candidate ends too early
        cand[bad] = cand[cand[bad]]                              # jump to its candidate
        active = bad[cand[bad] >= 0]
    ok = cand >= 0
    parent[order[ok]] = order[cand[ok]]
    depth[:] = _depths(parent)
    return order, parent, depth


def _depths(parent: np.ndarray) -> np.ndarray:
    """(n,) number of ancestors of each row, by pointer doubling (log(depth) rounds, so a
    crafted chain of 10^5 nested intervals costs no more than a few passes).

    Raises:
        DepthError: deeper than an int16 depth column holds.
    """
    dist = (parent >= 0).astype(np.int64)                         # (n,) hops counted so far
    nxt = parent.astype(np.int64)                                 # (n,) row that many hops up
    live = np.flatnonzero(nxt >= 0)
    while live.size:
        up = nxt[live]
        dist[live] += dist[up]
        nxt[live] = nxt[up]
        live = live[nxt[live] >= 0]
    if dist.size and dist.max() > np.iinfo(np.int16).max:
        raise DepthError(int(dist.max()))
    return dist


class DepthError(ValueError):
    """Intervals on one thread nested deeper than the int16 depth column holds (32,767)."""


def enclosing(order: np.ndarray, parent: np.ndarray, group: np.ndarray, start: np.ndarray,
              end: np.ndarray, q_group: np.ndarray, q_time: np.ndarray) -> np.ndarray:
    """Innermost interval enclosing each query point on the same group (thread).

    Args:
        order, parent: from ``nest`` on (group, start, end).
        group, start, end: the intervals, as given to ``nest``.
        q_group: (m,) group id per query; q_time: (m,) float64 us.

    Returns:
        (m,) int32 interval row index, -1 where no interval of the group contains the point
        (``start <= t <= end``).
    """
    m = len(q_time)
    out = np.full(m, -1, dtype=np.int32)
    if m == 0 or len(order) == 0:
        return out
    g_sorted = group[order]
    s_sorted = start[order]
    # per group: the last interval (sorted position) starting at or before each query time
    n_groups = int(max(g_sorted[-1], np.max(q_group))) + 1
    g_lo = np.searchsorted(g_sorted, np.arange(n_groups + 1))          # (groups+1,) bounds
    q_order = np.argsort(q_group, kind="stable")
    q_lo = np.searchsorted(q_group[q_order], np.arange(n_groups + 1))
    pos = np.full(m, -1, dtype=np.int64)
    for g in np.flatnonzero((np.diff(q_lo) > 0) & (np.diff(g_lo) > 0)).tolist():
        qi = q_order[q_lo[g]:q_lo[g + 1]]
        lo, hi = g_lo[g], g_lo[g + 1]
        p = np.searchsorted(s_sorted[lo:hi], q_time[qi], side="right") - 1
        pos[qi] = np.where(p >= 0, p + lo, -1)
    valid = pos >= 0
    cand = np.full(m, -1, dtype=np.int64)
    cand[valid] = order[pos[valid]]
    live = np.flatnonzero(cand >= 0)
    while live.size:                                              # climb until one encloses t
        c = cand[live]
        bad = live[end[c] < q_time[live]]
        cand[bad] = parent[cand[bad]]
        live = bad[cand[bad] >= 0]
    out[:] = cand
    return out
