"""Build report.json (and report.md, figures) for a run folder from its files alone.

Reads ``facts.json`` and the per-mode traces under ``tb/``; never runs the model. So a run made
on a GPU machine can be reported on a laptop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..fileio import write_atomic, write_json

REPORT_VERSION = 1


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


def _median(facts: dict, mode: str) -> Optional[float]:
    entry = facts["modes"].get(mode) or {}
    if entry.get("status") != "ok":
        return None
    return (entry.get("step_time_s") or {}).get("median")


def speedups(facts: dict) -> dict:
    """Ratios of median step times (None where a mode is missing or failed)."""
    full, lora, frozen = (_median(facts, m) for m in ("full", "lora", "frozen"))

    def ratio(a, b):
        return a / b if a is not None and b else None

    return {"lora_vs_full": ratio(full, lora), "ideal_vs_full": ratio(full, frozen),
            "lora_vs_frozen": ratio(frozen, lora)}


def build_report(run_dir: str | Path, figures: bool = True) -> dict:
    """Analyse a run folder and write report.json, report.md (and figures).

    Args:
        run_dir: a folder written by ``python -m lora_profiler.trace``.
        figures: draw the run figures into ``run_dir/figures``.

    Returns:
        The report dict (as written).
    """
    run_dir = Path(run_dir)
    facts = load_facts(run_dir)
    report = dict(facts)
    report["kind"] = "lora_profiler.report"
    report["version"] = REPORT_VERSION
    report["speedup"] = speedups(facts)
    report["attribution"] = None
    report["analysis"] = {}
    report["figures"] = []
    write_json(run_dir / "report.json", report)
    from .markdown import report_markdown

    write_atomic(run_dir / "report.md", report_markdown(report))
    return report
