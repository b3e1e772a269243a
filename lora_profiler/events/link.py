"""Turn one file's raw columns into linked tables.

Links (all vectorised, see ``nesting``):
- GPU activity <-> launch call: equal ``correlation`` arg (written on both sides by every
  Kineto schema; flow events carry the same id and are not needed).
- launch -> op: innermost op on the same thread enclosing the launch's midpoint; failing
  that, the op with the launch's External id.
- op / launch / annotation -> scope: innermost scope (``lp/`` range) on the same thread
  enclosing its midpoint; a kernel takes its launching op's scope (else its launch's).
- rows -> step: the ``ProfilerStep#N`` CPU window of the same process containing the row's
  start; a kernel takes its launch's step, an unlinked one the step whose GPU window holds it.
- backward op -> forward op: ``autograd.link_forward``.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from . import autograd
from .builder import RawFile
from .nesting import enclosing, nest, thread_groups
from .schema import (BACKWARD_PREFIX, LAUNCH_APIS, STEP_PREFIX, kernel_kind)
from .tables import Annotations, Kernels, Launches, Memory, Ops, Scopes, Steps, gather

I32 = np.int32


def assemble(raw: RawFile, names: List[str], file_index: int, scope_prefix: str) -> Dict:
    """Linked tables of one file: {"ops": Ops, "kernels": Kernels, ...} plus "counts"."""
    c = raw.cols
    op, ann, rt, gpu = c["ops"], c["annotations"], c["runtime"], c["gpu"]
    is_step_name = _name_flags(names, lambda s: s.startswith(STEP_PREFIX))
    is_scope_name = _name_flags(names, lambda s: s.startswith(scope_prefix))
    # legacy traces write record_function ranges as ops: move them to the annotations
    move = is_step_name[op["name"]] | is_scope_name[op["name"]]
    if move.any():
        ann = {k: np.concatenate([ann[k], op[k][move] if k != "dims"
                                  else np.full(int(move.sum()), -1, dtype=ann[k].dtype)]) for k in ann}
        op = {k: v[~move] for k, v in op.items()}
    a_step = is_step_name[ann["name"]]
    a_scope = is_scope_name[ann["name"]] & ~a_step
    a_other = ~(a_step | a_scope)
    st = {k: v[a_step] for k, v in ann.items()}
    sc = {k: v[a_scope] for k, v in ann.items()}
    an = {k: v[a_other] for k, v in ann.items()}

    # one thread numbering for every CPU-side table
    parts = [op, rt, sc, an]
    grp, _ = thread_groups(np.concatenate([p["pid"] for p in parts]),
                           np.concatenate([p["tid"] for p in parts]))
    cuts = np.cumsum([len(p["pid"]) for p in parts])[:-1]
    g_op, g_rt, g_sc, g_an = np.split(grp, cuts)

    # ops: nesting, self time
    o_ts, o_dur = op["ts_us"], op["dur_us"]
    o_end = o_ts + o_dur
    o_order, o_parent, o_depth = nest(g_op, o_ts, o_end)
    has_p = o_parent >= 0
    child_us = np.bincount(o_parent[has_p], weights=o_dur[has_p], minlength=len(o_ts))
    self_us = np.maximum(o_dur - child_us, 0.0)                  # (ops,) us

    # scopes: nesting; ops/launches/annotations -> innermost scope
    s_ts, s_end = sc["ts_us"], sc["ts_us"] + sc["dur_us"]
    s_order, s_parent, s_depth = nest(g_sc, s_ts, s_end)

    def scope_of(g, ts, dur):
        return enclosing(s_order, s_parent, g_sc, s_ts, s_end, g, ts + 0.5 * dur)

    o_scope = scope_of(g_op, o_ts, o_dur)

    # launches: runtime calls that queue GPU work (by name, or by a correlated GPU activity)
    g_corr = gpu["corr"]
    r_corr = rt["corr"]
    r_is_launch = _name_flags(names, lambda s: s in LAUNCH_APIS)[rt["name"]]
    r_has_gpu = np.isin(r_corr, g_corr[g_corr >= 0]) & (r_corr >= 0)
    keep = r_is_launch | r_has_gpu
    n_runtime = len(r_corr)
    L = {k: v[keep] for k, v in rt.items()}
    g_L = g_rt[keep]
    l_ts, l_dur, l_corr = L["ts_us"], L["dur_us"], L["corr"]
    l_op = enclosing(o_order, o_parent, g_op, o_ts, o_end, g_L, l_ts + 0.5 * l_dur)
    _fallback_by_ext(l_op, L["ext"], op["ext"])
    l_scope = np.where(l_op >= 0, gather(o_scope, l_op), scope_of(g_L, l_ts, l_dur)).astype(I32)

    # GPU activity <-> launch by correlation id
    k_launch = _match(g_corr, l_corr)                             # (gpu,) launch row or -1
    n_gpu_rows = len(g_corr)
    linked = k_launch >= 0
    l_kernel = np.full(len(l_corr), -1, dtype=I32)
    first = np.flatnonzero(linked)[::-1]                          # reversed: first one wins
    l_kernel[k_launch[first]] = first
    l_ngpu = np.bincount(k_launch[linked], minlength=len(l_corr)).astype(I32)
    k_op = gather(l_op, k_launch).astype(I32)
    k_scope = gather(l_scope, k_launch).astype(I32)
    cats = gpu["cat"].astype(np.int8)
    kinds = _kinds(names, gpu["name"], cats)

    # steps: CPU windows per process; every table's rows by their start time
    so = np.argsort(st["ts_us"], kind="stable")
    st = {k: v[so] for k, v in st.items()}
    numbers = np.array([_step_number(names[i]) for i in st["name"].tolist()], dtype=np.int64)
    p_all = np.concatenate([st["pid"], op["pid"], L["pid"], sc["pid"], an["pid"],
                            c["memory"]["pid"]])
    pgrp, _ = thread_groups(p_all)
    cuts = np.cumsum([len(st["pid"]), len(op["pid"]), len(L["pid"]), len(sc["pid"]),
                      len(an["pid"])])
    pg_st, pg_op, pg_L, pg_sc, pg_an, pg_mem = np.split(pgrp, cuts)
    st_end = st["ts_us"] + st["dur_us"]
    st_order, st_parent, _ = nest(pg_st, st["ts_us"], st_end)

    def step_of(pg, ts):
        return enclosing(st_order, st_parent, pg_st, st["ts_us"], st_end, pg, ts)

    o_step = step_of(pg_op, o_ts)
    l_step = step_of(pg_L, l_ts)
    k_step = gather(l_step, k_launch).astype(I32)
    gpu_ts, gpu_end = _gpu_windows(c["gpu_annotations"], st["name"], gpu, k_step)
    _steps_by_gpu_window(k_step, linked, gpu["ts_us"], gpu_ts, gpu_end)

    n_op = len(o_ts)
    is_node = (_name_flags(names, lambda s: s.startswith(BACKWARD_PREFIX))[op["name"]]
               | (op["fwd_tid"] > 0))
    is_bw = autograd.backward_flags(is_node, o_parent, o_depth)
    file_col = lambda n: np.full(n, file_index, dtype=np.int16)  # noqa: E731
    fwd_op = autograd.link_forward(file_col(n_op), op["pid"], op["seq"], o_ts, o_parent,
                                   o_depth, is_bw)
    ops = Ops(name=op["name"].astype(I32), ts_us=o_ts, dur_us=o_dur, self_us=self_us,
              pid=op["pid"], tid=op["tid"], file=file_col(n_op), ext=op["ext"], seq=op["seq"],
              fwd_tid=op["fwd_tid"], dims=op["dims"].astype(I32), parent=o_parent,
              depth=o_depth, is_top=o_parent < 0, is_backward=is_bw, fwd_op=fwd_op,
              scope=o_scope, step=o_step)
    kernels = Kernels(name=gpu["name"].astype(I32), cat=cats, kind=kinds, ts_us=gpu["ts_us"],
                      dur_us=gpu["dur_us"], device=gpu["device"], stream=gpu["stream"],
                      corr=g_corr, ext=gpu["ext"], bytes=gpu["bytes"],
                      file=file_col(n_gpu_rows), launch=k_launch.astype(I32), op=k_op,
                      scope=k_scope, step=k_step)
    launches = Launches(name=L["name"].astype(I32), ts_us=l_ts, dur_us=l_dur, pid=L["pid"],
                        tid=L["tid"], file=file_col(len(l_ts)), corr=l_corr, ext=L["ext"],
                        op=l_op, kernel=l_kernel, n_gpu=l_ngpu, scope=l_scope, step=l_step)
    scopes = Scopes(name=sc["name"].astype(I32), ts_us=s_ts, dur_us=sc["dur_us"],
                    pid=sc["pid"], tid=sc["tid"], file=file_col(len(s_ts)), parent=s_parent,
                    depth=s_depth, step=step_of(pg_sc, s_ts))
    annotations = Annotations(name=an["name"].astype(I32), ts_us=an["ts_us"],
                              dur_us=an["dur_us"], pid=an["pid"], tid=an["tid"],
                              file=file_col(len(an["ts_us"])), step=step_of(pg_an, an["ts_us"]),
                              dims=an["dims"].astype(I32))
    steps = Steps(number=numbers, name=st["name"].astype(I32), ts_us=st["ts_us"],
                  dur_us=st["dur_us"], pid=st["pid"], tid=st["tid"],
                  file=file_col(len(numbers)), gpu_ts_us=gpu_ts, gpu_end_us=gpu_end)
    m = c["memory"]
    memory = Memory(ts_us=m["ts_us"], bytes=m["bytes"], total_allocated=m["total_allocated"],
                    total_reserved=m["total_reserved"],
                    device_type=m["device_type"].astype(np.int16),
                    device_id=m["device_id"].astype(np.int16), pid=m["pid"], tid=m["tid"],
                    file=file_col(len(m["ts_us"])), step=step_of(pg_mem, m["ts_us"]))
    counts = {"events": raw.n_events, "runtime_calls": n_runtime,
              "gpu_unlinked": int((~linked).sum()),
              "kernels_unlinked": int(((~linked) & (cats == 0)).sum())}
    return dict(ops=ops, kernels=kernels, launches=launches, scopes=scopes,
                annotations=annotations, steps=steps, memory=memory, counts=counts)


def _name_flags(names: List[str], pred) -> np.ndarray:
    """(len(names),) bool: ``pred`` on every interned name."""
    return np.fromiter((pred(s) for s in names), dtype=bool, count=len(names))


def _kinds(names: List[str], name_ids: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """(gpu,) int8 kernel kind, classifying each distinct (name, cat) once."""
    if len(name_ids) == 0:
        return np.zeros(0, dtype=np.int8)
    key = name_ids.astype(np.int64) * 4 + cats
    uniq, inv = np.unique(key, return_inverse=True)
    table = np.array([kernel_kind(names[k // 4], k % 4) for k in uniq.tolist()], dtype=np.int8)
    return table[inv.reshape(-1)]


def _match(keys: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """For each key, the first row of ``ref`` holding it (-1 if none; keys < 0 never match)."""
    out = np.full(len(keys), -1, dtype=np.int64)
    if len(ref) == 0 or len(keys) == 0:
        return out
    o = np.argsort(ref, kind="stable")
    r = ref[o]
    pos = np.minimum(np.searchsorted(r, keys), len(r) - 1)
    hit = (r[pos] == keys) & (keys >= 0)
    out[hit] = o[pos[hit]]
    return out


def _fallback_by_ext(l_op: np.ndarray, l_ext: np.ndarray, op_ext: np.ndarray) -> None:
    """Launches outside every op on their thread take the op with their External id."""
    miss = np.flatnonzero((l_op < 0) & (l_ext >= 0))
    if miss.size:
        hit = _match(l_ext[miss], op_ext)
        l_op[miss] = np.where(hit >= 0, hit, -1)


def _step_number(name: str) -> int:
    """N of 'ProfilerStep#N' (-1 when N is not a plain decimal number below 10**18)."""
    tail = name[len(STEP_PREFIX):]
    return int(tail) if tail.isascii() and tail.isdigit() and len(tail) <= 18 else -1


def _gpu_windows(gann: Dict[str, np.ndarray], step_names: np.ndarray, gpu: Dict,
                 k_step: np.ndarray):
    """Per step (time-ordered), the GPU window [ts, end] in us (NaN if none)."""
    n = len(step_names)
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    if n == 0:
        return lo, hi
    for i, sid in enumerate(step_names.tolist()):
        m = gann["name"] == sid
        if m.any():
            lo[i] = gann["ts_us"][m].min()
            hi[i] = (gann["ts_us"][m] + gann["dur_us"][m]).max()
    need = np.isnan(lo)
    has = k_step >= 0
    if need.any() and has.any():
        ts = gpu["ts_us"][has]
        end = ts + gpu["dur_us"][has]
        s = k_step[has]
        kl = np.full(n, np.inf)
        kh = np.full(n, -np.inf)
        np.minimum.at(kl, s, ts)
        np.maximum.at(kh, s, end)
        ok = need & np.isfinite(kl)
        lo[ok], hi[ok] = kl[ok], kh[ok]
    return lo, hi


def _steps_by_gpu_window(k_step: np.ndarray, linked: np.ndarray, ts: np.ndarray,
                         lo: np.ndarray, hi: np.ndarray) -> None:
    """Unlinked GPU activities take the step whose GPU window holds their start."""
    miss = np.flatnonzero(~linked)
    ok = np.flatnonzero(~np.isnan(lo))
    if miss.size == 0 or ok.size == 0:
        return
    o = ok[np.argsort(lo[ok], kind="stable")]
    pos = np.searchsorted(lo[o], ts[miss], side="right") - 1
    inside = pos >= 0
    inside[inside] = ts[miss][inside] <= hi[o][pos[inside]]
    k_step[miss[inside]] = o[pos[inside]]
