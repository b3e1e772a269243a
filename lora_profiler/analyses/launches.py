"""Launch statistics: what each GPU launch costs on the CPU and how long it waits.

Per launch call linked to GPU work:
- ``cpu_us``: duration of the launch call on the CPU (e.g. cudaLaunchKernel);
- ``gpu_us``: summed duration of the GPU activities it queued;
- ``delay_us``: launch delay = start of its first GPU activity - start of the launch call.
  (HTA measures from the end of the call instead; ours includes the call itself.)

A kernel is *launch-bound* when it is shorter than the CPU call that launched it: the CPU
cannot queue such kernels faster than the GPU runs them, so the GPU idles between them unless
work queued earlier covers the gap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..events import CAT_KERNEL, Trace
from ..table import Table, Tabular
from .groups import group, stats


@dataclass(frozen=True)
class ApiRow:
    """One launch API (e.g. cudaLaunchKernel): calls and CPU time (us)."""

    name: str
    count: int
    linked: int
    cpu_total_us: float
    cpu_mean_us: float


@dataclass(frozen=True, repr=False)
class LaunchStats(Tabular):
    """Launch figures of a trace or step; times in us, fractions 0..1."""

    count: int                   # launch calls
    linked: int                  # with at least one GPU activity in the trace
    unlinked: int
    kernels_unlinked: int        # GPU kernels whose launch call is not in the trace
    cpu_us: Dict[str, Any]       # stats of launch-call durations (linked calls)
    gpu_us: Dict[str, Any]       # stats of the GPU time each linked call queued
    delay_us: Dict[str, Any]     # stats of launch delays
    launch_bound: int            # kernels shorter than their launch call
    launch_bound_fraction: float  # of linked kernels
    launch_bound_gpu_us: float   # GPU time of those kernels
    by_api: List[ApiRow]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> Table:
        """The launch figures, one per row (value and unit): calls, CPU cost, delay, launch-bound."""
        rows = [("launch calls", self.count, "calls"),
                ("with GPU work in the trace", self.linked, "calls"),
                ("GPU kernels without their launch in the trace", self.kernels_unlinked, "kernels")]
        for what, st in (("CPU time per launch call", self.cpu_us), ("GPU time per launch", self.gpu_us),
                         ("launch delay (GPU start - call start)", self.delay_us)):
            for q in ("median", "p95"):
                if st.get(q) is not None:
                    rows.append((f"{what}, {q}", float(st[q]), "us"))
        rows += [("launch-bound kernels (shorter than their launch call)", self.launch_bound, "kernels"),
                 ("launch-bound share of linked kernels", 100 * self.launch_bound_fraction, "%"),
                 ("GPU time of launch-bound kernels", self.launch_bound_gpu_us, "us")]
        return Table(["figure", "value", "unit"], rows, title="GPU launches")


def launch_stats(trace: Trace) -> LaunchStats:
    """CPU launch time, GPU time, launch delay and launch-bound kernels of ``trace``."""
    L, k = trace.launches, trace.kernels
    linked = L.n_gpu > 0                                           # (launches,) bool
    li = np.flatnonzero(linked)
    gpu_per_launch = np.zeros(len(L))
    has = k.launch >= 0
    np.add.at(gpu_per_launch, k.launch[has], k.dur_us[has])         # (launches,) us
    delay = k.ts_us[L.kernel[li]] - L.ts_us[li]                     # (linked,) us
    kk = np.flatnonzero(has & (k.cat == CAT_KERNEL))               # linked kernels
    bound = k.dur_us[kk] < L.dur_us[k.launch[kk]]
    g_all = group(L.name, L.dur_us)
    g_link = group(L.name[li], np.ones(li.size))
    linked_by = dict(zip(g_link.keys.tolist(), g_link.count.tolist()))
    by_api = [ApiRow(trace.name(int(n)), int(c), int(linked_by.get(int(n), 0)), float(t),
                     float(t) / max(int(c), 1))
              for n, c, t in zip(g_all.keys, g_all.count, g_all.total)]
    by_api.sort(key=lambda r: -r.count)
    return LaunchStats(count=len(L), linked=int(li.size), unlinked=int(len(L) - li.size),
                       kernels_unlinked=int(((~has) & (k.cat == CAT_KERNEL)).sum()),
                       cpu_us=stats(L.dur_us[li]), gpu_us=stats(gpu_per_launch[li]),
                       delay_us=stats(delay), launch_bound=int(bound.sum()),
                       launch_bound_fraction=float(bound.mean()) if kk.size else 0.0,
                       launch_bound_gpu_us=float(k.dur_us[kk][bound].sum()), by_api=by_api)


def launch_table(trace: Trace, top: Optional[int] = None) -> List[Dict[str, Any]]:
    """Per kernel name: launches, mean CPU launch time, mean GPU time, launch-bound count."""
    L, k = trace.launches, trace.kernels
    kk = np.flatnonzero((k.launch >= 0) & (k.cat == CAT_KERNEL))
    cpu = L.dur_us[k.launch[kk]]
    gpu = k.dur_us[kk]
    names = k.name[kk]
    g_cpu, g_gpu = group(names, cpu), group(names, gpu)
    g_bound = group(names, (gpu < cpu).astype(np.float64))
    rows = [{"name": trace.name(int(n)), "count": int(c), "cpu_mean_us": float(tc / c),
             "gpu_mean_us": float(tg / c), "launch_bound": int(b)}
            for n, c, tc, tg, b in zip(g_cpu.keys, g_cpu.count, g_cpu.total, g_gpu.total,
                                       g_bound.total)]
    rows.sort(key=lambda r: -r["launch_bound"] * r["cpu_mean_us"])
    return rows if top is None else rows[:top]
