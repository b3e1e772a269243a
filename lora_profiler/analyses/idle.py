"""GPU idle time: gaps between GPU activities, per stream and per device.

For a set of activities (kernels, memcpys, memsets), ``busy_us`` is the length of the union of
their intervals, ``span_us`` runs from the first start to the last end, and ``idle_us =
span_us - busy_us`` is the time inside that span when none of them ran. Per device the union
is taken over all its streams, so overlap between streams is not counted twice. Gaps longer
than ``long_gap_us`` are reported separately: they are usually host synchronisation or data
loading rather than launch overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np

from ..events import Trace
from ..table import Column, Table, Tabular, fmt_count, fmt_pct, fmt_us

LONG_GAP_US = 1000.0


@dataclass(frozen=True)
class IdleRow:
    """Busy and idle time (us) of one stream or device."""

    device: int
    stream: int                  # -1 for a whole device
    activities: int
    span_us: float
    busy_us: float
    idle_us: float
    utilization: float           # busy / span, 0..1
    gaps: int                    # idle intervals
    long_gaps: int               # of which longer than long_gap_us
    long_gap_us: float           # their total length
    max_gap_us: float


@dataclass(frozen=True, repr=False)
class IdleTime(Tabular):
    """Idle-time figures per device and per stream."""

    devices: List[IdleRow]
    streams: List[IdleRow]
    long_gap_threshold_us: float

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> Table:
        """Busy and idle time per device, then per stream."""
        rows = [(f"device {r.device}" + ("" if r.stream < 0 else f" stream {r.stream}"), r.activities, r.span_us,
                 r.busy_us, r.idle_us, r.utilization, r.gaps, r.long_gap_us) for r in self.devices + self.streams]
        return Table([Column("where"), Column("activities", fmt=fmt_count), Column("span_us", "span", fmt_us),
                      Column("busy_us", "busy", fmt_us), Column("idle_us", "idle", fmt_us),
                      Column("utilization", "busy share", fmt_pct), Column("gaps", fmt=fmt_count),
                      Column("long_gap_us", f"gaps > {fmt_us(self.long_gap_threshold_us)}", fmt_us)],
                     rows, title="GPU busy and idle time",
                     notes=[] if rows else ["no GPU activity in this trace"])


def gpu_idle(trace: Trace, long_gap_us: float = LONG_GAP_US) -> IdleTime:
    """Busy/idle time of every device and stream of ``trace`` (see module docstring)."""
    k = trace.kernels
    devices, streams = [], []
    dev_key = k.file.astype(np.int64) * 65536 + k.device
    for dk in np.unique(dev_key).tolist():
        on = np.flatnonzero(dev_key == dk)
        dev = int(k.device[on[0]])
        devices.append(_row(k.ts_us[on], k.dur_us[on], dev, -1, long_gap_us))
        for s in np.unique(k.stream[on]).tolist():
            ss = on[k.stream[on] == s]
            streams.append(_row(k.ts_us[ss], k.dur_us[ss], dev, int(s), long_gap_us))
    return IdleTime(devices=devices, streams=streams, long_gap_threshold_us=long_gap_us)


def union_gaps(ts_us: np.ndarray, dur_us: np.ndarray) -> np.ndarray:
    """Lengths (us) of the gaps between the union of intervals [ts, ts + dur]."""
    if ts_us.size < 2:
        return np.zeros(0)
    o = np.argsort(ts_us, kind="stable")
    start, end = ts_us[o], ts_us[o] + dur_us[o]
    reach = np.maximum.accumulate(end)                          # (n,) furthest end so far
    gap = start[1:] - reach[:-1]                                # (n-1,) us, > 0 where idle
    return gap[gap > 0]


def _row(ts: np.ndarray, dur: np.ndarray, device: int, stream: int, long_gap: float) -> IdleRow:
    span = float((ts + dur).max() - ts.min()) if ts.size else 0.0
    gaps = union_gaps(ts, dur)
    idle = float(gaps.sum())
    busy = span - idle
    long = gaps[gaps > long_gap]
    return IdleRow(device=device, stream=stream, activities=int(ts.size), span_us=span,
                   busy_us=busy, idle_us=idle, utilization=busy / span if span > 0 else 0.0,
                   gaps=int(gaps.size), long_gaps=int(long.size), long_gap_us=float(long.sum()),
                   max_gap_us=float(gaps.max()) if gaps.size else 0.0)
