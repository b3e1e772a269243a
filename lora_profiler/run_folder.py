"""Reading a run folder: its facts, its per-mode traces and the speedups its timed steps give.

A run folder (docs/FORMAT.md) holds ``facts.json`` and ``tb/<mode>/*.pt.trace.json[.gz]``;
everything after capture starts here. One module so the report, the ``analyze`` command and the
library API read a run the same way. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .analyses.lora import median_step_s


class RunError(ValueError):
    """A run folder that cannot be read (the message names the folder and the fix)."""


def is_run_folder(path: str | Path) -> bool:
    """A lora_profiler run folder holds facts.json and tb/<mode>/ trace folders."""
    path = Path(path)
    return path.is_dir() and (path / "facts.json").is_file() and (path / "tb").is_dir()


def load_facts(run_dir: str | Path) -> dict:
    """``run_dir/facts.json`` as a dict.

    Raises:
        RunError: missing or unreadable facts.json, or not a lora_profiler facts file.
    """
    path = Path(run_dir) / "facts.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: no facts.json; is this a lora_profiler run folder?")
    try:
        facts = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: unreadable ({exc}); re-run python -m lora_profiler.trace") from exc
    if not isinstance(facts, dict) or facts.get("kind") != "lora_profiler.facts":
        raise RunError(f"{path}: not a lora_profiler facts file")
    return facts


def trace_files(run_dir: str | Path, facts: dict) -> dict[str, list[Path]]:
    """mode -> its trace files: those facts.json lists, or else (a run folder written by other
    means) the trace files in ``tb/<mode>/``. Modes without traces are absent. Facts with a
    ``status`` (written by capture, which lists every finished round's files) are taken at their
    word: a file they do not list belongs to a round that did not finish, or is being written."""
    run_dir = Path(run_dir)
    listed = {mode: [run_dir / f for f in entry.get("trace_files") or []]
              for mode, entry in (facts.get("modes") or {}).items()}
    tb = run_dir / "tb"
    for folder in sorted(tb.iterdir()) if tb.is_dir() and "status" not in facts else []:
        if folder.is_dir() and not listed.get(folder.name):
            listed[folder.name] = sorted(f for f in folder.iterdir() if ".json" in f.name)
    return {mode: files for mode, files in sorted(listed.items())
            if files and all(f.is_file() for f in files)}


def load_mode_traces(run_dir: str | Path, facts: dict, modes: Optional[list] = None) -> dict:
    """mode -> loaded Trace for every mode with traces (``modes``: only those).

    Raises:
        TraceError: a mode's trace files cannot be read.
    """
    from .events import load_trace

    return {mode: load_trace([str(f) for f in files]) for mode, files in trace_files(run_dir, facts).items()
            if modes is None or mode in modes}


# speedup name -> (numerator mode, denominator mode): T_a / T_b
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
    from .analyses import stats

    out = {}
    for key, (a, b) in SPEEDUPS.items():
        sa, sb = stats.samples(facts, a), stats.samples(facts, b)
        out[key] = stats.paired_bootstrap(sa, sb, stats.median_ratio) if sa is not None and sb is not None else None
    return out
