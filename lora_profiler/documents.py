"""The analysis documents of ``python -m lora_profiler.analyze``: plain JSON-serialisable dicts.

``analyze_trace(trace)`` (one trace: every generic analysis), ``compare(a, b)`` (two traces side
by side) and ``analyze_run(run_dir)`` (a lora_profiler run folder: one analysis per mode,
extended by ``RUN_HOOKS``; the LoRA attribution is such a hook). ``--json`` prints them;
``report.trace_text`` renders them as tables. For notebooks, the result objects of
``lora_profiler.analyses`` (``kernel_breakdown(trace)`` ...) and ``lora_profiler.Run`` are the
friendlier door. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .analyses.compare import compare_traces
from .analyses.dispatch import dispatch_overhead
from .analyses.idle import gpu_idle
from .analyses.kernels import kernel_breakdown
from .analyses.launches import launch_stats, launch_table
from .analyses.ops import op_table
from .analyses.summary import headline, per_step
from .events import Trace, TraceError
from .run_folder import RunError, is_run_folder, load_facts, load_mode_traces, speedups

__all__ = ["DOC_KIND", "DOC_VERSION", "RunHook", "RUN_HOOKS", "lora_hook", "analyze_trace", "compare",
           "analyze_run", "is_run_folder"]

DOC_KIND = "lora_profiler.analysis"
DOC_VERSION = 1
# Called as hook(run_dir, facts, traces, result) after the generic analyses of a run folder;
# a hook adds its findings to ``result`` (e.g. result["attribution"] = ...).
RunHook = Callable[[Path, Dict[str, Any], Dict[str, Trace], Dict[str, Any]], None]
RUN_HOOKS: List[RunHook] = []


def lora_hook(run: Path, facts: Dict[str, Any], traces: Dict[str, Trace], result: Dict[str, Any]) -> None:
    """Add the speedups and LoRA attribution (when the run has lora and frozen traces)."""
    from .analyses.lora import lora_attribution

    result["speedup"] = speedups(facts)
    result["attribution"] = lora_attribution(facts, traces)


RUN_HOOKS.append(lora_hook)


def analyze_trace(trace: Trace, top: Optional[int] = 15, steps: bool = True) -> Dict[str, Any]:
    """All generic analyses of one trace as one JSON-serialisable dict (times in us).

    Keys: kind, version, files, device, steps (step windows: one per ProfilerStep of each file),
    events,
    headline (flat figures), gpu {kernel, memcpy, memset: {count, total_us}, by_kind, by_name,
    idle}, launches {count, linked, ..., by_api, by_kernel}, ops, dispatch, per_step,
    communication (``analyses.communication``), ranks (``analyses.ranks``: per-rank figures, None
    for one rank), skipped, ignored, counts.
    """
    from .analyses.communication import Collectives
    from .analyses.ranks import rank_analysis

    coll = Collectives(trace)
    comm = coll.summary()
    if not steps:
        comm["per_step"] = []
    kb = kernel_breakdown(trace, top=top)
    ls = launch_stats(trace).to_dict()
    ls["by_kernel"] = launch_table(trace, top=top)
    return {
        "kind": DOC_KIND, "version": DOC_VERSION, "files": list(trace.files),
        "device": trace.device, "steps": len(trace.steps),
        "events": int(trace.counts.get("events", 0)),
        "headline": headline(trace),
        "gpu": {"kernel": {"count": kb.kernel_count, "total_us": kb.kernel_total_us},
                "memcpy": {"count": kb.memcpy_count, "total_us": kb.memcpy_total_us},
                "memset": {"count": kb.memset_count, "total_us": kb.memset_total_us},
                "total_us": kb.total_us, "names_total": kb.names_total,
                "by_kind": [r.__dict__ for r in kb.by_kind],
                "by_name": [r.__dict__ for r in kb.by_name],
                "idle": gpu_idle(trace).to_dict()},
        "launches": ls,
        "ops": op_table(trace, top=top).to_dict(),
        "dispatch": dispatch_overhead(trace, top=top).to_dict(),
        "per_step": per_step(trace) if steps else [],
        "communication": comm,
        "ranks": rank_analysis(trace, coll),
        "skipped": dict(trace.skipped), "ignored": dict(trace.ignored),
        "counts": dict(trace.counts),
    }


def compare(a: Trace, b: Trace, top: Optional[int] = 15) -> Dict[str, Any]:
    """Side-by-side comparison document of two traces (``a`` is the baseline)."""
    doc = compare_traces(a, b, top=top)
    doc.update({"kind": DOC_KIND + ".compare", "version": DOC_VERSION,
                "a": list(a.files), "b": list(b.files)})
    return doc


def analyze_run(run_dir, top: Optional[int] = 15,
                hooks: Optional[Sequence[RunHook]] = None) -> Dict[str, Any]:
    """Analyse every mode's trace of a run folder.

    Args:
        run_dir: folder written by ``python -m lora_profiler.trace`` (facts.json, tb/<mode>/).
        top: rows kept in the per-name tables.
        hooks: called after the generic analyses (default: ``RUN_HOOKS``), see ``RunHook``.

    Returns:
        {"kind", "version", "run": str, "modes": {mode: analyze_trace(...)}, ...hook keys}.

    Raises:
        TraceError: no facts.json, unreadable facts, or a mode's traces cannot be read.
    """
    run = Path(run_dir)
    try:
        facts = load_facts(run)
    except RunError as exc:
        raise TraceError(str(exc)) from exc  # one error type for the command line: exit 2
    traces: Dict[str, Trace] = load_mode_traces(run, facts)
    result: Dict[str, Any] = {"kind": DOC_KIND + ".run", "version": DOC_VERSION,
                              "run": str(run),
                              "modes": {m: analyze_trace(t, top=top) for m, t in traces.items()}}
    for hook in (RUN_HOOKS if hooks is None else hooks):
        hook(run, facts, traces, result)
    return result
