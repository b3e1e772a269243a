"""Measure torch.profiler's own cost per recorded event, by known-answer loops.

A profiled step is slower than an unprofiled one because the profiler records every op, every
allocation and every scope. That cost is nearly fixed per recorded event, so it is measured
here, in the process and on the device of the run, before the profiled runs: small loops whose
events are known are timed with and without the profiler (interleaved, repeated), and the extra
time is split over the kinds of event they record by solving one small linear system.

Kinds of event (``KINDS``):

- ``op_top``   an op at the top level of a thread (its own enter/exit cost lies outside its
  recorded duration, in the time of whatever encloses it);
- ``op_nested`` an op inside another op (its cost lies inside its parent's duration);
- ``memory``   an allocator event (``profile_memory``);
- ``scope``    a module call under the capture hooks (the hooks' Python, a ``record_function``);
- ``annotation`` a bare ``record_function`` range;
- ``backward_node`` the extra cost of an autograd node beyond its op events (recorded sequence
  numbers, the engine's bookkeeping, gradient accumulation into leaves).

The loops are built so every kind is pinned by at least one loop: ``a.add_(b)`` (top-level ops
only), ``a + b`` (+ an allocation and a free), ``F.linear`` (nested ops), a hooked module call
(scopes), a bare ``record_function`` (annotations) and a chain of linear layers run backward (nodes).
A last loop, a small MLP under the hooks run forward and backward, is left out of the fit: its
extra time is predicted from the fitted costs and compared (``check``), so the model is tested
on a mix it was not fitted to.
Event counts are read from the loops' own trace, never assumed, so they hold for any torch
version. The analyses subtract cost x events by kind; what this does not explain is reported as
a diagnostic, never fed back into the components.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..names import SCOPE_PREFIX
from .hooks import ModuleHooks

KINDS = ("op_top", "op_nested", "memory", "scope", "annotation", "backward_node")
_LOOP_SCOPE = SCOPE_PREFIX + "calibrate/"
_ANNOTATION = "lora_profiler.calibrate.annotation"  # outside the scope prefix: an annotation
CHECK = "check"  # the loop left out of the fit: its extra time is predicted, then compared


class _Probe(nn.Module):
    """A container whose child the hooks give a module scope (the probe for ``scope``).

    The child is a small linear layer, like the adapter's parts: a scope around ops costs more
    than an empty one (the profiler links the ops to it), so an empty scope would under-count.
    """

    def __init__(self, child: nn.Module):
        super().__init__()
        self.child = child


def _loops(device: torch.device, dtype: torch.dtype) -> tuple[dict[str, Callable[[int], None]], tuple]:
    """(name -> loop(n) running n iterations of one known-answer body, the modules the capture
    hooks go on while profiled)."""
    a = torch.randn(16, device=device, dtype=dtype)
    b = torch.randn(16, device=device, dtype=dtype)
    x = torch.randn(4, 16, device=device, dtype=dtype)
    w = torch.randn(16, 16, device=device, dtype=dtype)
    probe = _Probe(nn.Linear(16, 16, bias=False)).to(device, dtype)
    # the check loop: a small MLP under the hooks, forward and backward
    mlp = _Probe(nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))).to(device, dtype)
    # backward probe: a chain of linear layers on leaf weights (matmul nodes, AccumulateGrad)
    ws = [torch.randn(16, 16, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
    def top(n):
        for _ in range(n):
            a.add_(b)

    def alloc(n):
        for _ in range(n):
            a + b

    def nested(n):
        for _ in range(n):
            F.linear(x, w)

    def scope(n):
        child = probe.child
        for _ in range(n):
            child(x)

    def annotation(n):
        for _ in range(n):
            with torch.profiler.record_function(_ANNOTATION):
                pass

    def backward(n):
        for _ in range(max(n // 10, 1)):
            y = x
            for w_ in ws:
                y = F.linear(y, w_)
            y.sum().backward()
        for w_ in ws:
            w_.grad = None

    def check(n):
        for _ in range(max(n // 20, 1)):
            mlp.child(x).sum().backward()
        for p in mlp.parameters():
            p.grad = None

    return {"top": top, "alloc": alloc, "nested": nested, "scope": scope,
            "annotation": annotation, "backward": backward, CHECK: check}, (probe, mlp)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[int], None], n: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn(n)
    _sync(device)
    return time.perf_counter() - t0


def calibrate(device: torch.device, dtype: torch.dtype = torch.float32, *, record_shapes: bool = True,
              profile_memory: bool = True, iterations: int = 1000, repeats: int = 5) -> dict:
    """Measure the profiler's cost per recorded event of each kind (facts ``calibration``).

    Args:
        device: where the run's steps run (CPU, or CUDA where launches are recorded too).
        dtype: the model's dtype, for the probe tensors.
        record_shapes, profile_memory: the profiler settings the profiled runs use.
        iterations: loop iterations per timing.
        repeats: profiled/plain timings of every loop, interleaved; the median is kept.

    Returns:
        ``{"cost_us": {kind: us}, "spread_us": {kind: [min, max]}, "loops": [...],
        "unexplained_fraction", "settings", "iterations", "repeats", "seconds"}``; see
        docs/FORMAT.md.
    """
    from torch.profiler import ProfilerActivity, profile

    started = time.perf_counter()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    loops, hooked = _loops(device, dtype)
    plain = {k: [] for k in loops}
    profiled = {k: [] for k in loops}
    counts: Optional[dict] = None

    def run_profiled(export: Optional[Path]) -> dict:
        out = {}
        with profile(activities=activities, record_shapes=record_shapes, profile_memory=profile_memory,
                     with_stack=False) as prof:
            for name, fn in loops.items():
                # The probe's hooks are installed only while profiled, as in the profiled runs.
                hooks = ModuleHooks(hooked[0 if name == "scope" else 1], None) \
                    if name in ("scope", CHECK) else None
                try:
                    fn(3)  # warm this loop's path under the profiler
                    with torch.profiler.record_function(_LOOP_SCOPE + name):
                        out[name] = _time(fn, iterations, device)
                finally:
                    if hooks is not None:
                        hooks.remove()
        if export is not None:
            prof.export_chrome_trace(str(export))
        return out

    for fn in loops.values():  # warm every path once, unprofiled
        fn(10)
    with tempfile.TemporaryDirectory(prefix="lp-calibrate-") as tmp:
        trace_path = Path(tmp) / "calibrate.json"
        run_profiled(None)  # the first session after start-up is slower: not counted
        for r in range(repeats):
            for name, fn in loops.items():
                plain[name].append(_time(fn, iterations, device))
            got = run_profiled(trace_path if r == 0 else None)
            for name, t in got.items():
                profiled[name].append(t)
            if r == 0:
                counts = _count_events(trace_path, list(loops))
    out = _solve(plain, profiled, counts or {}, iterations, repeats,
                 {"record_shapes": record_shapes, "profile_memory": profile_memory, "with_stack": False},
                 time.perf_counter() - started)
    out["page_fault_us"] = page_fault_cost()
    out["seconds"] = time.perf_counter() - started
    return out


def page_fault_cost(megabytes: int = 64, repeats: int = 5) -> Optional[float]:
    """Wall time of one minor page fault (us): filling fresh memory (just mapped by the
    allocator: every page faults) against filling the same memory again (no faults). The fastest
    of the repeats of each (a disturbance only ever adds time) are compared, per fault. None where
    the OS does not count page faults."""
    from .step import minor_faults

    # above glibc's largest dynamic mmap threshold (32 MiB): smaller blocks, once freed, are kept
    # in the heap and refilled without faults
    n = max(megabytes, 64) << 20
    fresh, again, faults = [], [], []
    for _ in range(repeats):
        buf = torch.empty(n, dtype=torch.uint8)  # large: mapped fresh, returned to the OS when freed
        f0 = minor_faults()
        t0 = time.perf_counter()
        buf.fill_(1)
        t1 = time.perf_counter()
        faults.append(minor_faults() - f0)
        buf.fill_(2)
        t2 = time.perf_counter()
        del buf
        fresh.append(t1 - t0)
        again.append(t2 - t1)
    per_fault = float(np.median(faults))
    if per_fault <= 0:
        return None
    return max(min(fresh) - min(again), 0.0) / per_fault * 1e6


def _count_events(trace_path: Path, names: list) -> dict:
    """Per loop: events of each kind recorded inside its ``lp/calibrate/<loop>`` window."""
    from ..events import load_trace

    trace = load_trace(trace_path, scope_prefix=SCOPE_PREFIX)
    ops, sc, mem, ann = trace.ops, trace.scopes, trace.memory, trace.annotations
    node_prefix = "autograd::engine::evaluate_function:"
    is_node = np.array([n.startswith(node_prefix) for n in trace.names], dtype=bool)
    out = {}
    for name in names:
        win = [i for i in range(len(sc)) if trace.names[sc.name[i]] == _LOOP_SCOPE + name]
        if not win:
            out[name] = dict.fromkeys(KINDS, 0.0)
            continue
        i = win[0]
        lo, hi = sc.ts_us[i], sc.ts_us[i] + sc.dur_us[i]

        def inside(ts):
            return (ts > lo) & (ts < hi)

        o = inside(ops.ts_us)
        # Depth relative to the window: ops directly in the window are top-level there.
        top = o & ((ops.parent < 0) | ~inside(ops.ts_us[np.maximum(ops.parent, 0)]))
        s = inside(sc.ts_us)
        a = inside(ann.ts_us)
        out[name] = {
            "op_top": float(top.sum()),
            "op_nested": float((o & ~top).sum()),
            "memory": float(inside(mem.ts_us).sum()),
            "scope": float(s.sum()),
            "annotation": float(a.sum()),
            "backward_node": float((o & is_node[ops.name]).sum()),
        }
    return out


def _paired_us(plain: list, profiled: list) -> float:
    """Median over repeats of (profiled - plain) time, us: one disturbed repeat does not move it."""
    return float(np.median(np.subtract(profiled, plain))) * 1e6


def _solve(plain: dict, profiled: dict, counts: dict, iterations: int, repeats: int,
           settings: dict, seconds: float) -> dict:
    """Least-squares cost per kind from the loops' extra time and event counts (us)."""
    names = [n for n in plain if n in counts and n != CHECK]
    a = np.array([[counts[n][k] for k in KINDS] for n in names], dtype=np.float64)  # (loops, kinds)
    used = a.any(axis=0)  # kinds some loop recorded

    def fit(extra_us: np.ndarray) -> np.ndarray:
        cost = np.zeros(len(KINDS))
        if used.any():
            sol, *_ = np.linalg.lstsq(a[:, used], extra_us, rcond=None)
            cost[used] = np.clip(sol, 0.0, None)
        return cost

    per_repeat = []
    for r in range(repeats):
        extra = np.array([(profiled[n][r] - plain[n][r]) * 1e6 for n in names])  # (loops,) us
        per_repeat.append(fit(extra))
    extra_med = np.array([_paired_us(plain[n], profiled[n]) for n in names])
    cost = fit(extra_med)
    predicted = a @ cost
    spread = np.array(per_repeat)  # (repeats, kinds)
    loops = [{"name": n, "plain_us_per_iter": float(np.median(plain[n]) * 1e6 / iterations),
              "profiled_us_per_iter": float(np.median(profiled[n]) * 1e6 / iterations),
              "events": {k: counts[n][k] for k in KINDS},
              "extra_us": float(extra_med[i]), "predicted_us": float(predicted[i])}
             for i, n in enumerate(names)]
    check = None
    if CHECK in counts:
        c_extra = _paired_us(plain[CHECK], profiled[CHECK])
        c_pred = float(np.array([counts[CHECK][k] for k in KINDS]) @ cost)
        check = {"loop": "a 2-layer MLP under the capture hooks, forward and backward",
                 "events": {k: counts[CHECK][k] for k in KINDS}, "extra_us": float(c_extra),
                 "predicted_us": c_pred, "error": float((c_pred - c_extra) / c_extra) if c_extra else None}
    return {
        "method": "known-answer loops, profiled against plain, interleaved; least squares over kinds",
        "settings": settings,
        "iterations": iterations,
        "repeats": repeats,
        "cost_us": {k: float(c) for k, c in zip(KINDS, cost)},
        "spread_us": {k: [float(spread[:, j].min()), float(spread[:, j].max())] for j, k in enumerate(KINDS)},
        "check": check,
        "loops": loops,
        "seconds": seconds,
    }
