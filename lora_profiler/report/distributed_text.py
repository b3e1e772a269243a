"""The ``distributed`` section of a report as text lines (terminal) and markdown."""

from __future__ import annotations

from .units import fmt_bytes, fmt_s


def distributed_lines(d: dict, markdown: bool = False) -> list:
    """Per-rank step times, the slowest rank and the spread, communication per mode."""
    if not d:
        return []
    head = (f"{d['world_size']} ranks ({d['backend']}, {d['wrap']}), global batch "
            f"{d.get('global_batch_size')}")
    out = (["", "## Ranks", "", head, "",
            "| mode | " + " | ".join(f"rank {r}" for r in _ranks(d)) + " | slowest | spread |",
            "|---|" + "---:|" * (len(_ranks(d)) + 2)] if markdown else [f"ranks: {head}"])
    for mode, s in d["step_time"].items():
        cells = [fmt_s(s["per_rank_s"].get(r)) if s["per_rank_s"].get(r) is not None else "n/a" for r in _ranks(d)]
        frac = f"{100 * s['spread_fraction']:.1f}%" if s.get("spread_fraction") is not None else "n/a"
        slow = f"rank {s['slowest_rank']}" if s.get("slowest_rank") is not None else "n/a"
        if markdown:
            out.append(f"| {mode} | " + " | ".join(cells) + f" | {slow} | {frac} |")
        else:
            out.append(f"  {mode:8s} " + "  ".join(cells) + f"   slowest {slow}, spread {frac}")
    out += (["", "| mode | expected bytes/step | measured (per rank) | exposed comm/step | overlap |",
             "|---|---:|---|---:|---:|"] if markdown else ["communication per step:"])
    for mode, c in d["communication"].items():
        got = ", ".join(fmt_bytes(v["gradient_bytes_per_step"]) for v in c["per_rank"].values())
        exp = [v["exposed_per_step_s"] for v in c["per_rank"].values() if v["exposed_per_step_s"] is not None]
        ov = [v["overlap_fraction"] for v in c["per_rank"].values() if v["overlap_fraction"] is not None]
        e = fmt_s(max(exp)) if exp else "n/a"
        o = f"{100 * min(ov):.0f}%" if ov else "n/a"
        ok = {True: "", False: " (differs)", None: ""}[c.get("matches")]
        if markdown:
            out.append(f"| {mode} | {fmt_bytes(c['expected_bytes_per_step'])} | {got}{ok} | {e} | {o} |")
        else:
            out.append(f"  {mode:8s} {fmt_bytes(c['expected_bytes_per_step'])} expected, measured {got}{ok}; "
                       f"exposed {e}, overlap {o}")
    return out


def _ranks(d: dict) -> list:
    return sorted({r for s in d["step_time"].values() for r in s["per_rank_s"]}, key=int)
