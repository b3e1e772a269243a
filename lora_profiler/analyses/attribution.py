"""Attribute a mode's extra time over the frozen floor, T_mode - T_frozen, to its causes.

The overhead is measured without the profiler, in the timed steps: the trimmed mean of the paired
differences T_mode,i - T_floor,i (``stats.paired_difference``), with its bootstrap interval. The causes are
measured independently, in the profiled rounds: every cause is computed per round
(``step_causes``: op time by role, corrected for the profiler's calibrated cost), each profiled
round of the mode paired with the floor's round of the same index (they ran side by side), and
reported as the trimmed mean over the rounds (a disturbed round is cut, as in the overhead's
estimate) with the min and max. The optimizer is measured, not traced: the timed
optimizer and zero_grad phases, mode minus floor, per timed round. ``residual_s`` = overhead -
sum of the causes is what they do not explain: nothing is fitted to make it small.

Causes (seconds per step; ``CAUSES``):

- adapter path, forward and backward: ``dropout``, ``lora_A``, ``lora_B``, ``scale``, ``add``,
  ``adapter_other`` (dtype casts, ... in the adapted layer outside its parts), ``dora`` (DoRA's
  magnitude and weight norm: PEFT's DoRA module less the lora_A/lora_B it calls);
- ``grad_accumulation``: AccumulateGrad nodes, mode minus floor (the adapters' or all weights'
  gradients, less the floor's own input-gradient leaf);
- ``grad_input_sum``: the autograd engine's gradient sums, mode minus floor (an adapted layer's
  input feeds the base and the adapter path: its two gradients are added);
- ``weight_grad``: weight-gradient matmuls of trainable base weights (full fine-tuning);
- ``dispatch``: CPU — the adapter path's Python and engine time outside ops; GPU — the GPU idle
  right before adapter kernels (waiting for their launch);
- ``optimizer``: the optimizer and zero_grad phases, mode minus floor (measured);
- ``floor_only_nodes``: backward nodes the floor runs and the mode does not (the floor computes
  every input gradient; LoRA skips those below its first adapter's input), negative;
- ``mode_only_nodes``: backward nodes off the adapter path only the mode runs (e.g. the
  embedding's weight gradient in full fine-tuning);
- ``communication`` (multi-rank traces only, ``analyses.communication``): collective time no
  compute overlapped (the gradient all-reduce the step waits for), mode minus floor, taken out of
  the ops and gaps ``rest_of_network`` would otherwise hold;
- ``rest_of_network``: every other op, mode minus floor: how the mode slows (or speeds) the rest
  of the step — memory and cache pressure, or noise;
- ``page_faults_unseen``: page faults are inside the ops' times, so the trace sees those of the
  profiled steps; when the timed steps faulted more or less (the C allocator returned freed memory
  to the OS and the next step touched it again, or not), the difference, (mode minus floor,
  timed minus profiled) faults per step times the calibrated cost of a fault, is time the trace
  could not see.

Groups (``GROUPS``, the report's ``components``) sum causes: ``adapter_matmul_fwd`` /
``adapter_matmul_bwd`` (lora_A + lora_B per phase), ``adapter_elementwise`` (dropout, scale,
add, adapter_other, dora, grad_accumulation, grad_input_sum), ``adapter_optimizer``,
``dispatch_overhead`` (CPU) or ``gpu_idle_in_adapter`` (GPU), ``weight_gradients`` and
``other_ops_delta`` (floor_only_nodes + mode_only_nodes + rest_of_network).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..events import Trace
from . import stats
from .lora_roles import ADAPTER_ROLES, PHASES, assign_roles
from .profiler_cost import EventCosts
from .step_causes import C, DISPATCH_PARTS, StepCauses, step_causes

CAUSES = ADAPTER_ROLES + ("grad_accumulation", "grad_input_sum", "weight_grad", "dispatch", "optimizer",
                          "floor_only_nodes", "mode_only_nodes", "communication", "rest_of_network",
                          "page_faults_unseen")
_FROM_TRACE = {"grad_accumulation": "accumulate_grad", "grad_input_sum": "engine"}
# Causes that are time of the mode's own ops: below 0 only when the profiler-cost correction
# took more than was traced (then clipped to 0 and flagged).
_OWN_OPS = ADAPTER_ROLES + ("weight_grad",)
GROUPS = {
    "adapter_matmul_fwd": [("lora_A", "forward"), ("lora_B", "forward")],
    "adapter_matmul_bwd": [("lora_A", "backward"), ("lora_B", "backward")],
    "adapter_elementwise": ["dropout", "scale", "add", "adapter_other", "dora", "grad_accumulation",
                            "grad_input_sum"],
    "adapter_optimizer": ["optimizer"],
    "dispatch_overhead": ["dispatch"],
    "weight_gradients": ["weight_grad"],
    "communication": ["communication"],
    "other_ops_delta": ["floor_only_nodes", "mode_only_nodes", "rest_of_network", "page_faults_unseen"],
}
LABELS = {
    "dropout": "dropout", "lora_A": "lora_A matmul", "lora_B": "lora_B matmul",
    "scale": "scale (× alpha/r)", "add": "add to the base output", "adapter_other": "other adapter ops",
    "dora": "DoRA magnitude & weight norm",
    "grad_accumulation": "gradient accumulation", "grad_input_sum": "input-gradient sums",
    "weight_grad": "weight-gradient matmuls", "dispatch": "dispatch / launch",
    "optimizer": "optimizer", "floor_only_nodes": "input gradients skipped",
    "mode_only_nodes": "extra backward nodes", "communication": "communication (exposed)",
    "rest_of_network": "rest of the network",
    "page_faults_unseen": "page faults the trace missed",
}


class ModeTrace:
    """One mode's trace with its roles, profiler costs and per-step causes (computed once)."""

    def __init__(self, trace: Trace, calibration: Optional[dict], weight_shapes: Optional[list] = None):
        self.trace = trace
        self.roles = assign_roles(trace, weight_shapes)
        self.costs = EventCosts(trace, calibration)
        self.causes: StepCauses = step_causes(trace, self.roles, self.costs)
        from .communication import exposed_by_phase
        from .lora_roles import PHASES as ROLE_PHASES

        pos = np.full(max(len(trace.steps.ts_us), 1), -1, dtype=np.int64)
        pos[self.causes.steps] = np.arange(len(self.causes.steps))
        comm = exposed_by_phase(trace, self.roles.scope_phase, ROLE_PHASES, pos, len(self.causes.steps))
        # (steps, 2) us of exposed collective time, forward and backward (None: no collectives)
        self.comm = comm[:, [ROLE_PHASES.index(p) for p in PHASES]] if comm is not None else None


def _round_causes(mode: StepCauses, floor: Optional[StepCauses], r: int, comm=(None, None)) -> dict:
    """cause -> [forward us, backward us] of round ``r`` (mode minus floor)."""
    mv = mode.value_us[r]
    fv = floor.value_us[r] if floor is not None and r < len(floor.value_us) else np.zeros_like(mv)
    d = mv - fv  # (trace causes, 2)
    out = {}
    for cause in CAUSES:
        key = _FROM_TRACE.get(cause, cause)
        if key in C:
            out[cause] = [float(d[C[key], 0]), float(d[C[key], 1])]
    floor_only = mode_only = 0.0
    if floor is not None and r < len(floor.nodes):
        mn, fn = mode.nodes[r], floor.nodes[r]
        for key in set(mn) | set(fn):
            cm, um = mn.get(key, (0, 0.0))
            cf, uf = fn.get(key, (0, 0.0))
            if cf > cm:
                floor_only -= uf * (cf - cm) / cf
            elif cm > cf:
                mode_only += um * (cm - cf) / cm
    other = float(d[C["other"], 0] + d[C["other"], 1])
    out["floor_only_nodes"] = [0.0, floor_only]
    out["mode_only_nodes"] = [0.0, mode_only]
    cm, cf = comm
    com = [0.0, 0.0]
    if cm is not None or cf is not None:  # exposed collectives, out of the other ops and gaps
        a = cm[r] if cm is not None and r < len(cm) else np.zeros(2)
        b = cf[r] if cf is not None and r < len(cf) else np.zeros(2)
        com = [float(a[0] - b[0]), float(a[1] - b[1])]
        out["communication"] = com
    out["rest_of_network"] = [float(d[C["other"], 0]) - com[0],
                              float(d[C["other"], 1]) - floor_only - mode_only - com[1]]
    assert abs(sum(out["rest_of_network"]) + floor_only + mode_only + sum(com) - other) < 1e-6
    return out


def page_faults(facts: dict, mode: str, floor: str) -> Optional[dict]:
    """Minor page faults per step of the mode and the floor, timed and profiled, and the time of
    those the trace could not see (None without fault counts or a calibrated fault cost)."""
    modes = facts.get("modes") or {}
    pm, pf = (modes.get(mode) or {}).get("page_faults"), (modes.get(floor) or {}).get("page_faults")
    cost = (facts.get("calibration") or {}).get("page_fault_us")
    if not pm or not pf or not pm.get("timed"):
        return None
    phases = [p for p in PHASES if p in pm["timed"]]

    def per_step(d):
        return {p: stats.trimmed_mean(d[p]) for p in phases} if d and all(d.get(p) for p in phases) else None

    def diff(a, b):
        return {p: stats.paired_difference(a[p], b[p]) for p in phases} if a and b else None

    timed = diff(pm["timed"], pf["timed"])
    prof = diff(pm.get("profiled"), pf.get("profiled"))
    out = {"cost_us": cost,
           "timed_per_step": {mode: per_step(pm["timed"]), floor: per_step(pf["timed"])},
           "profiled_per_step": {mode: per_step(pm.get("profiled")), floor: per_step(pf.get("profiled"))},
           "timed_difference": timed, "profiled_difference": prof,
           "pairs": min(len(pm["timed"][phases[0]]), len(pf["timed"][phases[0]])),
           "timed_difference_s": sum(timed.values()) * cost * 1e-6 if cost is not None else None,
           "unseen_s": None, "unseen_by_phase_s": None}
    if cost is not None and prof is not None:
        by = {p: (timed[p] - prof[p]) * cost * 1e-6 for p in phases}
        out["unseen_by_phase_s"] = by
        out["unseen_s"] = sum(by.values())
    return out


def _rounds(mode: StepCauses, floor: Optional[StepCauses]) -> int:
    return len(mode.value_us) if floor is None else min(len(mode.value_us), len(floor.value_us))


def _optimizer_rounds(facts: dict, mode: str, floor: str) -> list:
    """Per timed round: (optimizer + zero_grad) of the mode minus the floor's (s)."""
    def opt(m):
        ph = ((facts.get("modes") or {}).get(m) or {}).get("phase_samples_s") or {}
        a, b = ph.get("optimizer"), ph.get("zero_grad")
        if a is None:
            pt = ((facts.get("modes") or {}).get(m) or {}).get("phase_time_s") or {}
            return [pt.get("optimizer", 0.0) + pt.get("zero_grad", 0.0)] if pt else []
        return [x + y for x, y in zip(a, b or [0.0] * len(a))]

    om, of = opt(mode), opt(floor)
    if not om:
        return []
    if not of:
        of = [0.0] * len(om)
    k = min(len(om), len(of)) if len(of) > 1 else len(om)
    return [om[i] - (of[i] if len(of) > 1 else of[0]) for i in range(k)]


def attribute(mode: ModeTrace, floor: Optional[ModeTrace], facts: dict, mode_name: str = "lora",
              floor_name: str = "frozen") -> dict:
    """Split the measured T_mode - T_floor into causes (see the module doc).

    Args:
        mode, floor: the two modes' traces (floor None: no floor pairing; causes of the mode alone).
        facts: the run's facts.json (timed samples, phase samples).
        mode_name, floor_name: which modes of facts they are.

    Returns:
        ``{"overhead_s", "overhead_ci_s", "causes", "by_layer", "groups", "components",
        "residual_s", "residual_fraction", "rounds", "dispatch_parts", "method", "unit"}``
        (docs/FORMAT.md).
    """
    mc = mode.causes
    fc = floor.causes if floor is not None else None
    n_rounds = _rounds(mc, fc)
    comm = (getattr(mode, "comm", None), getattr(floor, "comm", None))
    per_round = [_round_causes(mc, fc, r, comm) for r in range(n_rounds)]
    causes: dict = {}
    for cause in CAUSES:
        if cause == "page_faults_unseen":
            pf = page_faults(facts, mode_name, floor_name)
            if pf and pf.get("unseen_s") is not None:
                causes[cause] = {"seconds": pf["unseen_s"], "min": pf["unseen_s"], "max": pf["unseen_s"],
                                 "n": pf["pairs"], "phases": pf["unseen_by_phase_s"], "source": "timed"}
            continue
        if cause == "optimizer":
            vals = _optimizer_rounds(facts, mode_name, floor_name)
            if vals:
                causes[cause] = {**stats.spread(vals), "phases": {"optimizer": float(np.median(vals))},
                                 "source": "timed"}
            continue
        rows = [pr[cause] for pr in per_round if cause in pr]
        if not rows:
            continue
        arr = np.array(rows) * 1e-6  # (rounds, 2) s
        phases = {"forward": stats.trimmed_mean(arr[:, 0]), "backward": stats.trimmed_mean(arr[:, 1])}
        # the phases' trimmed means summed (groups that split a cause by phase add up to the
        # same); min and max of the per-round totals
        entry = {**stats.spread(arr.sum(axis=1)), "phases": phases, "source": "trace"}
        entry["seconds"] = phases["forward"] + phases["backward"]
        if cause in _OWN_OPS and entry["seconds"] < 0:
            entry.update(clipped=True, raw_seconds=entry["seconds"], seconds=0.0)
        causes[cause] = entry
    gpu = mc.gpu
    groups = _groups(causes, per_round, gpu)
    t_mode, t_floor = stats.samples(facts, mode_name), stats.samples(facts, floor_name)
    overhead = overhead_ci = None
    median_diff = None
    if t_mode is not None and t_floor is not None:
        overhead = stats.paired_difference(t_mode, t_floor)
        overhead_ci = stats.paired_bootstrap(t_mode, t_floor, stats.paired_difference)
        median_diff = stats.median_difference(t_mode, t_floor)
    explained = sum(c["seconds"] for c in causes.values())
    residual = overhead - explained if overhead is not None else None
    by_layer = _by_layer(mc, fc, n_rounds) if n_rounds else {}
    return {
        "mode": mode_name,
        "floor": floor_name,
        "overhead_s": overhead,
        "overhead_ci_s": overhead_ci,
        "median_difference_s": median_diff,
        "causes": causes,
        "groups": groups,
        "components": {g: v["seconds"] for g, v in groups.items()},
        "by_layer": by_layer,
        "dispatch_parts": {p: stats.trimmed_mean(mc.dispatch_us[:n_rounds, i] - (
            fc.dispatch_us[:n_rounds, i] if fc is not None else 0.0)) * 1e-6
            for i, p in enumerate(DISPATCH_PARTS)} if n_rounds else {},
        "page_faults": page_faults(facts, mode_name, floor_name),
        "residual_s": residual,
        "residual_fraction": residual / overhead if residual is not None and overhead else None,
        "rounds": n_rounds,
        "unit": "kernel" if gpu else "op",
        "method": "gpu kernels" if gpu else "cpu ops",
    }


def _groups(causes: dict, per_round: list, gpu: bool) -> dict:
    """Each group: the sum of its causes' medians (so groups and causes add up to the same
    total), with the min and max over rounds of the per-round sums."""
    out = {}
    for group, members in GROUPS.items():
        name = "gpu_idle_in_adapter" if group == "dispatch_overhead" and gpu else group
        present = list(dict.fromkeys(m if isinstance(m, str) else m[0] for m in members))
        present = [c for c in present if c in causes]
        if not present:
            continue
        if members == ["optimizer"]:
            entry = {k: causes["optimizer"][k] for k in ("seconds", "min", "max", "n")}
        else:
            rows = [sum(_part(pr.get(c), ph) for c, ph in map(_member, members)) * 1e-6 for pr in per_round]
            entry = stats.spread(rows)
            entry["seconds"] = sum(_median_part(causes.get(c), ph) for c, ph in map(_member, members))
        entry["causes"] = present
        out[name] = entry
    return out


def _member(m):
    return m if isinstance(m, tuple) else (m, None)


def _part(v, phase) -> float:
    """A round's value of a cause ([fwd, bwd] us) in one phase, or both."""
    if v is None:
        return 0.0
    return v[PHASES.index(phase)] if phase else v[0] + v[1]


def _median_part(c: Optional[dict], phase) -> float:
    """A cause's median (s), or its median in one phase (0 for a clipped cause)."""
    if c is None:
        return 0.0
    if phase is None or c.get("clipped"):
        return c["seconds"] if phase is None else 0.0
    return c["phases"][phase]


def _by_layer(mc: StepCauses, fc: Optional[StepCauses], n_rounds: int) -> dict:
    """layer -> cause -> seconds (trimmed mean over rounds) for the adapter-path causes (the
    floor's AccumulateGrad and dispatch of the same layer subtracted, round by round)."""
    if not mc.layers:
        return {}
    keep = list(ADAPTER_ROLES) + ["accumulate_grad", "dispatch"]
    out = {}
    for li, path in enumerate(mc.layers):
        row = {}
        for cause in keep:
            v = mc.layer_us[:n_rounds, li, C[cause]]
            if fc is not None and path in fc.layers and cause in ("accumulate_grad", "dispatch"):
                v = v - fc.layer_us[:n_rounds, fc.layers.index(path), C[cause]]
            row[{"accumulate_grad": "grad_accumulation"}.get(cause, cause)] = stats.trimmed_mean(v) * 1e-6
        out[path] = row
    return out
