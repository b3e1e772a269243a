"""The ops one training step of a mode runs, with their shapes: what the cost model predicts from.

A ``TorchDispatchMode`` records every ATen op that reaches a kernel (below autograd, after
composite ops are decomposed) during one step: its name, the phase it ran in (forward, backward,
optimizer), and its tensor inputs' shapes, strides and dtypes. Identical signatures are counted
once with their count. Module calls and autograd nodes are counted too (their Python and engine
cost is part of a step). It works on the meta device, where nothing is computed or allocated:
the census of a model too large to run here (GPT2-xl) still gives its shapes.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..workload.modes import InputGrad, switch_mode
from ..workload.spec import Workload

_VIEWS = frozenset({"t", "view", "_unsafe_view", "expand", "transpose", "permute", "as_strided", "detach",
                    "alias", "slice", "select", "unsqueeze", "squeeze", "reshape", "split", "split_with_sizes",
                    "unbind", "chunk", "narrow", "lift_fresh", "_reshape_alias", "view_as", "expand_as",
                    "diagonal", "unflatten", "flatten", "contiguous_view"})


def _tensor_sig(t) -> list:
    return [list(t.shape), list(t.stride()), str(t.dtype).replace("torch.", "")]


def _signature(args) -> list:
    """Tensor inputs as [shape, strides, dtype]; a list of tensors (foreach ops) as one entry
    {"list": n, "numel": total, "dtype": ...}."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(_tensor_sig(a))
        elif isinstance(a, (list, tuple)) and a and all(isinstance(x, torch.Tensor) for x in a):
            out.append({"list": len(a), "numel": int(sum(x.numel() for x in a)),
                        "dtype": str(a[0].dtype).replace("torch.", "")})
    return out


class _Census(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.phase = "forward"
        self.ops: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name.split("::")[-1]
        outs = out if isinstance(out, (list, tuple)) else [out]
        sig = {"op": name, "phase": self.phase, "view": name in _VIEWS,
               "inputs": _signature(args), "outputs": _signature(outs)}
        key = repr((name, self.phase, sig["inputs"], sig["outputs"]))
        entry = self.ops.setdefault(key, dict(sig, count=0))
        entry["count"] += 1
        return out


def _node_count(loss: torch.Tensor) -> int:
    """Autograd nodes the backward of ``loss`` runs (its graph, walked once)."""
    seen, stack = set(), [loss.grad_fn] if loss.grad_fn is not None else []
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return len(seen)


def op_census(workload: Workload, mode: str, input_grad: Optional[InputGrad] = None, lr: float = 1e-5) -> dict:
    """One step of ``mode`` recorded op by op (the second of two, so the optimizer's state exists).

    Returns:
        ``{"mode", "ops": [{"op", "phase", "view", "inputs", "outputs", "count"}], "module_calls",
        "nodes", "trainable_tensors"}``.
    """
    own = input_grad is None
    ig = input_grad or InputGrad(workload.model, workload.floor)
    calls = [0]

    def count(module, args):
        calls[0] += 1

    handles = [m.register_forward_pre_hook(count) for m in workload.model.modules()]
    try:
        cfg = switch_mode(workload, mode, ig)
        opt = torch.optim.AdamW(cfg.trainable, lr=lr) if cfg.trainable else None
        census = None
        for i in range(2):
            census = _Census() if i == 1 else None
            calls[0] = 0
            with census if census is not None else _null():
                if opt is not None:
                    if census is not None:
                        census.phase = "optimizer"
                    opt.zero_grad(set_to_none=True)
                if census is not None:
                    census.phase = "forward"
                with torch.set_grad_enabled(cfg.backward):
                    loss = workload.loss_fn(workload.model, cfg.batch)
                nodes = _node_count(loss) if cfg.backward else 0
                module_calls = calls[0]
                if cfg.backward:
                    if census is not None:
                        census.phase = "backward"
                    loss.backward()
                if opt is not None:
                    if census is not None:
                        census.phase = "optimizer"
                    opt.step()
        for p in cfg.trainable:
            p.grad = None
    finally:
        for h in handles:
            h.remove()
        if own:
            ig.remove()
    return {"mode": mode, "ops": list(census.ops.values()), "module_calls": module_calls, "nodes": nodes,
            "trainable_tensors": len(cfg.trainable)}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
