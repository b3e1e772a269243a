"""Views on a loaded trace: one step, effective scopes, op input shapes."""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List

import numpy as np

from .errors import TraceError
from .tables import TABLES, Trace, gather, link_target


def for_step(trace: Trace, number: int) -> Trace:
    """The trace restricted to the rows of ``ProfilerStep#number``.

    Every table keeps the rows whose ``step`` is that step (the steps table keeps the step's
    row or rows, one per file); link columns are renumbered, and links to rows outside the
    step become -1.

    Raises:
        TraceError: the trace has no step with that number (the message lists the numbers).
    """
    keep_steps = np.flatnonzero(trace.steps.number == number)
    if keep_steps.size == 0:
        have = trace.step_numbers()
        raise TraceError(f"{trace.files[0] if trace.files else 'trace'}: no ProfilerStep#"
                         f"{number}; steps in the trace: {have or 'none'}")
    masks: Dict[str, np.ndarray] = {"steps": np.zeros(len(trace.steps), dtype=bool)}
    masks["steps"][keep_steps] = True
    for t in TABLES:
        if t != "steps":
            masks[t] = np.isin(getattr(trace, t).step, keep_steps)
    return _subset(trace, masks)


def _subset(trace: Trace, masks: Dict[str, np.ndarray]) -> Trace:
    """Keep the masked rows of every table and renumber the links between them."""
    remap = {}
    for t, m in masks.items():
        r = np.full(len(m) + 1, -1, dtype=np.int32)               # slot -1 maps -1 to -1
        r[:-1][m] = np.arange(int(m.sum()), dtype=np.int32)
        remap[t] = r
    new = {}
    for t in TABLES:
        table = getattr(trace, t).take(masks[t])
        fix = {c: remap[link_target(t, c)][getattr(table, c)] for c in table.columns()
               if link_target(t, c) in remap}
        new[t] = dataclasses.replace(table, **fix)
    return dataclasses.replace(trace, **new)


def effective_scope(trace: Trace) -> np.ndarray:
    """(ops,) int32 scope of each op: its own, else that of its forward op (backward ops).

    Backward ops run outside every scope (on the autograd thread, or after the forward); the
    forward op that created their node was inside one, which is how a backward matmul gets
    its adapter scope.
    """
    ops = trace.ops
    own = ops.scope
    return np.where(own >= 0, own, gather(own, ops.fwd_op)).astype(np.int32)


def kernel_effective_scope(trace: Trace) -> np.ndarray:
    """(kernels,) int32 effective scope of each kernel's launching op (else its own scope)."""
    eff = effective_scope(trace)
    k = trace.kernels
    return np.where(k.op >= 0, gather(eff, k.op), k.scope).astype(np.int32)


def parse_dims(trace: Trace, op_index: int) -> List[list]:
    """The op's ``Input Dims`` (record_shapes) as a list of lists; [] when not recorded."""
    did = int(trace.ops.dims[op_index])
    if did < 0:
        return []
    try:
        dims = json.loads(trace.names[did])
    except ValueError:
        return []
    return dims if isinstance(dims, list) else []
