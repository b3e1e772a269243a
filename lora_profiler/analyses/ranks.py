"""Per-rank figures of a multi-rank trace (a folder of per-rank files, ours or anyone's): step
time, the slowest rank and the spread, communication, kernels and launches (torch-free).

A file's rank is its ``distributedInfo.rank`` (torch.profiler writes it when the process group
is initialised), else the number in ``rank<N>`` / ``rank-<N>`` of its name, else 0 (files
without either are one process's: a single-process run's rounds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..events import Trace
from .communication import Collectives

_RANK_IN_NAME = re.compile(r"rank[-_.]?(\d+)", re.IGNORECASE)
STRAGGLER_FRACTION = 0.05  # a rank whose median step is this much above the ranks' median


def file_ranks(trace: Trace) -> list[int]:
    """The rank of every file of ``trace``."""
    out = []
    for i, (path, meta) in enumerate(zip(trace.files, trace.meta)):
        info = meta.get("distributedInfo") or {}
        if isinstance(info.get("rank"), int):
            out.append(int(info["rank"]))
            continue
        m = _RANK_IN_NAME.search(Path(path).name)
        out.append(int(m.group(1)) if m else 0)  # no rank written anywhere: one process's files
    return out


def world_size(trace: Trace) -> Optional[int]:
    for meta in trace.meta:
        w = (meta.get("distributedInfo") or {}).get("world_size")
        if isinstance(w, int):
            return w
    return None


def spread(values: dict) -> dict:
    """{slowest_rank, fastest_rank, spread (max - min), spread_fraction (of min), stragglers}
    of rank -> value (larger is slower)."""
    vals = {r: v for r, v in values.items() if v is not None}
    if not vals:
        return {"slowest_rank": None, "fastest_rank": None, "spread": None, "spread_fraction": None,
                "stragglers": []}
    hi = max(vals, key=vals.get)
    lo = min(vals, key=vals.get)
    mid = float(np.median(list(vals.values())))
    return {"slowest_rank": hi, "fastest_rank": lo, "spread": vals[hi] - vals[lo],
            "spread_fraction": (vals[hi] - vals[lo]) / vals[lo] if vals[lo] > 0 else None,
            "stragglers": sorted(r for r, v in vals.items()
                                 if len(vals) > 1 and v > mid * (1 + STRAGGLER_FRACTION))}


def rank_analysis(trace: Trace, collectives: Optional[Collectives] = None) -> Optional[dict]:
    """Per-rank figures; None for a trace of one rank without ``distributedInfo``.

    Returns:
        {"world_size", "ranks": [{rank, files, steps, step_us (median), step_us_all, kernels
        {count, total_us}, launches {count, median_us}, ops {count}, communication {...}}],
        "step": spread of the median step times (us), "communication_exposed": spread of the
        exposed communication per step (the ranks waiting least are the ones the others wait
        for)}.
    """
    ranks = file_ranks(trace)
    if len(set(ranks)) < 2 and world_size(trace) is None:
        return None
    coll = collectives or Collectives(trace)
    st, k, la = trace.steps, trace.kernels, trace.launches
    rows = []
    for r in sorted(set(ranks)):
        files = [i for i, x in enumerate(ranks) if x == r]
        ss = np.isin(st.file, files)
        km = np.isin(k.file, files) & (k.cat == 0)
        lm = np.isin(la.file, files)
        comm = [coll.summary(f) for f in files]
        per_step = [s for c in comm for s in c["per_step"]]
        by: dict = {}
        for c in comm:
            for name, v in c["collectives"].items():
                row = by.setdefault(name, {"count": 0, "bytes": 0, "bytes_known": True})
                row["count"] += v["count"]
                row["bytes"] += v["bytes"]
                row["bytes_known"] &= v["bytes_known"]
        t = sum(c["time_us"] for c in comm)
        ov = sum(c["overlap_us"] for c in comm)
        known = not by or all(v["bytes_known"] for v in by.values())
        rows.append({
            "rank": r, "files": [trace.files[i] for i in files], "steps": int(ss.sum()),
            "step_us": float(np.median(st.dur_us[ss])) if ss.any() else None,
            "step_us_all": [float(x) for x in st.dur_us[ss]],
            "kernels": {"count": int(km.sum()), "total_us": float(k.dur_us[km].sum())},
            "launches": {"count": int(lm.sum()),
                         "median_us": float(np.median(la.dur_us[lm])) if lm.any() else None},
            "ops": {"count": int(np.isin(trace.ops.file, files).sum())},
            "communication": {
                "backend": coll.backend, "collectives": by, "time_us": t, "overlap_us": ov,
                "exposed_us": t - ov, "overlap_fraction": ov / t if t > 0 else None,
                "bytes_per_step": float(np.median([s["bytes"] for s in per_step]))
                if per_step and known else None,
                "time_per_step_us": float(np.median([s["time_us"] for s in per_step])) if per_step else None,
                "exposed_per_step_us": float(np.median([s["exposed_us"] for s in per_step]))
                if per_step else None},
        })
    return {"world_size": world_size(trace), "ranks": rows,
            "step": spread({x["rank"]: x["step_us"] for x in rows}),
            "communication_exposed": spread({x["rank"]: x["communication"]["exposed_per_step_us"]
                                             for x in rows})}
