"""The LoRA attribution of a run: facts.json + the per-mode traces -> report["attribution"].

Ties the pieces together: each mode's trace gets its roles, profiler costs and per-step causes
once (``attribution.ModeTrace``); LoRA and full fine-tuning are attributed against the frozen
floor the same way; the calibration's leftovers and the run's noise become reliability findings;
the ablation variants, when the run has them, are checked against the prediction.
"""

from __future__ import annotations

from typing import Optional

from . import reliability, stats
from .attribution import CAUSES, LABELS, ModeTrace, attribute
from .lora_details import (launch_cost_us, memory_peaks, serial_path, small_matmuls, timeline,
                           trace_peak_bytes)
from .validation import validate


def median_step_s(doc: dict, mode: str) -> Optional[float]:
    """Median timed step of ``mode`` in seconds, from facts, a report or a sweep point (None when
    the mode is missing or failed)."""
    entry = (doc.get("modes") or {}).get(mode) or {}
    return (entry.get("step_time_s") or {}).get("median") if entry.get("status") == "ok" else None


def mode_traces(facts: dict, traces: dict) -> dict:
    """mode -> ModeTrace for every loaded trace (roles, costs and causes computed once)."""
    cal = facts.get("calibration")
    return {m: ModeTrace(t, cal, ((facts.get("modes") or {}).get(m) or {}).get("trainable_shapes"))
            for m, t in traces.items()}


def lora_attribution(facts: dict, traces: dict, prepared: Optional[dict] = None) -> Optional[dict]:
    """Everything under ``report["attribution"]`` (docs/FORMAT.md), or None without a LoRA trace
    and timed lora and frozen modes.

    Args:
        facts: the run's facts.json.
        traces: mode -> loaded Trace (modes whose trace is missing are absent).
        prepared: mode -> ModeTrace already built from ``traces`` (built here when None).
    """
    if traces.get("lora") is None or median_step_s(facts, "lora") is None or median_step_s(facts, "frozen") is None:
        return None
    mt = prepared if prepared is not None else mode_traces(facts, traces)
    lora, floor = mt["lora"], mt.get("frozen")
    out = attribute(lora, floor, facts, "lora", "frozen")
    out["labels"] = {c: LABELS[c] for c in CAUSES}
    if floor is None:
        out["notes"] = ["no frozen trace: the causes are LoRA's own, not differences against the floor"]
    # the profiler: calibration, and what it leaves unexplained per mode and phase
    cal = facts.get("calibration") or {}
    profiler = {"calibration": {k: cal.get(k) for k in ("cost_us", "spread_us", "check", "seconds", "settings",
                                                        "page_fault_us")}
                if cal else None,
                "unexplained": {m: reliability.unexplained(x.trace, x.roles, x.costs, facts["modes"][m])
                                for m, x in mt.items() if m in facts.get("modes", {})}}
    if not cal:
        out.setdefault("notes", []).append("no profiler calibration in this run: causes include the "
                                           "profiler's own cost")
    out["profiler"] = profiler
    steps = {m: len(x.causes.steps) for m, x in mt.items()}
    out["trace_overhead_s"] = _trace_overhead(mt)
    out["adapter_launches"] = _adapter_launches(lora)
    saved = {m: (facts["modes"][m].get("saved_activations") or {}).get("total_bytes") for m in ("lora", "frozen")}
    out["extra_saved_activation_bytes"] = (saved["lora"] - saved["frozen"] if None not in saved.values() else None)
    out["peak_memory_bytes"] = memory_peaks(facts, {m: trace_peak_bytes(x.trace) for m, x in mt.items()})
    elem = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}.get(facts["workload"].get("dtype"), 4)
    out["small_matmuls"] = small_matmuls(lora.trace, lora.roles, launch_cost_us(lora.trace), elem)
    out["serial_path"] = serial_path(lora.trace, lora.roles)
    out["timeline"] = timeline(lora.trace, lora.roles)
    out["profiled_steps"] = steps
    # full fine-tuning against the same floor: what LoRA saved and what it added, in one table
    out["vs_full"] = None
    if "full" in mt and median_step_s(facts, "full") is not None:
        full = attribute(mt["full"], floor, facts, "full", "frozen")
        out["vs_full"] = {k: full[k] for k in ("overhead_s", "overhead_ci_s", "median_difference_s", "causes",
                                               "groups", "residual_s", "residual_fraction", "rounds",
                                               "page_faults")}
        out["vs_full"]["table"] = _table(out, full)
        sf, sl = stats.samples(facts, "full"), stats.samples(facts, "lora")
        out["vs_full"]["net_saving_s"] = stats.paired_difference(sf, sl)
        out["vs_full"]["net_saving_ci_s"] = stats.paired_bootstrap(sf, sl, stats.paired_difference)
    out["strategies"] = _strategies(facts, mt, floor) or None
    out["validation"] = validate(facts, out) or None
    modes = [m for m, e in facts.get("modes", {}).items() if e.get("status") == "ok"]
    out["reliability"] = reliability.findings(facts, out, profiler, modes)
    out["warnings"] = [f"{f['numbers']}: {f['reason']}" for f in out["reliability"]]
    return out


def _strategies(facts: dict, mt: dict, floor) -> dict:
    """Each strategy against the same floor: attributed like LoRA when it was profiled, its
    overhead alone when it was only timed (lora-compiled)."""
    out = {}
    for name, entry in (facts.get("modes") or {}).items():
        if not entry.get("strategy") or entry.get("status") != "ok":
            continue
        if name in mt:
            att = attribute(mt[name], floor, facts, name, "frozen")
            out[name] = {k: att[k] for k in ("overhead_s", "overhead_ci_s", "median_difference_s", "causes",
                                             "groups", "residual_s", "residual_fraction", "rounds", "page_faults")}
        else:
            a, b = stats.samples(facts, name), stats.samples(facts, "frozen")
            out[name] = {"overhead_s": stats.paired_difference(a, b) if a is not None and b is not None else None,
                         "overhead_ci_s": stats.paired_bootstrap(a, b, stats.paired_difference)
                         if a is not None and b is not None else None,
                         "note": "timed only (not profiled): no causes"}
    return out


def _table(lora: dict, full: dict) -> list:
    """Rows of the one table answering both questions: per cause, what LoRA adds over the floor,
    what full fine-tuning adds over it, and the difference (what LoRA saves against full)."""
    rows = []
    for cause in CAUSES:
        a = (lora["causes"].get(cause) or {}).get("seconds")
        b = (full["causes"].get(cause) or {}).get("seconds")
        if a is None and b is None:
            continue
        rows.append({"cause": cause, "label": LABELS[cause], "lora_s": a or 0.0, "full_s": b or 0.0,
                     "saved_s": (b or 0.0) - (a or 0.0)})
    rows.append({"cause": "residual", "label": "residual (unexplained)", "lora_s": lora["residual_s"],
                 "full_s": full["residual_s"],
                 "saved_s": (full["residual_s"] or 0.0) - (lora["residual_s"] or 0.0)})
    return rows


def _trace_overhead(mt: dict) -> Optional[float]:
    """Median profiled step of lora minus frozen's, as traced (the profiler's cost included)."""
    import numpy as np

    if "frozen" not in mt:
        return None
    a, b = mt["lora"].trace.steps.dur_us, mt["frozen"].trace.steps.dur_us
    return float(np.median(a) - np.median(b)) * 1e-6 if len(a) and len(b) else None


def _adapter_launches(lora: ModeTrace) -> float:
    """Adapter-path ops (CPU) or kernels (GPU) per step."""
    import numpy as np

    from .lora_roles import ADAPTER_ROLES

    tr, roles = lora.trace, lora.roles
    gpu = lora.causes.gpu
    rows = roles.role_mask(ADAPTER_ROLES, kernels=gpu)
    step = (tr.kernels.step if gpu else tr.ops.step) >= 0
    leaf = rows & step & (True if gpu else roles.op_leaf)
    return float(np.sum(leaf)) / max(len(tr.steps.dur_us), 1)
