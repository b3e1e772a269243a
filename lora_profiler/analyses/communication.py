"""Collective communication in a trace: which collectives ran, their bytes, their time, and how
much of that time compute hid (torch-free).

Found by name, for any backend and any producer of the trace:

- the process group's records: annotations ``<backend>:<collective>`` (``nccl:all_reduce``,
  ``gloo:all_reduce``, ``nccl:_all_gather_base`` ...) carrying the tensors' ``Input Dims`` and
  ``Input type``, from which the bytes come. With Gloo they are the collective itself, run on
  Gloo's worker threads, so their intervals are its time; with NCCL they mark the enqueue;
- GPU kernels of kind ``communication`` (``ncclKernel_*``, ``ncclDevKernel_*``, RCCL): with
  them, the time is the kernels'.

Time is a union of intervals (two buckets in flight at once count once). *Overlap* is the part of
it during which compute ran: on the GPU any other kernel of the same file and device; on the CPU
any op of another thread of the process that is not itself a collective's. *Exposed* = time -
overlap: what the step waits for, unless something else hides it.
"""

from __future__ import annotations

import ast
import re
from typing import Optional

import numpy as np

from ..events import KIND_NAMES, Trace
from ..names import TRACED_PHASES

_RECORD = re.compile(r"^(nccl|gloo|mpi|ucc|xccl|rccl|hccl|c10d):_?([A-Za-z_]+)$")
_COMM_OP = re.compile(r"^(c10d::|c10d_functional::|_c10d_functional::|record_param_comms$|"
                      r"(nccl|gloo|mpi|ucc|xccl|rccl|hccl):)")
# element bytes of the ``Input type`` strings torch writes
_ELEM = {"float": 4, "double": 8, "c10::Half": 2, "Half": 2, "c10::BFloat16": 2, "BFloat16": 2,
         "int": 4, "long int": 8, "long": 8, "int64_t": 8, "short": 2, "signed char": 1,
         "unsigned char": 1, "int8_t": 1, "uint8_t": 1, "bool": 1, "c10::Float8_e4m3fn": 1,
         "c10::Float8_e5m2": 1, "c10::complex<float>": 8, "c10::complex<double>": 16}
_COMM_KIND = KIND_NAMES.index("communication")


def record_bytes(text: Optional[str]) -> Optional[int]:
    """Bytes of the tensors of one record, from its ``repr([Input Dims, Input type])`` (None when
    a dimension or type is unknown)."""
    if not text:
        return None
    try:
        dims, types = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        return None
    types = types or []
    total = 0
    for i, d in enumerate(dims or []):
        n = _numel(d)
        elem = _ELEM.get(types[i]) if i < len(types) and isinstance(types[i], str) else None
        if n is None or (elem is None and n):
            return None
        total += n * (elem or 0)
    return total


def _numel(d) -> Optional[int]:
    """Elements of one input's dims ([] is a scalar's: 0 moved; a list of lists a TensorList)."""
    if not isinstance(d, list):
        return None
    if not d:
        return 0
    if all(isinstance(x, list) for x in d):
        parts = [_numel(x) for x in d]
        return None if None in parts else int(sum(parts))
    if all(isinstance(x, int) for x in d):
        return int(np.prod(d, dtype=np.int64))
    return None


def _union(s: np.ndarray, e: np.ndarray):
    """Disjoint sorted intervals covering the same time as [s, e)."""
    if s.size == 0:
        return s, e
    order = np.argsort(s, kind="stable")
    s, e = s[order], np.maximum.accumulate(e[order])
    new = np.ones(s.size, dtype=bool)
    new[1:] = s[1:] > e[:-1]
    idx = np.flatnonzero(new)
    return s[idx], np.append(e[idx[1:] - 1], e[-1])


def _within(s: np.ndarray, e: np.ndarray, lo: float, hi: float) -> float:
    """us of disjoint intervals inside [lo, hi]."""
    return float(np.clip(np.minimum(e, hi) - np.maximum(s, lo), 0, None).sum()) if s.size else 0.0


class Collectives:
    """The collectives of one trace, as arrays (built once; ``summary`` and ``exposed_in``).

    Attributes:
        rec: annotation rows that are collective records; rec_name (collective), rec_bytes
            (-1 unknown).
        gpu: whether the time comes from communication kernels.
    """

    def __init__(self, trace: Trace):
        self.trace = trace
        an = trace.annotations
        names = trace.names
        uniq = np.unique(an.name)
        kind = {}
        for i in uniq.tolist():
            m = _RECORD.match(names[i])
            if m:
                kind[i] = (m.group(1), m.group(2))
        self.rec = np.flatnonzero(np.isin(an.name, list(kind))) if kind else np.zeros(0, dtype=np.int64)
        self.rec_backend = [kind[i][0] for i in an.name[self.rec].tolist()]
        self.rec_name = [kind[i][1] for i in an.name[self.rec].tolist()]
        dims = an.dims[self.rec]
        self.rec_bytes = np.array([-1 if d < 0 else (record_bytes(names[d]) if record_bytes(names[d]) is not None
                                                     else -1) for d in dims.tolist()], dtype=np.int64)
        k = trace.kernels
        self.kmask = k.kind == _COMM_KIND
        self.gpu = bool(self.kmask.any())
        op_names = np.unique(trace.ops.name)
        comm_ops = [i for i in op_names.tolist() if _COMM_OP.match(names[i])]
        self.op_comm = np.isin(trace.ops.name, comm_ops)

    @property
    def backend(self) -> Optional[str]:
        got = sorted(set(self.rec_backend) - {"c10d"})
        if got:
            return got[0]
        for m in self.trace.meta:
            b = (m.get("distributedInfo") or {}).get("backend")
            if b:
                return str(b)
        return "nccl" if self.gpu else None

    def intervals(self, file: Optional[int] = None):
        """(comm, compute) disjoint intervals of one file (None: all files, merged)."""
        tr = self.trace
        if self.gpu:
            k = tr.kernels
            sel = np.ones(len(k.ts_us), dtype=bool) if file is None else k.file == file
            c = sel & self.kmask
            o = sel & ~self.kmask & (k.cat == 0)
            return (_union(k.ts_us[c], k.ts_us[c] + k.dur_us[c]),
                    _union(k.ts_us[o], k.ts_us[o] + k.dur_us[o]))
        an, ops = tr.annotations, tr.ops
        r = self.rec if file is None else self.rec[an.file[self.rec] == file]
        threads = set(zip(an.pid[r].tolist(), an.tid[r].tolist()))
        sel = (ops.is_top if hasattr(ops, "is_top") else ops.depth == 0) & ~self.op_comm
        if file is not None:
            sel &= ops.file == file
        if threads:  # compute: ops of the threads that are not the collectives' own
            own = np.array([(p, t) in threads for p, t in zip(ops.pid.tolist(), ops.tid.tolist())], dtype=bool) \
                if len(ops.pid) else np.zeros(0, dtype=bool)
            sel &= ~own
        return (_union(an.ts_us[r], an.ts_us[r] + an.dur_us[r]),
                _union(ops.ts_us[sel], ops.ts_us[sel] + ops.dur_us[sel]))

    def exposed_in(self, lo: float, hi: float, file: int) -> float:
        """us of collective time in [lo, hi] of one file that no compute overlapped."""
        (cs, ce), (ps, pe) = self.intervals(file)
        if not cs.size:
            return 0.0
        us, ue = _union(np.concatenate([cs, ps]), np.concatenate([ce, pe]))
        return _within(us, ue, lo, hi) - _within(ps, pe, lo, hi)

    def summary(self, file: Optional[int] = None) -> dict:
        """Counts, bytes, time, overlap and per-step bytes of the collectives (one file, or all)."""
        tr = self.trace
        an = tr.annotations
        sel = np.ones(self.rec.size, dtype=bool) if file is None else an.file[self.rec] == file
        by: dict = {}
        for name, b, ok in zip(self.rec_name, self.rec_bytes.tolist(), sel.tolist()):
            if not ok:
                continue
            row = by.setdefault(name, {"count": 0, "bytes": 0, "bytes_known": True})
            row["count"] += 1
            if b >= 0:
                row["bytes"] += b
            else:
                row["bytes_known"] = False
        files = range(len(tr.files)) if file is None else [file]
        time_us = overlap_us = 0.0
        for f in files:
            (cs, ce), (ps, pe) = self.intervals(f)
            t = float((ce - cs).sum())
            us, ue = _union(np.concatenate([cs, ps]), np.concatenate([ce, pe]))
            both = t + float((pe - ps).sum()) - float((ue - us).sum())
            time_us += t
            overlap_us += both
        steps = []
        st = tr.steps
        rows = np.flatnonzero(np.ones(len(st.ts_us), dtype=bool) if file is None else st.file == file)
        rec_step = an.step[self.rec]
        for s in rows.tolist():
            mine = (rec_step == s) & sel
            b = self.rec_bytes[mine]
            names = [n for n, m in zip(self.rec_name, mine.tolist()) if m]
            per: dict = {}
            for n, x in zip(names, b.tolist()):
                per[n] = per.get(n, 0) + max(x, 0)
            lo, hi = float(st.ts_us[s]), float(st.ts_us[s] + st.dur_us[s])
            if self.gpu and np.isfinite(st.gpu_ts_us[s]) and st.gpu_end_us[s] > st.gpu_ts_us[s]:
                lo, hi = min(lo, float(st.gpu_ts_us[s])), max(hi, float(st.gpu_end_us[s]))
            (cs, ce), _ = self.intervals(int(st.file[s]))
            steps.append({"step": int(st.number[s]), "file": int(st.file[s]), "bytes": int(sum(per.values())),
                          "bytes_by_collective": per, "count": int(mine.sum()),
                          "time_us": _within(cs, ce, lo, hi),
                          "exposed_us": self.exposed_in(lo, hi, int(st.file[s]))})
        known = bool(by) and all(r["bytes_known"] for r in by.values())
        per_step = [s["bytes"] for s in steps] if known or not by else []
        return {
            "backend": self.backend,
            "source": "gpu kernels" if self.gpu else ("cpu records" if self.rec.size else None),
            "collectives": by,
            "count": int(sel.sum()),
            "bytes": int(sum(r["bytes"] for r in by.values())),
            "time_us": time_us,
            "overlap_us": overlap_us,
            "exposed_us": time_us - overlap_us,
            "overlap_fraction": overlap_us / time_us if time_us > 0 else None,
            "bytes_per_step": float(np.median(per_step)) if per_step else None,
            "time_per_step_us": float(np.median([s["time_us"] for s in steps])) if steps else None,
            "exposed_per_step_us": float(np.median([s["exposed_us"] for s in steps])) if steps else None,
            "per_step": steps,
        }


def exposed_by_phase(trace: Trace, scope_phase: np.ndarray, phases: tuple, step_pos: np.ndarray,
                     n_steps: int, coll: Optional[Collectives] = None) -> Optional[np.ndarray]:
    """(steps, len(phases)) us of exposed collective time per step and phase (None: the trace has
    no collectives). CPU: within each phase scope's window; GPU: the step's GPU window, counted in
    the last phase (backward: where gradient all-reduces run).

    Args:
        scope_phase: (scopes,) phase index of each phase scope, -1 for other scopes.
        step_pos: step row -> position in the per-step arrays (-1: not counted).
    """
    coll = coll or Collectives(trace)
    if not coll.rec.size and not coll.gpu:
        return None
    out = np.zeros((n_steps, len(phases)))
    if coll.gpu:
        st = trace.steps
        for s in range(len(st.ts_us)):
            p = step_pos[s] if s < len(step_pos) else -1
            if p < 0:
                continue
            lo, hi = float(st.gpu_ts_us[s]), float(st.gpu_end_us[s])
            if not (np.isfinite(lo) and hi > lo):
                lo, hi = float(st.ts_us[s]), float(st.ts_us[s] + st.dur_us[s])
            out[p, phases.index(TRACED_PHASES[-1])] += coll.exposed_in(lo, hi, int(st.file[s]))
        return out
    sc = trace.scopes
    for i in np.flatnonzero((scope_phase >= 0) & (sc.step >= 0)).tolist():
        p = step_pos[sc.step[i]]
        if p < 0:
            continue
        lo = float(sc.ts_us[i])
        out[p, scope_phase[i]] += coll.exposed_in(lo, lo + float(sc.dur_us[i]), int(sc.file[i]))
    return out


def communication(trace: Trace, file: Optional[int] = None) -> dict:
    """The collectives of ``trace`` (one file, or every file): see ``Collectives.summary``."""
    return Collectives(trace).summary(file)
