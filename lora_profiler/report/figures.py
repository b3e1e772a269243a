"""Figures of one run, drawn from its report dict alone (never re-running anything).

Each ``*_figure`` function takes a report dict (``report.json`` loaded) and returns a matplotlib
``Figure`` in the paper style (see ``style``); ``draw_run_figures`` saves the ones the report has
data for. The sweep figures (speedup against tokens per step; step time against rank and
targets) take sweep results instead and live in ``sweep_figures``; they are re-exported here.

Raises ``FigureDataError`` (a ``ValueError``) when a report lacks what a figure needs; the
message says which key is missing and why it may be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from ..names import BASE_MODES
from ..names import PHASES as STEP_PHASES
from . import style
from .style import ADAPTER, BASE, NEUTRAL, OTHER, PAGE_IN, label_device, mode_color, mode_label
from .attribution_figures import FigureDataError, overhead_figure, validation_figure, vs_full_figure
from .strategy_figures import prediction_figure
from .sweep_figures import naive_speedup, rank_targets_figure, speedup_tokens_figure

__all__ = [
    "FigureDataError",
    "step_time_figure",
    "overhead_figure",
    "validation_figure",
    "vs_full_figure",
    "prediction_figure",
    "small_matmul_figure",
    "memory_figure",
    "timeline_figure",
    "speedup_tokens_figure",
    "rank_targets_figure",
    "naive_speedup",
    "RUN_FIGURES",
    "draw_run_figures",
]

MODE_ORDER = BASE_MODES
# The phases a step-time bar stacks, in run order; zero_grad is folded into optimizer.
PHASES = tuple(p for p in STEP_PHASES if p != "zero_grad")


def _ok_modes(report: dict, need: str) -> list[str]:
    """Modes with status ok that have ``need`` (a key of the mode's entry), in MODE_ORDER."""
    modes = report.get("modes") or {}
    order = [m for m in MODE_ORDER if m in modes] + [m for m in modes if m not in MODE_ORDER
                                                     and (modes[m] or {}).get("strategy", True)
                                                     and not ((modes[m] or {}).get("variant_of")
                                                              and not (modes[m] or {}).get("strategy"))]
    return [m for m in order if (modes[m] or {}).get("status") == "ok" and modes[m].get(need)]


def _attribution(report: dict, key: str) -> dict:
    att = report.get("attribution")
    if not att:
        raise FigureDataError("report['attribution'] is null: the run has no profiled lora and "
                              "frozen traces (--no-profile, a failed mode) or attribution did not run")
    value = att.get(key)
    if not value:
        raise FigureDataError(f"report['attribution']['{key}'] is missing or empty")
    return value


# --- a. step time per mode ---------------------------------------------------------------------

def step_time_figure(report: dict) -> Figure:
    """(a) Time per training step of each mode, stacked into forward / backward / optimizer.

    Bars are the medians of each phase over the timed steps (``modes.<m>.phase_time_s``; zero_grad
    is folded into optimizer). The black whisker is the median step time with its interquartile
    range, the number above each bar the speedup over full fine-tuning, T_full / T_mode.

    Raises:
        FigureDataError: no mode has status ok with phase times.
    """
    modes = _ok_modes(report, "phase_time_s")
    if not modes:
        raise FigureDataError("no mode has status 'ok' and modes.<mode>.phase_time_s")
    entries = report["modes"]
    phase = {m: _phases(entries[m]["phase_time_s"]) for m in modes}  # seconds
    steps = {m: entries[m].get("step_time_s") or {} for m in modes}
    top = max(max(sum(phase[m].values()), steps[m].get("q3") or 0) for m in modes)
    unit, k = style.time_unit(top)
    full = steps.get("full", {}).get("median")
    many = len(modes) > 4  # strategies beside the modes: both columns, labels slanted
    with style.paper_style():
        fig, ax = style.new_figure(PAGE_IN if many else style.COLUMN_IN, 2.6 if many else 2.3)
        x = np.arange(len(modes))
        for i, m in enumerate(modes):
            bottom = 0.0
            for p in PHASES:
                h = phase[m][p] * k
                ax.bar(i, h, bottom=bottom, width=0.62, color=mode_color(m), alpha=style.PHASE_ALPHA[p],
                       hatch=style.PHASE_HATCH[p], edgecolor=mode_color(m), linewidth=0.6)
                bottom += h
            st = steps[m]
            if st.get("median") is not None:
                lo, hi = st.get("q1", st["median"]), st.get("q3", st["median"])
                ax.errorbar(i, st["median"] * k, yerr=[[max(st["median"] - lo, 0) * k],
                                                       [max(hi - st["median"], 0) * k]],
                            fmt="_", color="black", markersize=9, elinewidth=0.7, capsize=2)
            if full and st.get("median") and m != "forward":
                ax.annotate(f"{full / st['median']:.2f}×", (i, max(bottom, (st.get('q3') or 0) * k)),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=7, color=mode_color(m))
        ax.set_xticks(x, [mode_label(m) for m in modes], rotation=25 if many else 0,
                      ha="right" if many else "center", rotation_mode="anchor")
        for tick, m in zip(ax.get_xticklabels(), modes):
            tick.set_color(mode_color(m))
        ax.set_ylabel(f"time per step ({unit})")
        ax.set_ylim(0, top * k * 1.12)
        handles = [Patch(facecolor=NEUTRAL, alpha=style.PHASE_ALPHA[p], hatch=style.PHASE_HATCH[p],
                         edgecolor=NEUTRAL, linewidth=0.6, label=p) for p in PHASES]
        handles.append(ax.errorbar([], [], yerr=[], fmt="_", color="black", elinewidth=0.7,
                                   label="step median, IQR"))
        fig.legend(handles=handles, loc="outside lower center", ncols=4, handlelength=1.2,
                   columnspacing=0.8, handletextpad=0.4)
        failed = [m for m in (report.get("modes") or {}) if m not in modes]
        if failed:
            ax.text(0.0, 1.0, "not shown: " + ", ".join(
                f"{m} ({report['modes'][m].get('status')})" for m in failed),
                transform=ax.transAxes, fontsize=6, color=NEUTRAL, va="bottom")
        if full:
            ax.set_xlabel("mode; above the bars: speedup over full FT, T_full / T_mode",
                          fontsize=6.5, color=NEUTRAL)
        label_device(fig, report.get("environment"))
    return fig


def _phases(pt: dict) -> dict:
    return {"forward": pt.get("forward") or 0.0, "backward": pt.get("backward") or 0.0,
            "optimizer": (pt.get("optimizer") or 0.0) + (pt.get("zero_grad") or 0.0)}


# --- c. small-matmul launches ------------------------------------------------------------------

def small_matmul_figure(report: dict) -> Figure:
    """(c) Durations of the adapter path's matmuls against the base layers' matmuls.

    Histograms on a log time axis of ``attribution.small_matmuls.adapter_us`` and ``base_us``
    (one training step, forward and backward), with the launch cost (``launch_cost_us``: the
    median kernel launch on a GPU, the median tiny-op dispatch on a CPU) as a dashed line: an
    adapter matmul near or left of it costs about as much to issue as to run.

    Raises:
        FigureDataError: attribution null, or no adapter matmul durations.
    """
    sm = _attribution(report, "small_matmuls")
    adapter = np.asarray([d for d in sm.get("adapter_us") or [] if d and d > 0], dtype=float)  # (n,) µs
    base = np.asarray([d for d in sm.get("base_us") or [] if d and d > 0], dtype=float)  # (m,) µs
    if adapter.size == 0:
        raise FigureDataError("report['attribution']['small_matmuls']['adapter_us'] is empty")
    unit_name = sm.get("unit") or "op"
    launch = sm.get("launch_cost_us")
    every = np.concatenate([adapter, base] + ([np.asarray([launch])] if launch else []))
    lo, hi = np.log10(every.min()) - 0.1, np.log10(every.max()) + 0.1
    bins = np.logspace(lo, hi, max(12, min(40, int((hi - lo) * 12))))
    with style.paper_style():
        fig, ax = style.new_figure(style.COLUMN_IN, 2.2)
        ax.hist(adapter, bins=bins, color=ADAPTER, alpha=0.75,
                label=f"adapter path (n = {adapter.size}, median {np.median(adapter):.3g} µs)")
        if base.size:
            ax.hist(base, bins=bins, histtype="step", color=BASE, linewidth=1.0,
                    label=f"base layers (n = {base.size}, median {np.median(base):.3g} µs)")
        if launch:
            ax.axvline(launch, color="black", linestyle="--", linewidth=0.9)
            what = "launch" if unit_name == "kernel" else "dispatch"
            ax.annotate(f"{what} cost\n{launch:.3g} µs", (launch, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -2), textcoords="offset points", va="top", fontsize=6.5)
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, hi - lo)
        ax.set_xlabel(f"duration per matmul {unit_name} (µs)")
        ax.set_ylabel(f"matmul {unit_name}s per step")
        ax.yaxis.get_major_locator().set_params(integer=True)
        fig.legend(loc="outside lower center", fontsize=6.5, ncols=1)
        ai, bi = sm.get("adapter_intensity"), sm.get("base_intensity")
        if ai and bi:
            text = f"median intensity: adapter {ai:.3g}, base {bi:.3g} FLOP/B"
            ridge = sm.get("ridge_flop_per_byte")
            if ridge:
                text += f"; ridge {ridge:.3g}"
            ax.set_title(text, fontsize=6.5, loc="left")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        label_device(fig, report.get("environment"))
    return fig


def _plain_log_ticks(axis, decades: float) -> None:
    """Log-axis tick labels as plain numbers (10, 100), with 2 and 5 labelled on short ranges."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if decades < 2.5:
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


# --- d. memory per mode --------------------------------------------------------------------------

MEMORY_KINDS = (
    ("parameters", "param_bytes"),
    ("gradients", "grad_bytes"),
    ("optimizer state", "optimizer_state_bytes"),
    ("base activations", None),
    ("adapter activations", None),
)


def memory_values(entry: dict) -> dict[str, float]:
    """Bytes of each memory kind of one mode's facts entry (base activations = base + other)."""
    mem = entry.get("memory") or {}
    cat = (entry.get("saved_activations") or {}).get("by_category") or {}
    out = {name: float(mem.get(key) or 0) for name, key in MEMORY_KINDS if key}
    out["base activations"] = float((cat.get("base") or 0) + (cat.get("other") or 0))
    out["adapter activations"] = float(cat.get("adapter") or 0)
    return out


def memory_figure(report: dict) -> Figure:
    """(d) Memory per mode: parameters, gradients, optimizer state, saved activations.

    Grouped bars, one colour per mode, for each kind and for their total. Activations are the
    tensors autograd saves for backward (``saved_activations.by_category``): base = the base
    layers and everything outside adapted layers, adapter = the adapter paths. The allocator's
    peak (CUDA, ``memory.peak_bytes``) is a black line over each mode's total when known.

    Raises:
        FigureDataError: no mode has status ok with memory facts.
    """
    modes = _ok_modes(report, "memory")
    if not modes:
        raise FigureDataError("no mode has status 'ok' and modes.<mode>.memory")
    values = {m: memory_values(report["modes"][m]) for m in modes}  # bytes
    kinds = [name for name, _ in MEMORY_KINDS] + ["total"]
    for m in modes:
        values[m]["total"] = sum(values[m].values())
    unit, div = style.byte_unit(max(v["total"] for v in values.values()))
    width = 0.8 / len(modes)
    with style.paper_style():
        fig, ax = style.new_figure(style.COLUMN_IN, 2.3)
        x = np.arange(len(kinds))
        for j, m in enumerate(modes):
            ax.bar(x - 0.4 + width * (j + 0.5), [values[m][kd] / div for kd in kinds], width=width,
                   color=mode_color(m), label=mode_label(m))
        ax.axvline(len(kinds) - 1.5, color=NEUTRAL, linewidth=0.5, linestyle=":")
        ax.set_xticks(x, [kd.replace(" ", "\n", 1) for kd in kinds], fontsize=6.5)
        ax.set_ylabel(f"memory ({unit})")
        peaks = {m: (report["modes"][m].get("memory") or {}).get("peak_bytes") for m in modes}
        for j, m in enumerate(modes):
            if peaks[m]:  # the allocator's peak (CUDA) over the total of what was counted
                xi = x[-1] - 0.4 + width * (j + 0.5)
                ax.plot([xi - width / 2, xi + width / 2], [peaks[m] / div] * 2, color="black", linewidth=1.4,
                        solid_capstyle="butt", label="allocator peak" if m == next(q for q in modes if peaks[q]) else None)
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i] == "allocator peak")  # peak last
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left", ncols=2,
                  handlelength=1.0, columnspacing=0.8)
        ax.set_ylim(0, max(ax.get_ylim()[1], max((v or 0) / div for v in peaks.values()) * 1.05) * 1.15)
        label_device(fig, report.get("environment"))
    return fig


# --- g. timeline of one adapted layer ------------------------------------------------------------

ROLE_COLORS = {"base": BASE, "adapter": ADAPTER, "other": OTHER}


def timeline_figure(report: dict) -> Figure:
    """(g) One adapted layer's forward and backward ops on a time axis, base against adapter.

    ``attribution.timeline.events``: one row per (lane, role), forward and backward in their own
    panels, each timed from its first event. Adapter ops falling between, not beside, the base
    ops are the serial path LoRA adds to every adapted layer.

    Raises:
        FigureDataError: attribution null or no timeline events.
    """
    tl = _attribution(report, "timeline")
    events = tl.get("events") or []
    if not events:
        raise FigureDataError("report['attribution']['timeline']['events'] is empty")
    phases = [p for p in ("forward", "backward") if any(e.get("phase") == p for e in events)]
    lanes = [ln for ln in ("gpu", "cpu") if any(e.get("lane") == ln for e in events)]
    roles = [r for r in ("adapter", "base", "other") if any(e.get("role") == r for e in events)]
    rows = [(ln, r) for ln in lanes for r in roles if any(e.get("lane") == ln and e.get("role") == r
                                                          for e in events)]
    span = max(e["start_us"] + e["dur_us"] - min(f["start_us"] for f in events if f.get("phase") == e.get("phase"))
               for e in events)
    unit, k = style.time_unit(span * 1e-6)
    k *= 1e-6  # from µs
    with style.paper_style():
        fig, axes = style.new_figure(PAGE_IN, 0.9 + 0.28 * len(rows), ncols=len(phases), squeeze=False)
        axes_in = PAGE_IN / len(phases) - 0.9  # about one panel's plotting width, inches
        for ax, ph in zip(axes[0], phases):
            evs = [e for e in events if e.get("phase") == ph]
            t0 = min(e["start_us"] for e in evs)
            t_end = max(e["start_us"] + e["dur_us"] for e in evs) - t0
            for y, (ln, r) in enumerate(rows):
                sel = [e for e in evs if e.get("lane") == ln and e.get("role") == r]
                ax.broken_barh([((e["start_us"] - t0) * k, e["dur_us"] * k) for e in sel], (y - 0.35, 0.7),
                               facecolors=ROLE_COLORS.get(r, OTHER), edgecolor="white", linewidth=0.3)
                for e in sel:
                    if _label_fits(_short(e["name"]), e["dur_us"] / t_end, axes_in):
                        ax.text((e["start_us"] - t0 + e["dur_us"] / 2) * k, y, _short(e["name"]),
                                ha="center", va="center", fontsize=5.5,
                                color="white" if r != "other" else "black", clip_on=True)
            sums = {r: sum(e["dur_us"] for e in evs if e.get("role") == r and e.get("lane") == lanes[0])
                    for r in ("base", "adapter")}
            ax.set_title(f"{ph}: base {sums['base'] * k:.3g} {unit}, adapter {sums['adapter'] * k:.3g} {unit}"
                         + (f" ({lanes[0].upper()})" if len(lanes) > 1 else ""), fontsize=7, loc="left")
            for y in range(1, len(rows)):
                if rows[y][0] != rows[y - 1][0]:  # between the GPU and CPU lanes
                    ax.axhline(y - 0.5, color=NEUTRAL, linewidth=0.5, linestyle=":")
            ax.set_yticks(range(len(rows)), [f"{ln.upper()} {r}" for ln, r in rows])
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.set_xlim(0, t_end * k * 1.02)
            ax.set_xlabel(f"time from the layer's first {ph} op ({unit})")
            for tick, (_, r) in zip(ax.get_yticklabels(), rows):
                tick.set_color(ROLE_COLORS.get(r, NEUTRAL) if r != "other" else NEUTRAL)
        if len(phases) > 1:
            axes[0][1].tick_params(labelleft=True)
        label_device(fig, report.get("environment"))
        fig.text(0.005, 0.98, f"layer {tl.get('layer', '?')}", fontsize=7, ha="left", va="top")
    return fig


def _short(name: str) -> str:
    """``aten::mm`` -> ``mm``; ``autograd::engine::evaluate_function: MmBackward0`` -> ``MmBackward0``."""
    return name.rsplit(": ", 1)[-1].rsplit("::", 1)[-1]


def _label_fits(text: str, fraction: float, axes_in: float, size_pt: float = 5.5) -> bool:
    """Does ``text`` fit inside a bar spanning ``fraction`` of an ``axes_in``-inch-wide axis?"""
    return len(text) * 0.55 * size_pt + 3 < fraction * axes_in * 72


# --- all run figures -----------------------------------------------------------------------------

RUN_FIGURES: dict[str, Callable[[dict], Figure]] = {
    "step_time": step_time_figure,  # a
    "overhead": overhead_figure,  # b
    "small_matmuls": small_matmul_figure,  # c
    "memory": memory_figure,  # d
    "timeline": timeline_figure,  # g
    "validation": validation_figure,  # e (with --validate)
    "vs_full": vs_full_figure,  # f
    "prediction": prediction_figure,  # the cost model against the measurement (with --advise)
}
SKIPPED_FILE = "skipped.json"


def draw_run_figures(report: dict, out_dir: str | Path) -> list[str]:
    """Draw figures a-g of one run into ``out_dir/figures/`` as PNG (300 dpi) and PDF.

    A figure whose data the report lacks (attribution null, every mode failed, ...) is skipped;
    the reasons are written to ``out_dir/figures/skipped.json`` (``{"<figure>": "<reason>"}``,
    removed when nothing is skipped).

    Args:
        report: the report dict (report.json's content).
        out_dir: the run folder.

    Returns:
        Paths of the files written, relative to ``out_dir``, PNG before PDF for each figure,
        e.g. ``["figures/step_time.png", "figures/step_time.pdf", ...]``.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    written: list[str] = []
    skipped: dict[str, str] = {}
    for name, draw in RUN_FIGURES.items():
        try:
            fig = draw(report)
        except FigureDataError as exc:
            skipped[name] = str(exc)
            continue
        for path in style.save_figure(fig, fig_dir / name):
            written.append(path.relative_to(out_dir).as_posix())
    skip_path = fig_dir / SKIPPED_FILE
    if skipped:
        fig_dir.mkdir(parents=True, exist_ok=True)
        skip_path.write_text(json.dumps(skipped, indent=2) + "\n")
    elif skip_path.exists():
        skip_path.unlink()
    return written
