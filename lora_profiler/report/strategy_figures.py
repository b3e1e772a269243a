"""Figures of the strategies' quality beside their speed (``analyses/quality_pareto.py``'s data).

``pareto_figure(data)``: held-out loss on the fine-tuning target against the fine-tuning wall
time (left) and against the median step time (right), one point per strategy, whiskers the
min–max over seeds; the pre-trained model's loss (not fine-tuned) and the language's entropy
rate (the best any model can do) as horizontal lines. Lower and to the left is better.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

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
