"""TensorBoard scalars of a run: step times per mode and the speedups, beside the traces.

The per-mode traces are already in ``OUT/tb/<mode>/`` (torch.profiler's
``tensorboard_trace_handler`` layout), so ``tensorboard --logdir OUT/tb`` shows them in the
PyTorch Profiler tab (package ``torch-tb-profiler``). This module adds ``OUT/tb/scalars/`` for the
Scalars tab. It writes with ``tensorboard.summary.Writer`` (numpy only, no torch import).

Note: torch-tb-profiler is no longer maintained (0.4.3 is its last release; its operator view
shows zero device time on recent GPU traces, pytorch/kineto#1166). The Perfetto UI
(https://ui.perfetto.dev) is the maintained viewer of the same ``*.pt.trace.json.gz`` files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

SCALARS_DIR = ("tb", "scalars")


def scalar_series(report: dict) -> dict[str, list[float]]:
    """The scalars of a report, tag -> values by step (one value: step 0 only).

    Tags (seconds unless named otherwise):
        ``step_time_s/<mode>``: every timed step's time, in the order measured;
        ``step_time_median_s/<mode>``;
        ``phase_time_s/<mode>/<phase>``: medians of forward, backward, optimizer, zero_grad;
        ``speedup/<name>``: ``report["speedup"]`` ratios (lora_vs_full, ideal_vs_full, lora_vs_frozen);
        ``overhead_s/lora_minus_frozen`` and ``overhead_s/<component>`` when attributed.
    """
    out: dict[str, list[float]] = {}
    for mode, e in (report.get("modes") or {}).items():
        if (e or {}).get("status") != "ok":
            continue
        st = e.get("step_time_s") or {}
        if st.get("samples"):
            out[f"step_time_s/{mode}"] = [float(v) for v in st["samples"]]
        if st.get("median") is not None:
            out[f"step_time_median_s/{mode}"] = [float(st["median"])]
        for phase, v in (e.get("phase_time_s") or {}).items():
            if v is not None:
                out[f"phase_time_s/{mode}/{phase}"] = [float(v)]
    for name, v in (report.get("speedup") or {}).items():
        if v is not None:
            out[f"speedup/{name}"] = [float(v)]
    att = report.get("attribution") or {}
    if att.get("overhead_s") is not None:
        out["overhead_s/lora_minus_frozen"] = [float(att["overhead_s"])]
        for name, v in (att.get("components") or {}).items():
            if v is not None:
                out[f"overhead_s/{name}"] = [float(v)]
        if att.get("residual_s") is not None:
            out["overhead_s/residual"] = [float(att["residual_s"])]
    return out


def write_scalars(report: dict, out_dir: str | Path) -> Optional[str]:
    """Write the report's scalars as a TensorBoard event file in ``out_dir/tb/scalars/``.

    Args:
        report: the report dict.
        out_dir: the run folder.

    Returns:
        The scalars folder relative to ``out_dir`` (``"tb/scalars"``), or None when the
        tensorboard package is not installed (nothing written; install ``lora_profiler[tb]``).
    """
    try:
        from tensorboard.summary import Writer
    except ImportError:
        return None
    folder = Path(out_dir).joinpath(*SCALARS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):  # an earlier build of this report (e.g.
        old.unlink()                                  # of the run before it was resumed)
    writer = Writer(str(folder))
    try:
        for tag, values in scalar_series(report).items():
            for step, value in enumerate(values):
                writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    return "/".join(SCALARS_DIR)
