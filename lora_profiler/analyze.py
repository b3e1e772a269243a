"""python -m lora_profiler.analyze: what a profiler trace says, without a GPU and without torch.

Reads Chrome/Kineto traces (any machine, any recent or 2021-era torch.profiler, CUDA or ROCm)
and prints GPU kernel time by kind and name, launch costs, GPU idle time, op time and the
dispatch overhead; ``--json`` prints the same as one JSON document. Library entry points:
``analyze_trace(trace)`` (one trace -> dict), ``compare(a, b)`` and ``analyze_run(run_dir)``
(a lora_profiler run folder: one analysis per mode, extended by ``RUN_HOOKS``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .analyses.compare import compare_traces
from .analyses.dispatch import dispatch_overhead
from .analyses.idle import gpu_idle
from .analyses.kernels import kernel_breakdown
from .analyses.launches import launch_stats, launch_table
from .analyses.ops import op_table
from .analyses.summary import headline, per_step
from .events import Trace, TraceError, load_trace

DOC_KIND = "lora_profiler.analysis"
DOC_VERSION = 1
# Called as hook(run_dir, facts, traces, result) after the generic analyses of a run folder;
# a hook adds its findings to ``result`` (e.g. result["attribution"] = ...).
RunHook = Callable[[Path, Dict[str, Any], Dict[str, Trace], Dict[str, Any]], None]
RUN_HOOKS: List[RunHook] = []


def lora_hook(run: Path, facts: Dict[str, Any], traces: Dict[str, Trace], result: Dict[str, Any]) -> None:
    """Add the speedups and LoRA attribution (when the run has lora and frozen traces)."""
    from .analyses.lora import lora_attribution
    from .report.build import speedups

    result["speedup"] = speedups(facts)
    result["attribution"] = lora_attribution(facts, traces)


RUN_HOOKS.append(lora_hook)


def analyze_trace(trace: Trace, top: Optional[int] = 15, steps: bool = True) -> Dict[str, Any]:
    """All generic analyses of one trace as one JSON-serialisable dict (times in us).

    Keys: kind, version, files, device, steps (step windows: one per ProfilerStep of each file),
    events,
    headline (flat figures), gpu {kernel, memcpy, memset: {count, total_us}, by_kind, by_name,
    idle}, launches {count, linked, ..., by_api, by_kernel}, ops, dispatch, per_step, skipped,
    ignored, counts.
    """
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
        "skipped": dict(trace.skipped), "ignored": dict(trace.ignored),
        "counts": dict(trace.counts),
    }


def compare(a: Trace, b: Trace, top: Optional[int] = 15) -> Dict[str, Any]:
    """Side-by-side comparison document of two traces (``a`` is the baseline)."""
    doc = compare_traces(a, b, top=top)
    doc.update({"kind": DOC_KIND + ".compare", "version": DOC_VERSION,
                "a": list(a.files), "b": list(b.files)})
    return doc


def is_run_folder(path: Path) -> bool:
    """A lora_profiler run folder holds facts.json and tb/<mode>/ trace folders."""
    return path.is_dir() and (path / "facts.json").is_file() and (path / "tb").is_dir()


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
        facts = json.loads((run / "facts.json").read_text())
    except (OSError, ValueError) as exc:
        raise TraceError(f"{run / 'facts.json'}: unreadable ({exc}); is {run} a "
                         "lora_profiler run folder?") from exc
    from .report.build import load_mode_traces

    traces: Dict[str, Trace] = load_mode_traces(run, facts)
    result: Dict[str, Any] = {"kind": DOC_KIND + ".run", "version": DOC_VERSION,
                              "run": str(run),
                              "modes": {m: analyze_trace(t, top=top) for m, t in traces.items()}}
    for hook in (RUN_HOOKS if hooks is None else hooks):
        hook(run, facts, traces, result)
    return result


# --- text output -------------------------------------------------------------------------------

def _ms(us: Optional[float]) -> str:
    return "n/a" if us is None else f"{us / 1e3:,.3f}"


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[:width - 3] + "..."


def _table(header: Sequence[str], rows: List[Sequence[Any]], first_width: int = 60) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    widths[0] = min(widths[0], first_width)
    fmt = "  ".join([f"{{:<{widths[0]}}}"] + [f"{{:>{w}}}" for w in widths[1:]])
    return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in rows])


def trace_text(doc: Dict[str, Any]) -> str:
    """Readable tables of an ``analyze_trace`` document."""
    h, g, ls = doc["headline"], doc["gpu"], doc["launches"]
    out = [f"trace: {', '.join(doc['files'])}",
           f"device {doc['device']}, {doc['steps']} ProfilerStep window(s), "
           f"{doc['events']:,} events, {h['ops.count']:,} ops, {h['scopes.count']:,} scopes"
           + (f", {h['skipped']} malformed events skipped" if h["skipped"] else "")]
    if g["total_us"] > 0:
        out.append(f"\nGPU: {g['kernel']['count']:,} kernels {_ms(g['kernel']['total_us'])} ms, "
                   f"{g['memcpy']['count']:,} memcpy {_ms(g['memcpy']['total_us'])} ms, "
                   f"{g['memset']['count']:,} memset {_ms(g['memset']['total_us'])} ms "
                   f"({h['gpu.kernel.unlinked']:,} kernels without a launch in the trace)")
        out.append(_table(["kind", "count", "total ms", "%"],
                          [[r["kind"], f"{r['count']:,}", _ms(r["total_us"]),
                            f"{100 * r['fraction']:.1f}"] for r in g["by_kind"]]))
        out.append(f"\ntop kernels by GPU time ({g['names_total']} names)")
        out.append(_table(["kernel", "kind", "count", "total ms", "mean us", "min us", "max us",
                           "%"],
                          [[_short(r["name"]), r["kind"], f"{r['count']:,}", _ms(r["total_us"]),
                            f"{r['mean_us']:.1f}", f"{r['min_us']:.1f}", f"{r['max_us']:.1f}",
                            f"{100 * r['fraction']:.1f}"] for r in g["by_name"]]))
        d = ls["delay_us"]
        out.append(f"\nlaunches: {ls['count']:,} calls, {ls['linked']:,} with GPU work; CPU "
                   f"{_ms(ls['cpu_us']['total'])} ms (median "
                   f"{ls['cpu_us']['median'] or 0:.1f} us); launch delay median "
                   f"{d['median'] or 0:.1f} us, p95 {d['p95'] or 0:.1f} us; launch-bound "
                   f"kernels {ls['launch_bound']:,} ({100 * ls['launch_bound_fraction']:.1f}%, "
                   f"{_ms(ls['launch_bound_gpu_us'])} ms)")
        idle = g["idle"]
        out.append(_table(["GPU idle (device/stream)", "span ms", "busy ms", "idle ms", "util %",
                           "gaps", f">{idle['long_gap_threshold_us']:.0f}us ms"],
                          [[f"device {r['device']}" + ("" if r["stream"] < 0 else
                                                       f" stream {r['stream']}"),
                            _ms(r["span_us"]), _ms(r["busy_us"]), _ms(r["idle_us"]),
                            f"{100 * r['utilization']:.1f}", f"{r['gaps']:,}",
                            _ms(r["long_gap_us"])] for r in idle["devices"] + idle["streams"]]))
    ops = doc["ops"]
    out.append(f"\ntop ops by {ops['sort_by']} ({ops['names_total']} names, "
               f"{ops['op_count']:,} calls, CPU self {_ms(ops['cpu_self_us'])} ms)")
    out.append(_table(["op", "count", "cpu total ms", "cpu self ms", "gpu self ms",
                       "gpu total ms"],
                      [[_short(r["name"]), f"{r['count']:,}", _ms(r["cpu_total_us"]),
                        _ms(r["cpu_self_us"]), _ms(r["device_self_us"]),
                        _ms(r["device_total_us"])] for r in ops["rows"]]))
    dp = doc["dispatch"]
    out.append(f"\ndispatch overhead: {dp['per_call_us']:.2f} us per op call ({dp['method']}, "
               f"{dp['samples']:,} samples) x {dp['op_calls']:,} calls ~ "
               f"{_ms(dp['overhead_us'])} ms = {100 * dp['overhead_fraction']:.1f}% of op self "
               f"time; {dp['tiny_calls']:,} ops under {dp['tiny_threshold_us']:.0f} us spend "
               f"{_ms(dp['tiny_self_us'])} ms")
    if doc["per_step"]:
        out.append("\nper step")
        out.append(_table(["step", "wall ms", "kernels", "gpu ms", "gpu idle ms", "launches",
                           "launch-bound", "ops", "op self ms"],
                          [[r["step"], _ms(r["wall_us"]), f"{r['gpu.kernel.count']:,}",
                            _ms(r["gpu.kernel.total_us"]), _ms(r["gpu.idle_us"]),
                            f"{r['launches.count']:,}", f"{r['launches.launch_bound']:,}",
                            f"{r['ops.count']:,}", _ms(r["ops.self_us"])]
                           for r in doc["per_step"]], first_width=8))
    return "\n".join(out)


def compare_text(doc: Dict[str, Any]) -> str:
    """Readable side-by-side tables of a ``compare`` document."""
    out = [f"a: {', '.join(doc['a'])}", f"b: {', '.join(doc['b'])}"]
    out.append(_table(["figure", "a", "b", "b - a"],
                      [[k, _num(v["a"]), _num(v.get("b")), _num(v.get("delta", ""))]
                       for k, v in doc["headline"].items()], first_width=24))
    for what, unit in (("kernels", "GPU"), ("ops", "CPU self")):
        out.append(f"\n{what} with the largest {unit} time change")
        out.append(_table([what[:-1], "count a", "count b", "ms a", "ms b", "delta ms"],
                          [[_short(r["name"]), f"{r['count_a']:,}", f"{r['count_b']:,}",
                            _ms(r["total_us_a"]), _ms(r["total_us_b"]), _ms(r["delta_us"])]
                           for r in doc[what]]))
    return "\n".join(out)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# --- command line ------------------------------------------------------------------------------

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
    p.add_argument("--scope-prefix", default="lp/", metavar="PREFIX",
                   help="record_function names starting with PREFIX are scopes (default lp/)")
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
