"""Readable tables of the ``analyze`` documents (``lora_profiler.documents``): one trace, or two
side by side. Times are milliseconds in tables (the documents hold microseconds)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

__all__ = ["trace_text", "compare_text"]


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
