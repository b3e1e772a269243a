"""Figures of parameter sweeps (e, f), drawn from sweep results alone.

A sweep result is one dict per measured point, as ``analyses/_sweep.py`` appends them to
``figures/data/<sweep>.jsonl``::

    {"params": {"n_embd": 256, "n_layer": 2, "batch_size": 4, "seq_len": 64, "rank": 8,
                "targets": "attention", "device": "cpu", ...},    # what identifies the point
     "tokens_per_step": 256, "total_params": 1234, "linear_params": 1000, "adapter_params": 64,
     "modes": {"full": {"status": "ok", "step_time_s": {"median": 0.1, "q1": .., "q3": ..},
                        "phase_time_s": {...}, "trainable_params": 1000}, "lora": {...}, ...},
     "environment": {...}}                                        # facts.json's environment

``linear_params`` counts the weights of the model's matmul layers (every ``nn.Linear`` but the
adapters' own, lm_head included); ``adapter_params`` the adapters' weights.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from ..analyses.lora import median_step_s
from . import style
from .style import NEUTRAL, PAGE_IN, label_device, mode_color, mode_label

TARGET_LABELS = {"attention": "attention", "mlp": "MLP", "all": "all linear"}


def naive_speedup(linear_params: float, adapter_params: float) -> float:
    """The speedup of LoRA over full fine-tuning one expects from matmul FLOPs alone.

    Per token, a weight matrix with P entries costs 2P FLOPs forward; backward costs 2P for the
    input gradient plus, when the weight trains, 2P for its gradient. Full fine-tuning trains
    every weight: 6L for L matmul weights. LoRA keeps the base frozen (2L forward + 2L input
    gradient) and trains the adapters' A weights (6A):

        naive = 6L / (4L + 6A)  ≈ 1.5  when A << L.

    Attention-score matmuls, element-wise ops, the optimizer and launch costs are ignored: that
    is what makes it naive.

    Args:
        linear_params: L, weights of the base matmul layers (lm_head included).
        adapter_params: A, weights of the LoRA adapters (A and B matrices).
    """
    return 6.0 * linear_params / (4.0 * linear_params + 6.0 * adapter_params)


def _quart(point: dict, mode: str) -> tuple[float, float]:
    st = point["modes"][mode]["step_time_s"]
    return st.get("q1", st["median"]), st.get("q3", st["median"])


def _environment(points: Sequence[dict]) -> dict:
    names = {(p.get("environment") or {}).get("device_name") for p in points}
    if len(names) > 1:
        raise ValueError(f"sweep points come from different devices ({sorted(map(str, names))}); "
                         "draw each device's results separately")
    return points[0].get("environment") or {}


def _log2_axis(ax, values: Sequence[float]) -> None:
    ticks = sorted(set(values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if sum(len(f"{v:,.0f}") for v in ticks) > 30:  # labels would touch
        ax.tick_params(axis="x", labelrotation=45, labelsize=6)


# --- e. speedup against tokens per step ----------------------------------------------------------

def speedup_tokens_figure(points: Sequence[dict]) -> Figure:
    """(e) LoRA's speedup over full fine-tuning against tokens per step, one panel per width.

    Per panel (model width ``n_embd``): the measured speedup T_full / T_lora (band: from
    q1/q3 of the step times, T_full,q1 / T_lora,q3 to T_full,q3 / T_lora,q1), the ideal
    T_full / T_frozen (every weight frozen: the floor LoRA cannot beat), and the naive
    expectation from matmul FLOPs (``naive_speedup``: 6L / (4L + 6A) ≈ 1.5×).

    Raises:
        ValueError: no point has full and lora measured, or points from several devices.
    """
    pts = [p for p in points if median_step_s(p, "full") and median_step_s(p, "lora")]
    if not pts:
        raise ValueError("no sweep point has both full and lora step times")
    env = _environment(pts)
    by_width: dict[int, list[dict]] = defaultdict(list)
    for p in pts:
        by_width[p["params"]["n_embd"]].append(p)
    widths = sorted(by_width)
    with style.paper_style():
        fig, axes = style.new_figure(PAGE_IN, 2.3, ncols=len(widths), sharey=True, squeeze=False)
        for ax, w in zip(axes[0], widths):
            group = sorted(by_width[w], key=lambda p: p["tokens_per_step"])
            tokens = np.array([p["tokens_per_step"] for p in group], dtype=float)  # (n,)
            full = np.array([median_step_s(p, "full") for p in group])  # (n,) s
            lora = np.array([median_step_s(p, "lora") for p in group])  # (n,) s
            lo = np.array([_quart(p, "full")[0] / _quart(p, "lora")[1] for p in group])
            hi = np.array([_quart(p, "full")[1] / _quart(p, "lora")[0] for p in group])
            ax.axhline(1.0, color="black", linewidth=0.5)
            ax.fill_between(tokens, lo, hi, color=mode_color("lora"), alpha=0.18, linewidth=0)
            ax.plot(tokens, full / lora, "o-", color=mode_color("lora"))
            frz = [(t, f / z) for t, f, z in zip(tokens, full, (median_step_s(p, "frozen") for p in group)) if z]
            if frz:
                ax.plot(*zip(*frz), "s--", color=mode_color("frozen"), markersize=3)
            naive = [naive_speedup(p["linear_params"], p["adapter_params"]) for p in group
                     if p.get("linear_params")]
            if naive:
                ax.axhline(float(np.median(naive)), color=NEUTRAL, linestyle=":", linewidth=1.2)
            _log2_axis(ax, tokens)
            ax.set_xlabel("tokens per step (batch × seq)")
            p0 = group[0]
            ax.set_title(f"width {w}, {p0['params'].get('n_layer', '?')} layers, "
                         f"{p0['total_params'] / 1e6:.2g}M params", fontsize=7)
            ax.grid(axis="y")
        axes[0][0].set_ylabel("speedup over full FT (×)")
        handles = [
            Line2D([], [], color=mode_color("lora"), marker="o", label="LoRA, measured T_full / T_lora (IQR band)"),
            Line2D([], [], color=mode_color("frozen"), marker="s", markersize=3, linestyle="--",
                   label="ideal T_full / T_frozen"),
            Line2D([], [], color=NEUTRAL, linestyle=":", linewidth=1.2,
                   label="naive, matmul FLOPs 6L / (4L + 6A)"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3)
        label_device(fig, env)
    return fig


# --- f. step time against rank and targets -------------------------------------------------------

MODES_F = ("full", "lora", "frozen")


def rank_targets_figure(rank_points: Sequence[dict], target_points: Sequence[dict]) -> Figure:
    """(f) Step time against LoRA rank (left) and against which modules are adapted (right).

    Left: median step time per mode (band: interquartile range) for each rank; full and frozen
    do not depend on the rank and show the run-to-run spread. Bars on the right carry IQR
    whiskers. Right: grouped bars per target
    set (attention projections, MLP, every linear layer but lm_head) at one rank, with LoRA's
    speedup over full FT above its bar and the adapters' trainable parameters under the label.

    Raises:
        ValueError: neither list has a point with a measured mode, or points from several devices.
    """
    rank_points = sorted((p for p in rank_points if median_step_s(p, "lora")), key=lambda p: p["params"]["rank"])
    target_points = [p for p in target_points if any(median_step_s(p, m) for m in MODES_F)]
    if not rank_points and not target_points:
        raise ValueError("no sweep point has a measured step time")
    env = _environment(list(rank_points) + list(target_points))
    top = max(_quart(p, m)[1] for p in list(rank_points) + list(target_points) for m in MODES_F
              if median_step_s(p, m))
    unit, k = style.time_unit(top)
    with style.paper_style():
        fig, (left, right) = style.new_figure(PAGE_IN, 2.3, ncols=2, width_ratios=(1.3, 1))
        if rank_points:
            ranks = np.array([p["params"]["rank"] for p in rank_points], dtype=float)
            for m in MODES_F:
                sel = [(r, p) for r, p in zip(ranks, rank_points) if median_step_s(p, m)]
                if not sel:
                    continue
                r = np.array([s[0] for s in sel])
                med = np.array([median_step_s(p, m) for _, p in sel]) * k
                q = np.array([_quart(p, m) for _, p in sel]) * k
                left.fill_between(r, q[:, 0], q[:, 1], color=mode_color(m), alpha=0.18, linewidth=0)
                left.plot(r, med, "o-", color=mode_color(m), label=mode_label(m))
            _log2_axis(left, ranks)
            left.set_xlabel("LoRA rank r (adapter width)")
            left.set_ylabel(f"time per step ({unit})")
            left.set_ylim(0, None)
            p0 = rank_points[0]["params"]
            left.set_title(f"{p0.get('n_layer', '?')} layers × {p0.get('n_embd', '?')} wide, batch "
                           f"{p0.get('batch_size', '?')} × seq {p0.get('seq_len', '?')}; adapted: "
                           f"{TARGET_LABELS.get(p0.get('targets'), p0.get('targets'))}", fontsize=7, loc="left")
            left.grid(axis="y")
        else:
            left.set_axis_off()
        if target_points:
            n = len(MODES_F)
            width = 0.8 / n
            x = np.arange(len(target_points))
            for j, m in enumerate(MODES_F):
                for i, p in enumerate(target_points):
                    med = median_step_s(p, m)
                    if not med:
                        continue
                    q1, q3 = _quart(p, m)
                    xi = x[i] - 0.4 + width * (j + 0.5)
                    right.bar(xi, med * k, width=width, color=mode_color(m),
                              yerr=[[(med - q1) * k], [(q3 - med) * k]], error_kw={"elinewidth": 0.6, "capsize": 1})
                    full = median_step_s(p, "full")
                    if m == "lora" and full:
                        right.annotate(f"{full / med:.2f}×", (xi, q3 * k), xytext=(0, 2), textcoords="offset points",
                                       ha="center", va="bottom", fontsize=6, color=mode_color("lora"))
            labels = []
            for p in target_points:
                t = p["params"].get("targets")
                labels.append(f"{TARGET_LABELS.get(t, t)}\n{p['adapter_params'] / 1e3:.0f}k adapter params")
            right.set_xticks(x, labels, fontsize=6.5)
            right.set_ylabel(f"time per step ({unit})")
            right.set_title(f"rank {target_points[0]['params'].get('rank')}; above LoRA: speedup over full FT",
                            fontsize=7, loc="left")
            right.set_ylim(0, right.get_ylim()[1] * 1.12)
        else:
            right.set_axis_off()
        handles = [Line2D([], [], color=mode_color(m), marker="o", label=mode_label(m)) for m in MODES_F]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        label_device(fig, env)
    return fig
