"""Measure this device for the cost model (``lora_profiler.predict``), in a few seconds.

- every distinct matmul shape of the censuses (``census.py``), run alone with its own strides;
- each op class's memory throughput (GB/s) at a size like the model's activations;
- the cost of dispatching an op (from a small known loop, counted by the same census), of a view,
  of calling a module, of running an autograd node.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..predict import _matmul_key, op_class, op_flops
from .census import _Census

_DT = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _median_us(fn: Callable[[], object], device: torch.device, reps: int = 5, min_s: float = 0.002) -> float:
    """Median wall time of ``fn`` (us), each timing repeating it enough to last ``min_s``."""
    fn()
    one = float("inf")
    for _ in range(3):  # the fastest of three: one preempted call must not make every rep a single call
        t0 = time.perf_counter()
        fn()
        one = min(one, time.perf_counter() - t0)
    inner = max(1, int(min_s / max(one, 1e-7)))
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - t0) / inner)
    return float(np.median(out)) * 1e6


def _make(sig, device) -> torch.Tensor:
    shape, strides, dtype = sig
    dt = _DT.get(dtype, torch.float32)
    span = 1 + sum((d - 1) * s for d, s in zip(shape, strides) if d > 0)
    return torch.randn(max(span, 1), dtype=dt, device=device).as_strided(shape, strides)


def measure_matmuls(censuses: list, device: torch.device) -> list:
    """Time every distinct matmul-class signature of the censuses (mm, addmm, bmm, baddbmm)."""
    seen, out = set(), []
    for census in censuses:
        for e in census["ops"]:
            if op_class(e["op"]) != "matmul" or e["op"] not in ("mm", "addmm", "bmm", "baddbmm"):
                continue
            key = _matmul_key(e)
            if key in seen:
                continue
            seen.add(key)
            ins = [s for s in e["inputs"] if isinstance(s, list)]
            try:
                ts = [_make(s, device) for s in ins]
                fn = getattr(torch.ops.aten, e["op"]).default
                us = _median_us(lambda: fn(*ts), device)
            except (RuntimeError, ValueError, TypeError):
                continue
            out.append({"key": key, "op": e["op"], "inputs": ins, "us": us, "flops": op_flops(e)})
    return out


def measure_classes(device: torch.device, dtype: torch.dtype, numel: int) -> dict:
    """GB/s of each op class at ``numel`` elements (one representative op each)."""
    n = max(int(numel), 1 << 14)
    x = torch.randn(n, device=device, dtype=dtype)
    y = torch.randn(n, device=device, dtype=dtype)
    e = x.element_size()
    idx = torch.randint(0, 1024, (n // 64,), device=device)
    table = torch.randn(1024, 64, device=device, dtype=dtype)
    probes = {
        "elementwise": (lambda: x * y, 3 * n * e),
        "copy": (lambda: x.clone(), 2 * n * e),
        "random": (lambda: torch.empty_like(x).bernoulli_(0.9), n * e),
        "transcendental": (lambda: F.silu(x), 2 * n * e),
        "reduction": (lambda: x.sum(), n * e),
        "softmax": (lambda: torch.softmax(x.view(-1, 256), dim=-1), 2 * n * e),
        "index": (lambda: F.embedding(idx, table), 2 * (n // 64) * 64 * e),
        "foreach": (lambda: torch._foreach_mul_([x], 1.0), 2 * n * e),
    }
    return {cls: {"gbs": nbytes / (_median_us(fn, device) * 1e3), "probe_elements": n}
            for cls, (fn, nbytes) in probes.items()}


def measure_overheads(device: torch.device) -> dict:
    """us to dispatch an op (a small forward and backward, ops counted by the census), a view, a
    module call, an autograd node."""
    lin = nn.Linear(8, 8).to(device)
    x = torch.randn(4, 8, device=device, requires_grad=True)

    def small():
        F.dropout(lin(x), 0.1, True).sum().backward()

    rec = _Census()
    with rec:
        small()
    n_ops = sum(e["count"] for e in rec.ops.values())
    per_op = _median_us(small, device) / max(n_ops, 1)
    a = torch.randn(8, device=device)
    view = _median_us(lambda: a.view(2, 4), device)
    ident = nn.Identity()
    call = max(_median_us(lambda: ident(a), device) - 0.1, 0.0)
    leaf = torch.randn(8, device=device, requires_grad=True)
    s = torch.full((8,), 1.0001, device=device)

    def chain():
        y = leaf
        for _ in range(20):
            y = y * s
        y.sum().backward()
    rec = _Census()
    with rec:
        chain()
    chain_ops = sum(e["count"] for e in rec.ops.values())
    node = max((_median_us(chain, device) - chain_ops * per_op) / 22, 0.0)  # 20 muls + sum + accumulate
    return {"dispatch_us": per_op, "view_us": view, "module_call_us": call, "node_us": node}


def device_model(censuses: list, device: torch.device, dtype: torch.dtype) -> dict:
    """Everything ``predict`` needs about this device, measured now (facts ``device_model``)."""
    started = time.perf_counter()
    sizes = [max((s[0] and int(np.prod(s[0]))) or 1 for s in e["inputs"] if isinstance(s, list))
             for c in censuses for e in c["ops"] if e["inputs"] and isinstance(e["inputs"][0], list)]
    numel = int(np.median(sizes)) if sizes else 1 << 20
    out = {"device": device.type, "dtype": str(dtype).replace("torch.", ""),
           "matmul": measure_matmuls(censuses, device),
           "classes": measure_classes(device, dtype, numel),
           **measure_overheads(device)}
    out["seconds"] = time.perf_counter() - started
    return out
