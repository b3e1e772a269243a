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

from .analyses.adapter_estimate import adapter_estimate
from .analyses.dispatch import dispatch_overhead
from .analyses.idle import gpu_idle
from .analyses.kernels import kernel_breakdown
from .analyses.launches import launch_stats
from .analyses.ops import op_table
from .api import Run, Settings, SettingsError, compare, example_model, profile
from .events import Trace, TraceError, load_trace
from .run_folder import RunError
from .table import Table

__all__ = [
    "__version__", "profile", "Run", "Settings", "SettingsError", "RunError", "example_model",
    "load_trace", "Trace", "TraceError", "compare", "kernel_breakdown", "launch_stats", "op_table",
    "gpu_idle", "dispatch_overhead", "adapter_estimate", "Table",
]
