"""TensorBoard view of a run: one run per mode whose charts overlay, and the report as text.

``tensorboard --logdir OUT/tb`` shows:

- **Scalars**: one TensorBoard run per mode, ``tb/<mode>/`` (the folder that holds the mode's
  traces), every mode with the same tags, so a chart overlays the modes:

  - ``step_time_s``: each timed step, in the order measured (step i of every mode ran in the same
    timed round, so drift of the machine shows in all modes at once);
  - ``phase_time_s/<phase>``: the same steps' forward, backward, optimizer and zero_grad times;
    a phase the mode does not run (forward-only has no backward) gets no chart;
  - ``speedup_vs_full``: T_full,i / T_mode,i of the paired steps (modes other than full);
  - ``overhead_vs_frozen_s``: T_mode,i − T_frozen,i of the paired steps (training modes other
    than the floor): LoRA's overhead, full fine-tuning's cost over the floor.

- **Text**: the report (report.md without its figures) under the run ``report`` (``tb/report/``).
- **PyTorch Profiler** (torch-tb-profiler): each mode is a run whose one worker is the mode;
  its profiled rounds are the worker's spans (the trace files are named
  ``<mode>.<ns>.pt.trace.json.gz``, which the plugin reads as worker ``<mode>``, span ``<ns>``).

The Profiler tab loads Google Charts from a CDN: without internet it shows a spinner forever.
Offline, open ``OUT/report.html`` or the traces in the Perfetto UI (https://ui.perfetto.dev,
which runs in the browser and can be self-hosted). torch-tb-profiler is no longer maintained
(0.4.3 is its last release; its operator view shows zero device time on recent GPU traces,
pytorch/kineto#1166).

Written with tensorboard's own event-file writer (numpy and protobuf, no torch, no TensorFlow).
Our event files end in ``.lora_profiler`` and are replaced when the report is rebuilt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from ..names import FLOOR_MODE, PHASES

SUFFIX = ".lora_profiler"
REPORT_RUN = "report"
# What each tag means (shown in TensorBoard's tooltip).
DESCRIPTIONS = {
    "step_time_s": "seconds per timed step (no profiler, no hooks); step i of every mode ran in the same round",
    "phase_time_s": "seconds of this phase in each timed step",
    "speedup_vs_full": "T_full / T_mode of the steps that ran side by side (step i of each)",
    "overhead_vs_frozen_s": "T_mode - T_frozen (the frozen floor) of the steps that ran side by side",
}


def scalar_series(report: dict) -> dict[str, dict[str, list[float]]]:
    """The scalars of a report: mode -> tag -> values by step (see the module docstring).

    Only modes with status ok and timed steps; a phase whose every sample is 0 (the mode does not
    run it) is left out; paired series are as long as the shorter of the two modes.
    """
    modes = {m: e for m, e in (report.get("modes") or {}).items()
             if (e or {}).get("status") == "ok" and (e.get("step_time_s") or {}).get("samples")}
    samples = {m: [float(v) for v in e["step_time_s"]["samples"]] for m, e in modes.items()}
    out: dict[str, dict[str, list[float]]] = {}
    for mode, e in modes.items():
        tags = {"step_time_s": samples[mode]}
        for phase in PHASES:
            values = (e.get("phase_samples_s") or {}).get(phase) or []
            if any(v for v in values):
                tags[f"phase_time_s/{phase}"] = [float(v) for v in values]
        if mode != "full" and "full" in samples:
            tags["speedup_vs_full"] = [a / b for a, b in zip(samples["full"], samples[mode]) if b > 0]
        backward = any((e.get("phase_samples_s") or {}).get("backward") or [])
        if mode != FLOOR_MODE and FLOOR_MODE in samples and backward:
            tags["overhead_vs_frozen_s"] = [a - b for a, b in zip(samples[mode], samples[FLOOR_MODE])]
        out[mode] = {t: v for t, v in tags.items() if v}
    return out


def report_text(report: dict) -> str:
    """The report as TensorBoard's Text tab shows it: report.md without the figures section."""
    from .markdown import report_markdown

    return report_markdown(report).split("\n## Figures")[0]


def write_scalars(report: dict, out_dir: str | Path) -> Optional[str]:
    """Write the report's scalars (one event file per mode, ``tb/<mode>/``) and its text
    (``tb/report/``), replacing those an earlier build wrote.

    Args:
        report: the report dict.
        out_dir: the run folder.

    Returns:
        The TensorBoard log folder relative to ``out_dir`` (``"tb"``), or None when the
        tensorboard package is not installed (nothing written; install ``lora_profiler[tb]``).
    """
    try:
        import numpy as np
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.scalar import metadata as scalar_meta
        from tensorboard.plugins.text import metadata as text_meta
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        from tensorboard.util.tensor_util import make_tensor_proto
    except ImportError:
        return None

    def scalar_pb(tag: str, value: float, description: Optional[str]):
        meta = scalar_meta.create_summary_metadata(display_name=tag, description=description or "")
        meta.data_class = summary_pb2.DataClass.DATA_CLASS_SCALAR
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, metadata=meta, tensor=make_tensor_proto(np.float32(value)))])

    def text_pb(tag: str, text: str):
        meta = text_meta.create_summary_metadata(display_name=tag, description="")
        meta.data_class = summary_pb2.DataClass.DATA_CLASS_TENSOR
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, metadata=meta, tensor=make_tensor_proto(np.array(text.encode("utf-8"), dtype=object)))])

    tb = Path(out_dir) / "tb"
    now = time.time()

    def write(run: str, events) -> None:
        folder = tb / run
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"events.out.tfevents.*{SUFFIX}"):
            old.unlink()
        writer = EventFileWriter(str(folder), filename_suffix=SUFFIX)
        try:
            for step, summary in events:
                writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))
        finally:
            writer.close()

    for mode, tags in scalar_series(report).items():
        write(mode, [(step, scalar_pb(tag, value, description=DESCRIPTIONS.get(tag.split("/")[0])))
                     for tag, values in tags.items() for step, value in enumerate(values)])
    write(REPORT_RUN, [(0, text_pb("report", report_text(report)))])
    return "tb"
