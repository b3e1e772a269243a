"""What a LoRA adapter path would add to a trace recorded without one (anyone's trace).

Every linear layer's forward call in the trace (``aten::linear``; in traces without it,
``aten::addmm``/``aten::mm`` outside backward and outside a linear) is read with its shapes
(record_shapes): input ``[..., d_in]`` (``tokens`` rows), weight ``[d_out, d_in]``. A LoRA adapter
of rank r beside it adds, in the forward, the adapter path: dropout, lora_A (d_in -> r), lora_B
(r -> d_out), the scale and the add — ``FORWARD_OPS`` = 5 ops, each one kernel on a GPU. Its two
matmuls do ``r (d_in + d_out) / (d_in d_out)`` of the base layer's FLOPs. Layers no wider than
r in either dimension (a scalar head) are left out: no adapter of that rank fits them.

The estimate per call: the two matmuls at the base layer's FLOP rate (optimistic for such skinny
matmuls), each at least one launch; the three elementwise ops each as long as the trace's median
forward elementwise op (GPU: elementwise kernel), and at least one launch. A launch is the
trace's median launch call on a GPU trace (the CPU cost of queueing a kernel, which a kernel
shorter than it cannot hide), or the per-op dispatch cost (``dispatch``) on a CPU trace. It is an
estimate from the trace's own numbers, not a measurement: the lora mode of
``lora_profiler.profile`` measures it. The backward adds about as many ops again (the gradients
of A and B, dropout's and the scale's backward, gradient accumulation); not estimated here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..events import KIND_NAMES, Trace, parse_dims
from ..table import Column, Table, Tabular, fmt_pct, fmt_us
from .dispatch import dispatch_overhead
from .ops import device_total

FORWARD_OPS = 5  # dropout, lora_A, lora_B, scale, add
LINEAR_OPS = ("aten::linear",)
MATMUL_OPS = ("aten::addmm", "aten::mm")
ELEMENTWISE_OPS = ("aten::add", "aten::mul", "aten::add_", "aten::mul_", "aten::sub", "aten::div", "aten::dropout")


@dataclass(frozen=True)
class AdapterShapeRow:
    """Linear calls of one shape and what a rank-r adapter would add to each (times in us)."""

    tokens: int
    d_in: int
    d_out: int
    calls_per_step: float
    base_us: float            # median time of one call (GPU time on GPU traces, CPU time otherwise)
    flop_share: float         # adapter matmul FLOPs / base FLOPs
    adapter_matmul_us: float  # the two adapter matmuls at the base layer's FLOP rate
    launch_bound: bool        # each adapter matmul is shorter than one launch
    estimate_us: float        # per call: 3 x max(launch, elementwise) + 2 x max(launch, matmul / 2)


@dataclass(frozen=True, repr=False)
class AdapterEstimate(Tabular):
    """What rank-``rank`` LoRA on every linear layer would add to one step of the trace."""

    rank: int
    unit: str                 # "kernel" (GPU trace) or "op" (CPU trace)
    launch_us: float          # cost of one extra op: median launch call (GPU) or dispatch (CPU)
    elementwise_us: float     # the trace's median forward elementwise kernel (GPU) or op (CPU)
    steps: int
    step_us: Optional[float]  # median step wall time (None without ProfilerStep windows)
    base_us_per_step: float   # time of the linear layers per step
    extra_ops_per_step: float
    estimate_us_per_step: float
    elementwise_us_per_step: float  # of which the dropout, scale and add
    rows: List[AdapterShapeRow]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def fraction_of_step(self) -> Optional[float]:
        """The estimate as a share of the median step (None without steps)."""
        return self.estimate_us_per_step / self.step_us if self.step_us else None

    def table(self) -> Table:
        frac = self.fraction_of_step
        title = (f"rank-{self.rank} LoRA on {sum(r.calls_per_step for r in self.rows):.0f} linear calls per step: "
                 f"+{self.extra_ops_per_step:.0f} {self.unit}s, at least {fmt_us(self.estimate_us_per_step)} per step"
                 + (f" ({fmt_pct(frac)} of the {fmt_us(self.step_us)} step)" if frac is not None else "")
                 + f"; one {self.unit} launch costs {fmt_us(self.launch_us)}, an elementwise {self.unit} "
                   f"{fmt_us(self.elementwise_us)}")
        return Table([Column("tokens"), Column("d_in"), Column("d_out"), Column("calls_per_step", "calls/step"),
                      Column("base_us", "base per call", fmt_us), Column("flop_share", "adapter FLOPs", fmt_pct),
                      Column("adapter_matmul_us", "adapter matmuls", fmt_us),
                      Column("launch_bound", "launch-bound"), Column("estimate_us", "added per call", fmt_us)],
                     [dataclasses.astuple(r) for r in self.rows], title=title,
                     notes=["an estimate from this trace's numbers (adapter matmuls at the base layer's FLOP rate, "
                            "elementwise ops at the trace's median, each op at least one launch), forward only"])


def _linear_calls(trace: Trace) -> np.ndarray:
    """Rows of the forward linear-layer calls (see the module docstring)."""
    ops = trace.ops
    linear = np.isin(ops.name, trace.name_ids(lambda s: s in LINEAR_OPS))
    rows = np.flatnonzero(linear & ~ops.is_backward)
    if rows.size:
        return rows
    mm = np.isin(ops.name, trace.name_ids(lambda s: s in MATMUL_OPS)) & ~ops.is_backward
    return np.flatnonzero(mm)


def _elementwise_us(trace: Trace, gpu: bool) -> float:
    """Median duration of the trace's forward elementwise kernels (GPU) or ops (CPU), in steps
    when it has steps; 0 when it has none."""
    if gpu:
        k = trace.kernels
        d = k.dur_us[(k.kind == KIND_NAMES.index("elementwise")) & ((k.step >= 0) if len(trace.steps) else True)]
    else:
        ops = trace.ops
        m = np.isin(ops.name, trace.name_ids(lambda s: s in ELEMENTWISE_OPS)) & ~ops.is_backward
        d = ops.dur_us[m & ((ops.step >= 0) if len(trace.steps) else True)]
    return float(np.median(d)) if d.size else 0.0


def _shape(trace: Trace, i: int) -> Optional[tuple[int, int, int]]:
    """(tokens, d_in, d_out) of one linear/addmm/mm call, None when its shapes are not recorded."""
    dims = parse_dims(trace, i)
    name = trace.name(int(trace.ops.name[i]))
    try:
        if name == "aten::addmm":
            (m, k), (_, n) = dims[1], dims[2]
            return int(m), int(k), int(n)
        if name == "aten::mm":
            (m, k), (_, n) = dims[0], dims[1]
            return int(m), int(k), int(n)
        x, w = dims[0], dims[1]
        if len(w) != 2 or not x or w[1] != x[-1]:
            return None
        return int(np.prod(x[:-1])) if len(x) > 1 else 1, int(x[-1]), int(w[0])
    except (IndexError, TypeError, ValueError):
        return None


def adapter_estimate(trace: Trace, rank: int = 8) -> AdapterEstimate:
    """What rank-``rank`` LoRA on every linear layer of ``trace`` would add per step.

    Args:
        trace: any loaded trace recorded with ``record_shapes`` (calls without shapes are skipped).
        rank: the adapters' rank r.

    Raises:
        ValueError: rank below 1.
    """
    if rank < 1:
        raise ValueError(f"rank {rank} must be at least 1")
    ops, k, L = trace.ops, trace.kernels, trace.launches
    gpu = len(k) > 0
    if gpu:
        has = k.op >= 0
        per_op = device_total(ops.parent, k.op[has], k.dur_us[has], len(ops))  # (ops,) us of GPU time
        linked = L.n_gpu > 0
        launch = float(np.median(L.dur_us[linked])) if linked.any() else 0.0
    else:
        per_op = ops.dur_us
        launch = dispatch_overhead(trace).per_call_us
    elementwise = max(_elementwise_us(trace, gpu), launch)
    steps = max(len(trace.steps), 1)
    calls = _linear_calls(trace)
    if len(trace.steps):
        calls = calls[ops.step[calls] >= 0]
    by_shape: dict[tuple, list[float]] = {}
    for i in calls.tolist():
        shape = _shape(trace, i)
        if shape is not None and min(shape[1], shape[2]) > rank:  # an adapter narrower than the layer
            by_shape.setdefault(shape, []).append(float(per_op[i]))
    rows = []
    for (tokens, d_in, d_out), times in sorted(by_shape.items(), key=lambda kv: -len(kv[1]) * np.median(kv[1])):
        base = float(np.median(times))
        share = rank * (d_in + d_out) / (d_in * d_out)
        matmul = base * share
        per_call = (FORWARD_OPS - 2) * elementwise + 2 * max(launch, matmul / 2)
        rows.append(AdapterShapeRow(tokens=tokens, d_in=d_in, d_out=d_out, calls_per_step=len(times) / steps,
                                    base_us=base, flop_share=share, adapter_matmul_us=matmul,
                                    launch_bound=bool(matmul / 2 < launch), estimate_us=per_call))
    step_us = float(np.median(trace.steps.dur_us)) if len(trace.steps) else None
    return AdapterEstimate(
        rank=rank, unit="kernel" if gpu else "op", launch_us=launch, elementwise_us=elementwise, steps=steps, step_us=step_us,
        base_us_per_step=sum(r.base_us * r.calls_per_step for r in rows),
        extra_ops_per_step=sum(FORWARD_OPS * r.calls_per_step for r in rows),
        estimate_us_per_step=sum(r.estimate_us * r.calls_per_step for r in rows),
        elementwise_us_per_step=sum((FORWARD_OPS - 2) * elementwise * r.calls_per_step for r in rows), rows=rows)
