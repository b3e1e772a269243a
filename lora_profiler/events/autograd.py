"""Backward op -> forward op, by autograd sequence number.

The profiler writes ``Sequence number`` on forward ops that go through autograd (the number of
the node they create, or of the next node when they create none) and on backward nodes
(``autograd::engine::evaluate_function: XxxBackward0`` and the ``XxxBackward0`` op inside it),
which also carry ``Fwd thread id`` > 0. The aten ops nested under a backward node carry neither
and inherit the node's link.

For one process, ``seq`` numbers are unique per forward thread and increase over time. Several
forward ops can record the same number (an op that peeked the counter without creating a node,
then the op that created it, and that op's enclosing ops). The creator is in the last chain:
take the latest-starting forward op with the number, then climb to its outermost ancestor that
records the same number — the "forward top-level op" of that node (e.g. ``aten::linear`` for
``TBackward0`` whose creator is the ``aten::t`` inside it). The torch-internal ``Fwd thread id``
cannot be mapped to an OS thread id from the trace, so matching is by (file, pid, seq); a trace
with several forward threads in one process can mismatch.
"""

from __future__ import annotations

import numpy as np

from .nesting import thread_groups


def backward_flags(is_node: np.ndarray, parent: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(n,) bool: the op is a backward node or nested (at any depth) under one."""
    flag = is_node.copy()
    _propagate_down(parent, depth, lambda rows, par: flag.__setitem__(rows, flag[rows] | flag[par]))
    return flag


def link_forward(file: np.ndarray, pid: np.ndarray, seq: np.ndarray, ts_us: np.ndarray,
                 parent: np.ndarray, depth: np.ndarray, is_backward: np.ndarray) -> np.ndarray:
    """The forward op of every backward op.

    Args:
        file, pid, seq, ts_us, parent, depth, is_backward: op columns (see tables.Ops).

    Returns:
        (n,) int32 fwd_op: for backward ops, the forward top-level op that created their node
        (inherited by ops nested under a node); -1 for forward ops and unmatched ones.
    """
    n = len(seq)
    fwd_op = np.full(n, -1, dtype=np.int32)
    has_seq = seq >= 0
    fwd = np.flatnonzero(has_seq & ~is_backward)
    bwd = np.flatnonzero(has_seq & is_backward)
    if fwd.size and bwd.size:
        grp, _ = thread_groups(np.concatenate([file[fwd], file[bwd]]),
                               np.concatenate([pid[fwd], pid[bwd]]))
        big = int(seq.max()) + 1
        kf = grp[:fwd.size] * big + seq[fwd]                      # (fwd,) process-seq key
        kb = grp[fwd.size:] * big + seq[bwd]                      # (bwd,)
        o = np.lexsort((ts_us[fwd], kf))                          # by key, then start time
        kf_sorted, f_sorted = kf[o], fwd[o]
        last = np.r_[kf_sorted[1:] != kf_sorted[:-1], True]       # latest start per key
        keys, creator = kf_sorted[last], f_sorted[last].astype(np.int64)
        # climb to the outermost ancestor recording the same seq (a forward op)
        live = np.arange(creator.size)
        while live.size:
            c = creator[live]
            p = parent[c]
            ok = p >= 0
            ok[ok] = (seq[p[ok]] == seq[c[ok]]) & ~is_backward[p[ok]]
            live = live[ok]
            creator[live] = p[ok]
        pos = np.searchsorted(keys, kb)
        pos = np.minimum(pos, keys.size - 1)
        hit = keys[pos] == kb
        fwd_op[bwd[hit]] = creator[pos[hit]]
    # nested backward ops without a link of their own inherit their parent's
    def inherit(rows, par):
        take = (fwd_op[rows] < 0) & is_backward[rows]
        fwd_op[rows[take]] = fwd_op[par[take]]
    _propagate_down(parent, depth, inherit)
    return fwd_op


def _propagate_down(parent: np.ndarray, depth: np.ndarray, update) -> None:
    """Call ``update(rows, parents)`` level by level from depth 1 down (parents first)."""
    if len(depth) == 0:
        return
    order = np.argsort(depth, kind="stable")
    d_sorted = depth[order]
    bounds = np.searchsorted(d_sorted, np.arange(1, int(d_sorted[-1]) + 2))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rows = order[lo:hi]
        if rows.size:
            update(rows, parent[rows])
