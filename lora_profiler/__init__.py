"""lora_profiler: profile a fine-tuning step under full, LoRA and frozen training and attribute
LoRA's overhead to its causes.

Layering (see docs/ARCHITECTURE.md): workload -> capture -> files on disk -> events -> analyses
-> report. Only ``workload`` and ``capture`` import torch.
"""

__version__ = "0.1.0"
