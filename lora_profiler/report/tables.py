"""The report's tables as ``Table`` objects: one source for the notebook display, the HTML report
and ``to_pandas()``.

Each function takes a report dict (``report.json`` loaded) or its ``attribution`` and returns a
``lora_profiler.table.Table`` of raw values (seconds, bytes, ratios) with formats for people.
``Attribution`` wraps ``report["attribution"]`` as a result object: a short ``repr`` (the causes
with their spread), an HTML table in notebooks, and the other tables as methods.
"""

from __future__ import annotations

from typing import Optional

from ..table import Column, Table, Tabular, fmt_count, fmt_pct, fmt_x
from .units import fmt_bytes, fmt_s

__all__ = ["modes_table", "speedup_table", "causes_table", "groups_table", "vs_full_table",
           "validation_table", "reliability_table", "by_layer_table", "notes", "Attribution"]


def _s(v) -> str:
    return "" if v is None else fmt_s(v)


def _b(v) -> str:
    return "" if v is None else fmt_bytes(v)


def _interval(ci: Optional[list], fmt=fmt_s) -> str:
    return f" (95% interval {fmt(ci[0])} – {fmt(ci[1])})" if ci else ""


def modes_table(report: dict) -> Table:
    """Step time per mode (median, min, max, IQR over the timed steps), trainable parameters,
    saved activations and peak memory; a failed mode shows its error."""
    peaks = (report.get("attribution") or {}).get("peak_memory_bytes") or {}
    rows = []
    for mode, e in (report.get("modes") or {}).items():
        st = e.get("step_time_s") or {}
        ok = e.get("status") == "ok"
        rows.append((mode, e.get("status"), st.get("median") if ok else None, st.get("min") if ok else None,
                     st.get("max") if ok else None, st.get("iqr") if ok else None, st.get("n") if ok else None,
                     e.get("trainable_params"), (e.get("saved_activations") or {}).get("total_bytes"),
                     peaks.get(mode, (e.get("memory") or {}).get("peak_bytes")), e.get("error") or ""))
    return Table([Column("mode"), Column("status"), Column("median_s", "median", _s), Column("min_s", "min", _s),
                  Column("max_s", "max", _s), Column("iqr_s", "IQR", _s), Column("steps", "n", fmt_count),
                  Column("trainable_params", "trainable", fmt_count),
                  Column("saved_activation_bytes", "saved activations", _b),
                  Column("peak_memory_bytes", "peak memory", _b), Column("error")],
                 rows, title="step time per mode (timed steps: no profiler, no hooks)")


SPEEDUP_MEANING = {"lora_vs_full": "LoRA over full fine-tuning, T_full / T_lora",
                   "ideal_vs_full": "the frozen floor over full fine-tuning, T_full / T_frozen (the ideal)",
                   "lora_vs_frozen": "LoRA against the floor, T_frozen / T_lora"}


def speedup_table(report: dict) -> Table:
    """The speedups with their 95% intervals (bootstrap over the timed rounds)."""
    sp, ci = report.get("speedup") or {}, report.get("speedup_ci") or {}
    rows = [(key, sp.get(key), (ci.get(key) or [None, None])[0], (ci.get(key) or [None, None])[1], meaning)
            for key, meaning in SPEEDUP_MEANING.items()]
    return Table([Column("speedup"), Column("ratio", fmt=fmt_x), Column("ci_low", "95% low", fmt_x),
                  Column("ci_high", "95% high", fmt_x), Column("meaning")], rows, title="speedups")


def causes_table(att: dict) -> Table:
    """LoRA's overhead over the frozen floor, cause by cause: the trimmed mean over the profiled
    rounds, its min and max, and its share of the overhead; the residual last."""
    total = att.get("overhead_s")
    labels = att.get("labels") or {}
    rows = []
    for name, c in sorted((att.get("causes") or {}).items(), key=lambda kv: -abs(kv[1].get("seconds") or 0)):
        if not c.get("seconds") and not c.get("clipped") and not c.get("min") and not c.get("max"):
            continue  # a cause this run does not have (weight gradients under LoRA, ...)
        sec = c.get("seconds")
        rows.append((name, labels.get(name, name) + (" (clipped at 0)" if c.get("clipped") else ""), sec,
                     c.get("min"), c.get("max"), sec / total if sec is not None and total else None))
    res = att.get("residual_s")
    rows.append(("residual", "residual (unexplained)", res, None, None, res / total if res is not None and total else None))
    title = (f"LoRA overhead over the frozen floor: {_s(total)} per step{_interval(att.get('overhead_ci_s'))}; "
             f"causes over {att.get('rounds')} profiled rounds")
    return Table([Column("cause"), Column("label", "what"), Column("seconds", "per step", _s),
                  Column("min_s", "min", _s), Column("max_s", "max", _s), Column("share", fmt=fmt_pct)],
                 rows, title=title, max_rows=None)


def groups_table(att: dict) -> Table:
    """The groups of causes (sums; min and max of the per-round sums)."""
    rows = [(g, v.get("seconds"), v.get("min"), v.get("max"), ", ".join(v.get("causes") or []))
            for g, v in sorted((att.get("groups") or {}).items(), key=lambda kv: -abs(kv[1].get("seconds") or 0))]
    return Table([Column("group"), Column("seconds", "per step", _s), Column("min_s", "min", _s),
                  Column("max_s", "max", _s), Column("causes")], rows, title="groups of causes")


def vs_full_table(att: dict) -> Table:
    """Per cause: what LoRA adds over the floor, what full fine-tuning adds, what LoRA saves."""
    vf = att.get("vs_full") or {}
    rows = [(r["cause"], r["label"], r.get("lora_s"), r.get("full_s"), r.get("saved_s")) for r in vf.get("table") or []
            if any(abs(r.get(k) or 0) >= 1e-5 for k in ("lora_s", "full_s"))]
    title = (f"LoRA against full fine-tuning: T_full − T_frozen = {_s(vf.get('overhead_s'))}; LoRA saves "
             f"{_s(vf.get('net_saving_s'))}{_interval(vf.get('net_saving_ci_s'))}") if vf else "no full fine-tuning mode"
    return Table([Column("cause"), Column("label", "what"), Column("lora_s", "LoRA − frozen", _s),
                  Column("full_s", "full − frozen", _s), Column("saved_s", "LoRA saves", _s)], rows, title=title,
                 max_rows=None)


def validation_table(att: dict) -> Table:
    """Each ablation: the saving the causes predict against the saving measured."""
    rows = []
    for r in att.get("validation") or []:
        ci = r.get("ci_s") or [None, None]
        verdict = (r.get("verdict") or ("agrees" if r.get("agrees") else "disagrees")) \
            if r.get("agrees") is not None else "not checked"
        rows.append((r["variant"], r.get("predicted_s"), r.get("measured_s"), ci[0], ci[1], verdict, r.get("why") or ""))
    return Table([Column("variant"), Column("predicted_s", "predicted", _s), Column("measured_s", "measured", _s),
                  Column("ci_low_s", "95% low", _s), Column("ci_high_s", "95% high", _s), Column("verdict"),
                  Column("why")], rows, title="validation by ablation (saving = T_lora − T_variant)")


def reliability_table(att: dict) -> Table:
    """The numbers not to trust, and why."""
    rows = [(f["numbers"], f["reason"]) for f in att.get("reliability") or []]
    return Table([Column("numbers"), Column("reason")], rows, title="unreliable numbers", max_rows=None)


def by_layer_table(att: dict) -> Table:
    """The adapter causes per adapted layer (seconds per step)."""
    layers = att.get("by_layer") or {}
    parts = sorted({p for v in layers.values() for p in v})
    rows = [(layer,) + tuple(v.get(p) for p in parts) + (sum(v.get(p) or 0.0 for p in parts),)
            for layer, v in layers.items()]
    return Table([Column("layer")] + [Column(f"{p}_s", p, _s) for p in parts] + [Column("total_s", "total", _s)],
                 rows, title="adapter causes per adapted layer")


def notes(report: dict) -> list[str]:
    """Every note of a report, once: the workload's, the attribution's and the report's own."""
    att = report.get("attribution") or {}
    out: list[str] = []
    for n in ((report.get("workload") or {}).get("notes") or []) + (att.get("notes") or []) + (report.get("notes") or []):
        if n not in out:
            out.append(n)
    return out


class Attribution(Tabular):
    """``report["attribution"]`` as a result: ``repr`` and the notebook show the causes of LoRA's
    overhead with their spread; ``raw`` is the dict (docs/FORMAT.md).

    Attributes:
        overhead_s: T_lora − T_frozen per step (paired trimmed mean of the timed steps).
        overhead_ci_s: its 95% interval, or None.
        residual_s: overhead − sum of causes.
        causes: cause -> {"seconds", "min", "max", "n", ...}.
    """

    def __init__(self, att: dict):
        self.raw = att
        self.overhead_s: Optional[float] = att.get("overhead_s")
        self.overhead_ci_s: Optional[list] = att.get("overhead_ci_s")
        self.residual_s: Optional[float] = att.get("residual_s")
        self.causes: dict = att.get("causes") or {}

    def table(self) -> Table:
        t = causes_table(self.raw)
        t.notes = [f"unreliable: {f['numbers']} — {f['reason']}" for f in self.raw.get("reliability") or []]
        return t

    def largest(self, n: int = 3) -> list[tuple[str, str, float]]:
        """The ``n`` causes adding the most time: (cause, label, seconds), positive ones only."""
        labels = self.raw.get("labels") or {}
        got = sorted(((c, labels.get(c, c), v["seconds"]) for c, v in self.causes.items()
                      if (v.get("seconds") or 0) > 0), key=lambda t: -t[2])
        return got[:n]

    def share(self, cause: str) -> Optional[float]:
        """A cause's share of the overhead (None without an overhead)."""
        sec = (self.causes.get(cause) or {}).get("seconds")
        return sec / self.overhead_s if sec is not None and self.overhead_s else None

    def groups(self) -> Table:
        return groups_table(self.raw)

    def vs_full(self) -> Table:
        return vs_full_table(self.raw)

    def validation(self) -> Table:
        return validation_table(self.raw)

    def reliability(self) -> Table:
        return reliability_table(self.raw)

    def by_layer(self) -> Table:
        return by_layer_table(self.raw)
