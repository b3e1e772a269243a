"""The cost model's predictions beside the measurements, and a recommendation (``trace --advise``).

Reads ``census.json`` (each mode's op census and this device's measured rates, written by
capture) and the facts' timed steps; predicts every mode's step time on this device and on the
GPU tables (``predict.GPUS``), puts it beside the measured median, and says which strategy to
try. Modes that were censused but not run (strategies worth trying) get a prediction only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..predict import GPUS, advise, gpu_device, predict


def load_census(run_dir) -> Optional[dict]:
    path = Path(run_dir) / "census.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("kind") == "lora_profiler.census" else None


def prediction(facts: dict, census: Optional[dict]) -> Optional[dict]:
    """``{"rows": [{"mode", "measured_s", "predicted_s", "error", "parts"}], "gpus": {gpu: {mode: s}},
    "recommendation", "device_model_s", "max_abs_error"}`` or None without a census."""
    if not census:
        return None
    dev = census["device_model"]
    rows = []
    for mode, c in census["censuses"].items():
        entry = (facts.get("modes") or {}).get(mode) or {}
        measured = (entry.get("step_time_s") or {}).get("median") if entry.get("status") == "ok" else None
        pred = predict(c, dev)
        rows.append({"mode": mode, "measured_s": measured, "predicted_s": pred["step_s"],
                     "error": (pred["step_s"] - measured) / measured if measured else None,
                     "parts": pred["parts"], "by_phase": pred["by_phase"]})
    dtype = facts.get("workload", {}).get("dtype")
    gpus = {name: {mode: predict(c, gpu_device(name, dtype))["step_s"] for mode, c in census["censuses"].items()}
            for name in GPUS}
    errs = [abs(r["error"]) for r in rows if r["error"] is not None]
    return {"rows": rows, "gpus": gpus, "recommendation": advise(rows), "errors": census.get("errors") or {},
            "device_model_s": dev.get("seconds"), "max_abs_error": max(errs) if errs else None,
            "device": {k: dev.get(k) for k in ("device", "dtype", "dispatch_us", "view_us", "module_call_us",
                                               "node_us")}}
