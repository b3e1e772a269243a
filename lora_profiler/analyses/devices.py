"""Peak dense matmul throughput and memory bandwidth of known accelerators (vendor datasheets),
for roofline ridge points: ridge = peak FLOP/s / bytes/s. A matmul whose arithmetic intensity
(FLOP per byte) is below the ridge cannot reach peak compute: it is memory- or launch-bound."""

from __future__ import annotations

import ast
from typing import Optional

from ..events import Trace

# name substring -> (dense bf16/fp16 tensor TFLOP/s, memory TB/s), checked in order.
# Sources: NVIDIA V100/A100/H100/H200 and RTX 2080 Ti datasheets, AMD MI300X datasheet.
KNOWN: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 4.8),
    ("H100 PCIe", 756.0, 2.0),
    ("H100", 989.0, 3.35),
    ("A100-SXM4-80GB", 312.0, 2.039),
    ("A100 80GB PCIe", 312.0, 1.935),
    ("A100", 312.0, 1.555),
    ("V100", 125.0, 0.9),
    ("RTX 2080 Ti", 107.0, 0.616),
    ("MI300X", 1307.0, 5.3),
)


def device_names(trace: Trace) -> list:
    """Accelerator names recorded in the trace files' ``devices`` metadata."""
    names = []
    for meta in trace.meta:
        raw = meta.get("devices")
        if isinstance(raw, str):
            try:
                raw = ast.literal_eval(raw)  # a literal list of strings; nothing is executed
            except (ValueError, SyntaxError):
                raw = [raw]
        if isinstance(raw, (list, tuple)):
            names += [str(n) for n in raw]
    return names


def device_peak(trace: Trace) -> Optional[dict]:
    """``{"name", "peak_tflops", "bandwidth_tbs", "ridge_flop_per_byte"}`` or None if unknown."""
    for name in device_names(trace):
        for key, tflops, tbs in KNOWN:
            if key.lower() in name.lower():
                return {"name": name, "peak_tflops": tflops, "bandwidth_tbs": tbs,
                        "ridge_flop_per_byte": tflops / tbs}
    return None
