"""Figures of the strategies' quality beside their speed (``analyses/quality_pareto.py``'s data).

``pareto_figure(data)``: held-out loss on the fine-tuning target against the fine-tuning wall
time (left) and against the median step time (right), one point per strategy, whiskers the
min–max over seeds; the pre-trained model's loss (not fine-tuned) and the language's entropy
rate (the best any model can do) as horizontal lines. Lower and to the left is better.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from . import style
from .style import NEUTRAL, label_device, mode_color, mode_label


def _summary(runs: list, key) -> tuple[float, float, float]:
    vals = np.array([key(r) for r in runs], dtype=float)
    return float(np.median(vals)), float(vals.min()), float(vals.max())


def pareto_figure(data: dict) -> Figure:
    """Held-out loss against time per strategy (see the module doc).

    Raises:
        ValueError: no strategy finished.
    """
    runs = [r for r in data.get("runs") or [] if r.get("status") == "ok" and r["strategy"] != "none"]
    if not runs:
        raise ValueError("no strategy finished: nothing to draw")
    strategies = list(dict.fromkeys(r["strategy"] for r in runs))
    base = [r["held_out_loss"] for r in data.get("runs") or [] if r["strategy"] == "none"]
    with style.paper_style():
        fig, axes = style.new_figure(style.PAGE_IN, 2.7, ncols=2, sharey=True)
        panels = (("wall_s", "fine-tuning wall time (s)", axes[0]),
                  ("median_step_s", "median step time (ms)", axes[1]))
        for key, label, ax in panels:
            k = 1e3 if key == "median_step_s" else 1.0
            for s in strategies:
                mine = [r for r in runs if r["strategy"] == s]
                ly, lo, hi = _summary(mine, lambda r: r["held_out_loss"])
                x, xlo, xhi = _summary(mine, lambda r: r[key] * k)
                ax.errorbar(x, ly, yerr=[[ly - lo], [hi - ly]], xerr=[[x - xlo], [xhi - x]], fmt="o",
                            color=mode_color(s), markersize=4, elinewidth=0.8, capsize=2, label=mode_label(s))
            if base:
                ax.axhline(float(np.median(base)), color=NEUTRAL, linestyle=":", linewidth=0.9)
            if data.get("entropy_rate") is not None:
                ax.axhline(data["entropy_rate"], color="black", linestyle="--", linewidth=0.8)
            ax.set_xlabel(label)
        axes[0].set_ylabel("held-out loss on the target (nats/token)")
        if base:
            axes[0].annotate("not fine-tuned", (0, float(np.median(base))), xycoords=("axes fraction", "data"),
                             xytext=(2, 2), textcoords="offset points", fontsize=6, color=NEUTRAL)
        if data.get("entropy_rate") is not None:
            axes[0].annotate("entropy rate (best possible)", (0, data["entropy_rate"]),
                             xycoords=("axes fraction", "data"), xytext=(2, 2), textcoords="offset points", fontsize=6)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=6.5)
        seeds = len({r["seed"] for r in runs})
        fig.text(0.005, 0.99, f"{data.get('steps', '?')} fine-tuning steps, {seeds} seed(s); whiskers: min–max",
                 fontsize=6.5, va="top", color=NEUTRAL)
        label_device(fig, data.get("environment"))
    return fig


def prediction_figure(report: dict) -> Figure:
    """The cost model against the measurement (``--advise``): predicted against measured median
    step time for every mode and strategy that ran, on log axes with y = x and a ±20% band; the
    strategies predicted but not run are listed beside, with their prediction.

    Raises:
        FigureDataError: the run has no prediction, or no mode with both numbers.
    """
    from .attribution_figures import FigureDataError

    pred = report.get("prediction") or {}
    rows = [r for r in pred.get("rows") or [] if r.get("measured_s") and r.get("predicted_s")]
    if not rows:
        raise FigureDataError("report['prediction'] has no mode with both a measured and a predicted step "
                              "time (run with --advise)")
    unpredicted = [r for r in pred.get("rows") or [] if not r.get("measured_s") and r.get("predicted_s")]
    values = [v for r in rows for v in (r["measured_s"], r["predicted_s"])]
    unit, k = style.time_unit(max(values))
    with style.paper_style():
        fig, ax = style.new_figure(style.COLUMN_IN, 2.8)
        lo, hi = min(values) * k / 1.5, max(values) * k * 1.5
        ax.plot([lo, hi], [lo, hi], color=NEUTRAL, linewidth=0.8, linestyle="--", label="y = x")
        ax.fill_between([lo, hi], [lo / 1.2, hi / 1.2], [lo * 1.2, hi * 1.2], color=NEUTRAL, alpha=0.12,
                        linewidth=0, label="±20%")
        for r in rows:
            ax.plot(r["measured_s"] * k, r["predicted_s"] * k, "o", color=mode_color(r["mode"]), markersize=4,
                    label=f"{mode_label(r['mode'])} ({100 * r['error']:+.0f}%)" if r.get("error") is not None
                    else mode_label(r["mode"]))
        for r in unpredicted:
            ax.axhline(r["predicted_s"] * k, color=mode_color(r["mode"]), linewidth=0.6, linestyle=":",
                       label=f"{mode_label(r['mode'])}: predicted, not run")
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"measured step time, median ({unit})")
        ax.set_ylabel(f"predicted step time ({unit})")
        ax.legend(fontsize=5.5, loc="upper left", handlelength=1.2)
        label_device(fig, report.get("environment"))
    return fig
