"""Build report.json (and report.md, report.html, figures, TensorBoard scalars) for a run folder from its
files alone: ``facts.json`` and the per-mode traces under ``tb/``. Never runs the model, so a
run made on a GPU machine can be reported on a laptop."""

from __future__ import annotations

from pathlib import Path

from ..fileio import write_atomic, write_json
# Run-folder reading lives below the report (run_folder); re-exported here for older imports.
from ..run_folder import (SPEEDUPS, RunError, load_facts, load_mode_traces, speedup_intervals,  # noqa: F401
                          speedups)
from ..runstate import incomplete_line

REPORT_VERSION = 2


def comparison(facts: dict) -> list:
    """One row per training mode and strategy (not the ablation variants): median step time,
    speedup over full fine-tuning with its 95% interval, trainable parameters, saved activations,
    the first step (it compiles or allocates), and whether it was profiled."""
    from ..analyses import stats
    from ..analyses.lora import median_step_s

    rows = []
    full = stats.samples(facts, "full")
    for mode, e in (facts.get("modes") or {}).items():
        if mode == "forward" or (e.get("variant_of") and not e.get("strategy")):
            continue
        row = {"mode": mode, "status": e.get("status"), "strategy": bool(e.get("strategy")),
               "step_s": median_step_s(facts, mode), "speedup_vs_full": None, "speedup_vs_full_ci": None,
               "trainable_params": e.get("trainable_params"),
               "saved_activation_bytes": (e.get("saved_activations") or {}).get("total_bytes"),
               "first_step_s": e.get("first_step_s"), "profiled": bool(e.get("trace_files"))}
        s = stats.samples(facts, mode)
        if full is not None and s is not None:
            row["speedup_vs_full"] = stats.median_ratio(full, s)
            row["speedup_vs_full_ci"] = stats.paired_bootstrap(full, s, stats.median_ratio)
        rows.append(row)
    return rows


def build_report(run_dir: str | Path, figures: bool = True) -> dict:
    """Analyse a run folder and write report.json, report.md, report.html, figures and TensorBoard
    scalars.

    Args:
        run_dir: a folder written by ``python -m lora_profiler.trace``.
        figures: draw the run figures into ``run_dir/figures``.

    Returns:
        The report dict (as written).
    """
    from ..analyses.lora import lora_attribution, mode_traces

    run_dir = Path(run_dir)
    facts = load_facts(run_dir)
    report = dict(facts)
    report["kind"] = "lora_profiler.report"
    report["version"] = REPORT_VERSION
    report["speedup"] = speedups(facts)
    report["speedup_ci"] = speedup_intervals(facts)
    report["comparison"] = comparison(facts)
    traces = load_mode_traces(run_dir, facts)
    report["attribution"] = lora_attribution(facts, traces, mode_traces(facts, traces))
    from ..analyses.prediction import load_census, prediction

    report["prediction"] = prediction(facts, load_census(run_dir))
    report["analysis"] = {mode: _generic(trace) for mode, trace in traces.items()}
    if facts.get("distributed"):
        from ..analyses.distributed import distributed_summary

        report["distributed"] = distributed_summary(facts, _rank_traces(run_dir, facts, traces))
    report["figures"] = []
    report["notes"] = []
    unfinished = incomplete_line(facts, str(run_dir))
    if unfinished:
        report["notes"].append(unfinished)
    if figures:
        try:
            from .figures import draw_run_figures
        except ImportError as exc:  # matplotlib missing
            report["notes"].append(f"figures skipped: {exc}")
        else:
            report["figures"] = draw_run_figures(report, run_dir)
    try:
        from .tensorboard import write_scalars
    except ImportError:
        pass
    else:
        report["tensorboard_scalars"] = write_scalars(report, run_dir)
        if report["tensorboard_scalars"] is None:
            report["notes"].append("TensorBoard scalars skipped: pip install 'lora_profiler[tb]'")
    write_json(run_dir / "report.json", report)
    from .markdown import report_markdown

    write_atomic(run_dir / "report.md", report_markdown(report))
    from .html import write_html

    write_html(report, run_dir)
    return report


def _generic(trace) -> dict:
    """The generic per-trace analyses (kernel/op breakdown, launches), when available."""
    from ..analyses.summary import headline, per_step

    return {"whole": headline(trace), "steps": per_step(trace)}


def _rank_traces(run_dir: Path, facts: dict, rank0: dict) -> dict:
    """rank -> mode -> Trace of that rank's trace files (rank 0's already loaded)."""
    from ..events import load_trace

    out = {0: rank0}
    for r in (facts.get("distributed") or {}).get("ranks") or []:
        if not r or r.get("rank") == 0:
            continue
        got = {}
        for mode, e in (r.get("modes") or {}).items():
            files = [run_dir / f for f in e.get("trace_files") or []]
            if files and all(f.is_file() for f in files):
                got[mode] = load_trace(files)
        out[r["rank"]] = got
    return out
