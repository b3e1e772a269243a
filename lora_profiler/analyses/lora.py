"""The LoRA attribution of a run: facts.json + the per-mode traces -> report["attribution"]."""

from __future__ import annotations

from typing import Optional

from .lora_attribution import attribute
from .lora_details import (launch_cost_us, memory_peaks, serial_path, small_matmuls, timeline,
                           versus_full)
from .lora_roles import assign_roles


def median_step_s(doc: dict, mode: str) -> Optional[float]:
    """Median timed step of ``mode`` in seconds, from facts, a report or a sweep point (None when
    the mode is missing or failed)."""
    entry = (doc.get("modes") or {}).get(mode) or {}
    return (entry.get("step_time_s") or {}).get("median") if entry.get("status") == "ok" else None


def lora_attribution(facts: dict, traces: dict) -> Optional[dict]:
    """Everything under ``report["attribution"]`` (docs/FORMAT.md), or None without a LoRA trace.

    Args:
        facts: the run's facts.json.
        traces: mode -> loaded Trace (modes whose trace is missing are absent).
    """
    lora = traces.get("lora")
    t_lora, t_frozen = median_step_s(facts, "lora"), median_step_s(facts, "frozen")
    if lora is None or t_lora is None or t_frozen is None:
        return None
    out = attribute(lora, traces.get("frozen"), facts["modes"]["lora"], facts["modes"]["frozen"])
    roles = assign_roles(lora)
    saved = {m: (facts["modes"][m].get("saved_activations") or {}).get("total_bytes")
             for m in ("lora", "frozen")}
    out["extra_saved_activation_bytes"] = (saved["lora"] - saved["frozen"]
                                           if None not in saved.values() else None)
    out["peak_memory_bytes"] = memory_peaks(facts)
    elem = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}.get(facts["workload"].get("dtype"), 4)
    out["small_matmuls"] = small_matmuls(lora, roles, launch_cost_us(lora), elem)
    out["serial_path"] = serial_path(lora, roles)
    out["vs_full"] = versus_full(facts, out)
    out["timeline"] = timeline(lora, roles)
    return out
