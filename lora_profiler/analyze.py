"""python -m lora_profiler.analyze: what a profiler trace says, without a GPU and without torch.

Reads Chrome/Kineto traces (any machine, any recent or 2021-era torch.profiler, CUDA or ROCm)
and prints GPU kernel time by kind and name, launch costs, GPU idle time, op time and the
dispatch overhead; ``--json`` prints the same as one JSON document. A thin command line over
``lora_profiler.documents`` (the documents: ``analyze_trace``, ``compare``, ``analyze_run``,
re-exported here) and ``lora_profiler.report.trace_text`` (their tables).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence

from .documents import (DOC_KIND, DOC_VERSION, RUN_HOOKS, RunHook, analyze_run, analyze_trace,  # noqa: F401
                        compare, is_run_folder, lora_hook)
from .events import Trace, TraceError, load_trace
from .names import SCOPE_PREFIX
from .report.trace_text import compare_text, trace_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lora_profiler.analyze",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Analyse torch.profiler (Kineto) traces: GPU kernel time by kind and name, launch\n"
            "cost and launch-bound kernels, GPU idle time, op time with the GPU time each op\n"
            "caused, and the per-op dispatch overhead. Works on CPU-only machines and on traces\n"
            "from CUDA or ROCm, current or 2021-era torch.profiler."),
        epilog=(
            "examples:\n"
            "  python -m lora_profiler.analyze trace.pt.trace.json.gz\n"
            "  python -m lora_profiler.analyze tb/ --step 3 --top 30     # a folder of ranks\n"
            "  python -m lora_profiler.analyze runs/x/tb/full --compare runs/x/tb/lora\n"
            "  python -m lora_profiler.analyze runs/x                    # run folder: each mode\n"
            "  python -m lora_profiler.analyze trace.json --json | jq .gpu.kernel.count\n\n"
            "Times are microseconds (us) in JSON and milliseconds (ms) in tables. Without --json\n"
            "the last line printed is one JSON object with the headline figures.\n"
            "Exit status: 0 ok, 2 unreadable input (one line on stderr naming the file)."))
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="trace file (.json or .json.gz), folder of per-rank trace files, or a "
                        "lora_profiler run folder (facts.json + tb/<mode>/); several paths are "
                        "read as one trace (e.g. the ranks of one job)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout instead of tables")
    p.add_argument("--compare", metavar="OTHER", nargs="+",
                   help="a second trace (file or folder) to set beside PATH: headline figures, "
                        "then kernels and ops with the largest time change (b - a)")
    p.add_argument("--step", type=int, metavar="N",
                   help="analyse only ProfilerStep#N (see the per-step table for the numbers)")
    p.add_argument("--top", type=int, default=15, metavar="K",
                   help="rows in the per-name tables (default 15; 0 for all)")
    p.add_argument("--scope-prefix", default=SCOPE_PREFIX, metavar="PREFIX",
                   help=f"record_function names starting with PREFIX are scopes (default {SCOPE_PREFIX})")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback on errors")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    top = args.top if args.top > 0 else None
    try:
        doc, text, head = _run(args, top)
    except TraceError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line for users, traceback with --debug
        if args.debug:
            raise
        print(f"error: internal error {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, allow_nan=False, default=_json_default))
    else:
        print(text)
        print(json.dumps(head, allow_nan=False, default=_json_default))
    return 0


def _run(args, top):
    """(document, text, headline) for the parsed arguments."""
    paths = [Path(p) for p in args.paths]
    if len(paths) == 1 and is_run_folder(paths[0]) and not args.compare:
        doc = analyze_run(paths[0], top=top)
        text = "\n\n".join(f"== mode {m}\n" + trace_text(d) for m, d in doc["modes"].items())
        head = {m: d["headline"] for m, d in doc["modes"].items()}
        if doc.get("attribution"):
            from .report.text import attribution_text

            text += "\n\n== LoRA against the frozen floor\n" + attribution_text(doc["attribution"])
            head["attribution"] = {k: doc["attribution"][k] for k in ("overhead_s", "residual_s", "components")}
        return doc, text, head
    a = _load(paths, args)
    if args.compare:
        b = _load([Path(p) for p in args.compare], args)
        doc = compare(a, b, top=top)
        head = {k: v.get("delta", v.get("b")) for k, v in doc["headline"].items()}
        return doc, compare_text(doc), head
    doc = analyze_trace(a, top=top, steps=args.step is None)
    if args.step is not None:
        doc["step"] = args.step
    return doc, trace_text(doc), doc["headline"]


def _load(paths: List[Path], args) -> Trace:
    trace = load_trace(paths, scope_prefix=args.scope_prefix)
    return trace.for_step(args.step) if args.step is not None else trace


def _json_default(o: Any) -> Any:
    """numpy scalars -> Python numbers (the analyses return Python types; this is a guard)."""
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main())
