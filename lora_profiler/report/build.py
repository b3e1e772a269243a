"""Build report.json (and report.md, figures, TensorBoard scalars) for a run folder from its
files alone: ``facts.json`` and the per-mode traces under ``tb/``. Never runs the model, so a
run made on a GPU machine can be reported on a laptop."""

from __future__ import annotations

import json
from pathlib import Path

from ..analyses.lora import median_step_s
from ..fileio import write_atomic, write_json
from ..runstate import incomplete_line

REPORT_VERSION = 2


class RunError(ValueError):
    """A run folder that cannot be reported (message names the folder and the fix)."""


def load_facts(run_dir: str | Path) -> dict:
    """``run_dir/facts.json`` as a dict.

    Raises:
        RunError: missing or unreadable facts.json.
    """
    path = Path(run_dir) / "facts.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: no facts.json; is this a lora_profiler run folder?")
    try:
        facts = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: unreadable ({exc}); re-run python -m lora_profiler.trace")
    if facts.get("kind") != "lora_profiler.facts":
        raise RunError(f"{path}: not a lora_profiler facts file")
    return facts


SPEEDUPS = {"lora_vs_full": ("full", "lora"), "ideal_vs_full": ("full", "frozen"),
            "lora_vs_frozen": ("frozen", "lora")}


def speedups(facts: dict) -> dict:
    """Ratios of median step times (None where a mode is missing or failed)."""
    def ratio(a, b):
        a, b = median_step_s(facts, a), median_step_s(facts, b)
        return a / b if a is not None and b else None

    return {key: ratio(a, b) for key, (a, b) in SPEEDUPS.items()}


def speedup_intervals(facts: dict) -> dict:
    """95% intervals of the speedups: bootstrap over the timed rounds, each round's samples of
    the two modes kept together (None with fewer than 3 rounds or a missing mode)."""
    from ..analyses import stats

    out = {}
    for key, (a, b) in SPEEDUPS.items():
        sa, sb = stats.samples(facts, a), stats.samples(facts, b)
        out[key] = stats.paired_bootstrap(sa, sb, stats.median_ratio) if sa is not None and sb is not None else None
    return out


def load_mode_traces(run_dir: Path, facts: dict) -> dict:
    """mode -> Trace for every mode with traces: the files facts.json lists, or else (a run
    folder written by other means) the trace files in ``tb/<mode>/``. Facts with a ``status``
    (written by capture, which lists every finished round's files) are taken at their word: a
    file they do not list belongs to a round that did not finish, or is being written.

    Raises:
        TraceError: a mode's trace files cannot be read.
    """
    from ..events import load_trace

    run_dir = Path(run_dir)
    listed = {mode: [run_dir / f for f in entry.get("trace_files") or []]
              for mode, entry in (facts.get("modes") or {}).items()}
    tb = run_dir / "tb"
    for folder in sorted(tb.iterdir()) if tb.is_dir() and "status" not in facts else []:
        if folder.is_dir() and folder.name != "scalars" and not listed.get(folder.name):
            listed[folder.name] = sorted(f for f in folder.iterdir() if ".json" in f.name)
    return {mode: load_trace([str(f) for f in files]) for mode, files in sorted(listed.items())
            if files and all(f.is_file() for f in files)}


def build_report(run_dir: str | Path, figures: bool = True) -> dict:
    """Analyse a run folder and write report.json, report.md, figures and TensorBoard scalars.

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
    traces = load_mode_traces(run_dir, facts)
    report["attribution"] = lora_attribution(facts, traces, mode_traces(facts, traces))
    report["analysis"] = {mode: _generic(trace) for mode, trace in traces.items()}
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
    return report


def _generic(trace) -> dict:
    """The generic per-trace analyses (kernel/op breakdown, launches), when available."""
    from ..analyses.summary import headline, per_step

    return {"whole": headline(trace), "steps": per_step(trace)}
