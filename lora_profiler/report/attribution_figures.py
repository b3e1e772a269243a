"""Figures of the attribution, drawn from a report dict alone.

- (b) ``overhead_figure``: LoRA's overhead over the frozen floor, cause by cause, each a trimmed mean
  with its min–max over the profiled rounds; the measured overhead with its 95% interval; the
  residual. Negative causes (time LoRA saves, e.g. the floor's input gradients it skips) are
  drawn to the left of zero, never hidden behind the others.
- (e) ``validation_figure``: each ablation's predicted saving against the saving measured, with
  the measured 95% interval, and y = x.
- (f) ``vs_full_figure``: LoRA − frozen and full − frozen side by side, per cause: what LoRA
  added against what full fine-tuning costs over the same floor.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from . import style
from .style import ADAPTER, NEUTRAL, label_device, mode_color


class FigureDataError(ValueError):
    """The report lacks the data a figure is drawn from (the message names the key)."""


def _attribution(report: dict, key: str):
    att = report.get("attribution")
    if not att:
        raise FigureDataError("report['attribution'] is null: the run has no profiled lora and "
                              "frozen traces (--no-profile, a failed mode) or attribution did not run")
    value = att.get(key)
    if not value:
        raise FigureDataError(f"report['attribution']['{key}'] is missing or empty")
    return value


def _causes_shown(causes: dict, total: float) -> list:
    """(name, entry) of the causes worth a bar: non-zero ones, largest magnitude first."""
    floor = 0.001 * abs(total or 1.0)
    items = [(n, c) for n, c in causes.items()
             if abs(c.get("seconds") or 0.0) > floor or abs(c.get("max") or 0.0) > floor
             or abs(c.get("min") or 0.0) > floor]
    return sorted(items, key=lambda kv: -abs(kv[1]["seconds"] or 0.0))


def overhead_figure(report: dict) -> Figure:
    """(b) Where LoRA's overhead over the frozen floor goes, with the spread of every cause.

    Raises:
        FigureDataError: attribution null or without causes.
    """
    causes = _attribution(report, "causes")
    att = report["attribution"]
    total = att.get("overhead_s")
    if total is None:
        raise FigureDataError("report['attribution']['overhead_s'] is missing")
    labels = att.get("labels") or {}
    items = _causes_shown(causes, total)
    residual = att.get("residual_s") or 0.0
    rows = [("measured overhead\nT_lora − T_frozen", total, att.get("overhead_ci_s"), ADAPTER, None)]
    for i, (name, c) in enumerate(items):
        color = style.CATEGORY_COLORS[i % len(style.CATEGORY_COLORS)]
        rows.append((labels.get(name, name), c["seconds"], [c.get("min"), c.get("max")], color, None))
    rows.append(("residual (unexplained)", residual, None, "white", "xxxx"))
    vals = [abs(v or 0) for _, v, _, _, _ in rows] + [abs(x) for _, _, ci, _, _ in rows if ci for x in ci if x is not None]
    unit, k = style.time_unit(max(vals + [1e-9]))
    with style.paper_style():
        fig, ax = style.new_figure(style.COLUMN_IN, 0.9 + 0.22 * len(rows))
        y = np.arange(len(rows))
        for yi, (label, v, ci, color, hatch) in zip(y, rows):
            v = v or 0.0
            ax.barh(yi, v * k, height=0.62, color=color, edgecolor=NEUTRAL if hatch else "white",
                    hatch=hatch, linewidth=0.5)
            if ci and ci[0] is not None and ci[1] is not None:
                lo, hi = min(ci[0], v), max(ci[1], v)
                ax.errorbar(v * k, yi, xerr=[[max(v - lo, 0) * k], [max(hi - v, 0) * k]], fmt="none",
                            ecolor="black", elinewidth=0.7, capsize=2)
            share = f" ({100 * v / total:.0f}%)" if total and yi > 0 else ""
            ax.annotate(f"{v * k:.3g}{share}", (max(v, 0) * k if v >= 0 else v * k, yi),
                        xytext=(3 if v >= 0 else -3, 0), textcoords="offset points", va="center",
                        ha="left" if v >= 0 else "right", fontsize=6)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.axhline(0.5, color=NEUTRAL, linewidth=0.5, linestyle=":")
        ax.set_yticks(y, [r[0] for r in rows], fontsize=6.5)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        # the axis fits the bars and the overhead's interval; a whisker running past it is clipped
        # at the edge (an outlying round), where a ">" or "<" marks it
        ends = [(r[1] or 0) * k for r in rows] + [x * k for x in (rows[0][2] or []) if x is not None]
        lo, hi = min([0.0] + ends), max([0.0] + ends)
        pad = 0.3 * (hi - lo or 1.0)
        lo, hi = lo - (pad if lo < 0 else 0.05 * pad), hi + pad
        ax.set_xlim(lo, hi)
        for yi, (_, v, ci, _, _) in zip(y, rows):
            if ci and ci[0] is not None and ci[0] * k < lo:
                ax.plot(lo, yi, marker="<", color="black", markersize=3, clip_on=False)
            if ci and ci[1] is not None and ci[1] * k > hi:
                ax.plot(hi, yi, marker=">", color="black", markersize=3, clip_on=False)
        ax.set_xlabel(f"time per step ({unit}); bars: trimmed mean, whiskers: min–max over "
                      f"{att.get('rounds')} profiled rounds (overhead: 95% interval)", fontsize=6)
        label_device(fig, report.get("environment"))
    return fig


def validation_figure(report: dict) -> Figure:
    """(e) Predicted against measured saving of every ablation, with the measured 95% interval.

    Raises:
        FigureDataError: the run has no validation (no ``--validate``) or nothing to compare.
    """
    rows = [r for r in _attribution(report, "validation")
            if r.get("predicted_s") is not None and r.get("measured_s") is not None]
    if not rows:
        raise FigureDataError("report['attribution']['validation'] has no variant with both a prediction "
                              "and a measurement")
    every = [abs(r["predicted_s"]) for r in rows] + [abs(x) for r in rows for x in (r.get("ci_s") or [r["measured_s"]])]
    unit, k = style.time_unit(max(every + [1e-9]))
    with style.paper_style():
        fig, ax = style.new_figure(style.COLUMN_IN, 2.8)
        lo = min([0.0] + [r["predicted_s"] * k for r in rows] + [x * k for r in rows for x in (r.get("ci_s") or [r["measured_s"]])])
        hi = max([0.0] + [r["predicted_s"] * k for r in rows] + [x * k for r in rows for x in (r.get("ci_s") or [r["measured_s"]])])
        pad = 0.1 * (hi - lo or 1.0)
        lim = (lo - pad, hi + pad)
        ax.plot(lim, lim, color=NEUTRAL, linewidth=0.8, linestyle="--", label="y = x")
        ax.fill_between(lim, [0.75 * v for v in lim], [1.25 * v for v in lim], color=NEUTRAL, alpha=0.12,
                        linewidth=0, label="±25%")
        for i, r in enumerate(rows):
            p, m, ci = r["predicted_s"] * k, r["measured_s"] * k, r.get("ci_s")
            err = [[m - ci[0] * k], [ci[1] * k - m]] if ci else None
            color = style.CATEGORY_COLORS[i % len(style.CATEGORY_COLORS)]
            ax.errorbar(p, m, yerr=err, fmt="o" if r.get("agrees") else "x", color=color, markersize=4,
                        elinewidth=0.8, capsize=2, label=f"{r['variant']}" + ("" if r.get("agrees") else " (disagrees)"))
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.axhline(0, color="black", linewidth=0.4)
        ax.axvline(0, color="black", linewidth=0.4)
        ax.set_xlabel(f"predicted saving from the attribution ({unit})")
        ax.set_ylabel(f"measured saving, T_lora − T_variant ({unit})")
        ax.legend(fontsize=6, loc="upper left", handlelength=1.2)
        label_device(fig, report.get("environment"))
    return fig


def vs_full_figure(report: dict) -> Figure:
    """(f) Per cause, LoRA − frozen beside full − frozen: what LoRA added and what full
    fine-tuning costs over the same floor (the difference is what LoRA saves).

    Raises:
        FigureDataError: no full-vs-frozen attribution (no full mode, or no full trace).
    """
    vf = _attribution(report, "vs_full")
    table = [r for r in vf.get("table") or [] if abs(r["lora_s"] or 0) > 1e-6 or abs(r["full_s"] or 0) > 1e-6]
    if not table:
        raise FigureDataError("report['attribution']['vs_full']['table'] is empty")
    unit, k = style.time_unit(max(max(abs(r["lora_s"] or 0), abs(r["full_s"] or 0)) for r in table) or 1e-9)
    with style.paper_style():
        fig, ax = style.new_figure(style.COLUMN_IN, 0.9 + 0.25 * len(table))
        y = np.arange(len(table))
        ax.barh(y - 0.2, [(r["lora_s"] or 0) * k for r in table], height=0.38, color=mode_color("lora"))
        ax.barh(y + 0.2, [(r["full_s"] or 0) * k for r in table], height=0.38, color=mode_color("full"))
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_yticks(y, [r["label"] for r in table], fontsize=6.5)
        ax.set_ylim(len(table) - 0.5, -0.5)
        ax.set_xlabel(f"extra time per step over the frozen floor ({unit})")
        t = report.get("attribution") or {}
        ax.legend(handles=[Patch(color=mode_color("lora"), label=f"LoRA − frozen ({t.get('overhead_s', 0) * k:.3g} {unit})"),
                           Patch(color=mode_color("full"), label=f"full − frozen ({(vf.get('overhead_s') or 0) * k:.3g} {unit})")],
                  fontsize=6, loc="lower right")
        label_device(fig, report.get("environment"))
    return fig
