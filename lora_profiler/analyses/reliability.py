"""How far to trust a run's numbers: what the profiler calibration leaves unexplained, noisy
timed modes, intervals too wide to act on, causes that do not add up.

Each finding names the numbers it concerns and why, in one line, so a report can say "these
are unreliable" instead of printing them as if they were sound.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..units import fmt_s
from . import stats
from .lora_roles import PHASES
from .profiler_cost import EventCosts

NOISY_IQR = 0.15          # a timed mode whose IQR exceeds this fraction of its median is noisy
DISTURBED = 0.15          # profiled phase time unexplained by the calibration, as a fraction
DISTURBED_MIN_S = 2e-3    # ... and at least this much (tiny phases are all noise)
RESIDUAL = 0.10           # |residual| above this fraction of the overhead
WIDE_INTERVAL = 0.5       # an interval wider than this fraction of its value


def unexplained(trace, roles, costs: EventCosts, entry: dict) -> dict:
    """Per traced phase of one mode: traced time - measured time - predicted profiler cost.

    The traced time is each profiled round's phase scope (the sum of its scopes when a step has
    several: one forward and one backward per micro-batch with gradient accumulation); the
    measured time the median of the timed (unprofiled) phase; the predicted cost the calibrated
    cost of the events recorded in the phase windows (all threads of the process). What remains
    is not the profiler's per-event cost: a disturbed machine, or a profiler cost the
    calibration does not model. A diagnostic: it is never fed back into the causes.

    Returns:
        ``{phase: {"traced_s", "measured_s", "predicted_cost_s", "unexplained_s", "fraction",
        "rounds"}}`` (medians over rounds).
    """
    sc = trace.scopes
    measured = entry.get("phase_time_s") or {}
    out = {}
    for name in ("forward", "backward"):
        rows = np.flatnonzero((roles.scope_phase == PHASES.index(name)) & (sc.step >= 0))
        if not rows.size or measured.get(name) is None:
            continue
        ts, end = sc.ts_us[rows], sc.ts_us[rows] + sc.dur_us[rows]
        pred = costs.process_cost_us(ts, end, sc.pid[rows], sc.file[rows])  # (scopes,) us
        _, per_step = np.unique(sc.step[rows], return_inverse=True)  # a step's scopes summed
        traced = np.bincount(per_step, weights=sc.dur_us[rows])  # (rounds,) us
        pred = np.bincount(per_step, weights=pred)  # (rounds,) us
        rest = traced - measured[name] * 1e6 - pred
        m = measured[name]
        out[name] = {"traced_s": float(np.median(traced)) * 1e-6, "measured_s": m,
                     "predicted_cost_s": float(np.median(pred)) * 1e-6,
                     "unexplained_s": float(np.median(rest)) * 1e-6,
                     "fraction": float(np.median(rest)) * 1e-6 / m if m else None,
                     "rounds": int(traced.size)}
    return out


def findings(facts: dict, attribution: Optional[dict], profiler: dict, modes: list) -> list:
    """One-line findings, one per reason: ``[{"numbers": what is affected, "reason": why}]``."""
    out = []
    noisy = [(m, r) for m in modes for r in [stats.relative_iqr(facts, m)] if r is not None and r > NOISY_IQR]
    if noisy:
        names = ", ".join(m for m, _ in noisy)
        lo, hi = min(r for _, r in noisy), max(r for _, r in noisy)
        spread = f"{100 * lo:.0f}%" if lo == hi else f"{100 * lo:.0f}–{100 * hi:.0f}%"
        out.append({"numbers": f"step times of {names}", "modes": [m for m, _ in noisy], "reason":
                    f"their timed steps spread widely (IQR {spread} of the median, over {100 * NOISY_IQR:.0f}%): "
                    "the machine was busy or the step is unstable; the speedups' intervals say how much"})
    disturbed = []
    for mode, phases in (profiler.get("unexplained") or {}).items():
        for phase, d in phases.items():
            f, u = d.get("fraction"), d.get("unexplained_s")
            if f is not None and abs(f) > DISTURBED and abs(u) > DISTURBED_MIN_S:
                disturbed.append((mode, phase, f))
    if disturbed:
        what = ", ".join(f"{m} {p}" for m, p, _ in disturbed)
        lo, hi = min(f for *_, f in disturbed), max(f for *_, f in disturbed)
        rng = f"{100 * lo:+.0f}%" if lo == hi else f"{100 * lo:+.0f}% to {100 * hi:+.0f}%"
        out.append({"numbers": f"causes measured in the profiled {what}", "modes": sorted({m for m, *_ in disturbed}),
                    "reason": f"those profiled phases took {rng} against their timed steps plus the profiler's "
                              "measured cost: the machine was disturbed while profiling"})
    check = (profiler.get("calibration") or {}).get("check") or {}
    if check.get("error") is not None and abs(check["error"]) > 0.5:
        out.append({"numbers": "profiler-cost correction", "reason":
                    f"the calibration predicted its check loop's profiler cost {100 * check['error']:+.0f}% "
                    "off: the corrections are approximate on this machine"})
    if attribution:
        o, r = attribution.get("overhead_s"), attribution.get("residual_s")
        if o and r is not None and abs(r) > RESIDUAL * abs(o):
            out.append({"numbers": "the attribution's shares", "reason":
                        f"the causes leave {100 * r / o:.0f}% of the measured overhead unexplained "
                        f"(over {100 * RESIDUAL:.0f}%)"})
        ci = attribution.get("overhead_ci_s")
        if o and ci and (ci[1] - ci[0]) > WIDE_INTERVAL * abs(o):
            out.append({"numbers": "overhead", "reason":
                        f"its 95% interval ({fmt_s(ci[0])} – {fmt_s(ci[1])}) is wider than "
                        f"{100 * WIDE_INTERVAL:.0f}% of it: more --steps would narrow it"})
    return out
