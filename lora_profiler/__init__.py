"""lora_profiler: profile a fine-tuning step under full, LoRA and frozen training and attribute
LoRA's overhead to its causes.

The front door (``lora_profiler.api``)::

    import lora_profiler as lp

    run = lp.profile(model, batch)        # a model in memory; or lp.Run("runs/first")
    print(run.attribution())              # where LoRA's overhead goes
    trace = lp.load_trace("trace.json.gz")  # any torch.profiler trace
    lp.kernel_breakdown(trace)            # analyses: tables in notebooks, .to_pandas()

Layering (see ARCHITECTURE.md): workload -> capture -> files on disk -> events -> analyses
-> report. Only ``workload`` and ``capture`` import torch; importing this package does not.
"""

__version__ = "0.1.0"

import importlib

# name -> the module that defines it; imported on first use (PEP 562), so that ``import
# lora_profiler.events`` (analyze, the trace reader) does not pay for the API and every analysis.
_LAZY = {
    "adapter_estimate": ".analyses.adapter_estimate", "dispatch_overhead": ".analyses.dispatch",
    "gpu_idle": ".analyses.idle", "kernel_breakdown": ".analyses.kernels", "launch_stats": ".analyses.launches",
    "op_table": ".analyses.ops", "Run": ".api", "Settings": ".api", "SettingsError": ".api", "compare": ".api",
    "example_model": ".api", "profile": ".api", "Trace": ".events", "TraceError": ".events",
    "load_trace": ".events", "RunError": ".run_folder", "Table": ".table",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__", "profile", "Run", "Settings", "SettingsError", "RunError", "example_model",
    "load_trace", "Trace", "TraceError", "compare", "kernel_breakdown", "launch_stats", "op_table",
    "gpu_idle", "dispatch_overhead", "adapter_estimate", "Table",
]
