"""The columnar tables of a loaded trace, and the Trace that holds them.

Every table is a frozen dataclass of equal-length numpy arrays (one row per event). Names are
int32 ids into ``Trace.names``; links between tables are int32 row indices, -1 for "none".
Times are float64 microseconds on the trace's own clock (``ts_us``; ``dur_us``); a trace
written with integer microseconds stays exact, a fractional one is as exact as float64 allows
(about 0.25 us at epoch-scale timestamps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..names import SCOPE_PREFIX

# Which table each link column points into (used when rows are filtered out).
LINKS: Dict[str, str] = {
    "parent": "ops", "fwd_op": "ops", "op": "ops", "launch": "launches", "kernel": "kernels",
    "scope": "scopes", "step": "steps",
}


def link_target(table: str, column: str) -> Optional[str]:
    """The table a link column points into: ``parent`` points into its own table (ops nest in
    ops, scopes in scopes), every other link as ``LINKS`` says; None for non-link columns."""
    if column == "parent":
        return table
    return LINKS.get(column)


def gather(values: np.ndarray, link: np.ndarray, fill=-1) -> np.ndarray:
    """``values[link]`` where ``link >= 0``, ``fill`` where it is -1 (safe on empty tables)."""
    out = np.full(len(link), fill, dtype=np.result_type(values.dtype, np.min_scalar_type(fill)))
    ok = link >= 0
    out[ok] = values[link[ok]]
    return out


class _Table:
    """Shared behaviour: length, row selection, column listing."""

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    def columns(self) -> List[str]:
        """Column names in declaration order."""
        return [f.name for f in dataclasses.fields(self)]

    def take(self, rows: np.ndarray):
        """A table of the same type holding ``rows`` (indices or boolean mask); links unchanged."""
        return dataclasses.replace(self, **{c: getattr(self, c)[rows] for c in self.columns()})


@dataclass(frozen=True, eq=False)  # tables of arrays: == would be ambiguous
class Ops(_Table):
    """CPU operators (``cpu_op`` / legacy ``Operator``), one row per op call.

    Columns: name (int32 name id); ts_us, dur_us (float64 us); self_us (float64 us: dur minus
    the durations of its direct child ops on the same thread, >= 0); pid, tid (int64); file
    (int16: index into Trace.files); ext (int64 External id, -1); seq (int64 autograd Sequence
    number, -1); fwd_tid (int64 "Fwd thread id" arg, -1); dims (int32 name id of the op's
    "Input Dims" JSON text, -1 without record_shapes); parent (int32 op index of the innermost
    enclosing op on the same thread, -1); depth (int16, 0 = top level); is_top (bool, depth 0);
    is_backward (bool: an autograd backward node or an op nested under one); fwd_op (int32: the
    forward op that created this backward op's node, -1); scope (int32 innermost enclosing
    ``lp/`` scope on the same thread, -1); step (int32 index into Trace.steps, -1).
    """

    name: np.ndarray
    ts_us: np.ndarray
    dur_us: np.ndarray
    self_us: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    file: np.ndarray
    ext: np.ndarray
    seq: np.ndarray
    fwd_tid: np.ndarray
    dims: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    is_top: np.ndarray
    is_backward: np.ndarray
    fwd_op: np.ndarray
    scope: np.ndarray
    step: np.ndarray


@dataclass(frozen=True, eq=False)  # tables of arrays: == would be ambiguous
class Kernels(_Table):
    """GPU activities: kernels, memcpys and memsets, one row each.

    Columns: name (int32); cat (int8: 0 kernel, 1 memcpy, 2 memset; see schema.GPU_CAT_NAMES);
    kind (int8: index into schema.KIND_NAMES — gemm, elementwise, reduction, memcpy, memset,
    communication, other); ts_us, dur_us (float64 us); device, stream (int64); corr (int64
    correlation id, -1); ext (int64 External id, -1); bytes (int64, memcpy/memset size, -1);
    file (int16); launch (int32 index into Launches, -1 = unlinked); op (int32 op that made the
    launch, -1); scope (int32, inherited from the launch); step (int32).
    """

    name: np.ndarray
    cat: np.ndarray
    kind: np.ndarray
    ts_us: np.ndarray
    dur_us: np.ndarray
    device: np.ndarray
    stream: np.ndarray
    corr: np.ndarray
    ext: np.ndarray
    bytes: np.ndarray
    file: np.ndarray
    launch: np.ndarray
    op: np.ndarray
    scope: np.ndarray
    step: np.ndarray


@dataclass(frozen=True, eq=False)  # tables of arrays: == would be ambiguous
class Launches(_Table):
    """CPU calls that queue GPU work: kernel launches (runtime, driver, HIP) and memcpy/memset
    calls, plus any other runtime call with a correlated GPU activity.

    Columns: name (int32); ts_us, dur_us (float64 us: the call on the CPU); pid, tid (int64);
    file (int16); corr (int64); ext (int64); op (int32 innermost enclosing op on the same
    thread, else the op with the same External id, -1); kernel (int32 first GPU activity with
    this correlation id, -1); n_gpu (int32 GPU activities it queued); scope, step (int32).
    """

    name: np.ndarray
    ts_us: np.ndarray
    dur_us: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    file: np.ndarray
    corr: np.ndarray
    ext: np.ndarray
    op: np.ndarray
    kernel: np.ndarray
    n_gpu: np.ndarray
    scope: np.ndarray
    step: np.ndarray


@dataclass(frozen=True, eq=False)  # tables of arrays: == would be ambiguous
class Scopes(_Table):
    """``record_function`` ranges whose name starts with the scope prefix (default ``lp/``).

    Columns: name (int32); ts_us, dur_us (float64 us); pid, tid (int64); file (int16); parent
    (int32 enclosing scope on the same thread, -1); depth (int16); step (int32).
    """

    name: np.ndarray
    ts_us: np.ndarray
    dur_us: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    file: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    step: np.ndarray


@dataclass(frozen=True, eq=False)  # tables of arrays: == would be ambiguous
class Annotations(_Table):
    """Every other CPU ``record_function`` range (not a step, not a scope), e.g.
    ``nccl:all_reduce``, ``Optimizer.step#SGD.step``.

    Columns: name (int32); ts_us, dur_us (float64 us); pid, tid (int64); file (int16); step;
    dims (int32 name id of ``repr([Input Dims, Input type])``, -1 without Input Dims: the
    tensors a collective such as ``gloo:all_reduce`` moved; ``select.parse_annotation_dims``).
    """

    name: np.ndarray
    ts_us: np.ndarray
    dur_us: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    file: np.ndarray
    step: np.ndarray
    dims: np.ndarray


@dataclass(frozen=True, eq=False)  # tables of arrays: == would be ambiguous
class Steps(_Table):
    """``ProfilerStep#N`` windows, one row per step and file, in time order within a file.

    Columns: number (int64 N); name (int32); ts_us, dur_us (float64 us: the CPU window);
    pid, tid (int64); file (int16); gpu_ts_us, gpu_end_us (float64 us: the step's GPU window,
    from the ``gpu_user_annotation`` of the step when present, else the span of the kernels
    launched in it; NaN without GPU work).
    """

    number: np.ndarray
    name: np.ndarray
    ts_us: np.ndarray
    dur_us: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    file: np.ndarray
    gpu_ts_us: np.ndarray
    gpu_end_us: np.ndarray


@dataclass(frozen=True, eq=False)  # tables of arrays: == would be ambiguous
class Memory(_Table):
    """Allocator events (``[memory]`` instants written with ``profile_memory=True``).

    Columns: ts_us (float64 us); bytes (int64, + allocation / - free); total_allocated,
    total_reserved (int64 bytes after the event, -1 when the schema lacks them, e.g. 2021
    legacy); device_type (int16 as recorded by c10: 0 CPU, 1 CUDA, 6 HIP); device_id (int16,
    -1 for CPU); pid, tid (int64); file (int16); step (int32).
    """

    ts_us: np.ndarray
    bytes: np.ndarray
    total_allocated: np.ndarray
    total_reserved: np.ndarray
    device_type: np.ndarray
    device_id: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    file: np.ndarray
    step: np.ndarray


TABLES = ("ops", "kernels", "launches", "scopes", "annotations", "steps", "memory")


@dataclass(frozen=True, repr=False)
class Trace:
    """A loaded trace: tables, the shared name list and what the loader noticed.

    Attributes:
        names: interned strings; every ``name``/``dims`` column indexes this list.
        ops, kernels, launches, scopes, annotations, steps, memory: the tables.
        device: "cuda", "rocm" or "cpu" (no GPU activity).
        files: the trace files read, in ``file`` column order.
        meta: per file, the small top-level keys (displayTimeUnit, distributedInfo, ...).
        skipped: reason -> count of malformed events dropped.
        ignored: category (or ``ph=...``) -> count of well-formed events not tabulated
            (python_function, flows, metadata, ...).
        counts: loader figures: ``events``, ``kernels_unlinked`` (GPU kernels whose launch is
            not in the trace), ``gpu_unlinked`` (any GPU activity), ``runtime_calls``.
        scope_prefix: the prefix that selected the scopes.
    """

    names: List[str]
    ops: Ops
    kernels: Kernels
    launches: Launches
    scopes: Scopes
    annotations: Annotations
    steps: Steps
    memory: Memory
    device: str
    files: List[str]
    meta: List[Dict[str, Any]] = field(default_factory=list)
    skipped: Dict[str, int] = field(default_factory=dict)
    ignored: Dict[str, int] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)
    scope_prefix: str = SCOPE_PREFIX

    def name(self, name_id: int) -> str:
        """The string for a name id ('' for -1)."""
        return self.names[name_id] if name_id >= 0 else ""

    def name_ids(self, predicate) -> np.ndarray:
        """Sorted ids of the names for which ``predicate(str)`` is true, e.g. a prefix test."""
        return np.array([i for i, s in enumerate(self.names) if predicate(s)], dtype=np.int32)

    def names_of(self, ids: Sequence[int]) -> List[str]:
        """Strings for an array of name ids."""
        names = self.names
        return [names[i] if i >= 0 else "" for i in np.asarray(ids).tolist()]

    def step_numbers(self) -> List[int]:
        """The distinct ProfilerStep numbers in the trace, ascending."""
        return sorted(set(self.steps.number.tolist()))

    def for_step(self, number: int) -> "Trace":
        """This trace restricted to ``ProfilerStep#number`` (see ``select.for_step``)."""
        from .select import for_step
        return for_step(self, number)

    def summary(self) -> Dict[str, Any]:
        """Row counts per table and the loader's counters (JSON-serialisable)."""
        return {"device": self.device, "files": list(self.files),
                **{t: len(getattr(self, t)) for t in TABLES},
                "counts": dict(self.counts), "skipped": dict(self.skipped)}

    def __repr__(self) -> str:
        files = self.files[0] if len(self.files) == 1 else f"{len(self.files)} files"
        skipped = sum(self.skipped.values())
        return (f"<Trace {self.device}: {files}; {len(self.steps)} steps, {len(self.ops):,} ops, "
                f"{len(self.kernels):,} GPU activities, {len(self.launches):,} launches, "
                f"{len(self.scopes):,} scopes" + (f", {skipped:,} malformed events skipped" if skipped else "") + ">")


def empty(table_type, n: int = 0) -> Any:
    """A table of ``table_type`` with ``n`` rows of -1/NaN/False (for tests and merges)."""
    cols = {}
    for f in dataclasses.fields(table_type):
        if f.name.endswith("_us"):
            cols[f.name] = np.full(n, np.nan)
        elif f.name.startswith("is_"):
            cols[f.name] = np.zeros(n, dtype=bool)
        else:
            cols[f.name] = np.full(n, -1, dtype=np.int64)
    return table_type(**cols)


def concat(tables: Sequence[Any], offsets: Optional[Sequence[Dict[str, int]]] = None,
           name: Optional[str] = None) -> Any:
    """Concatenate tables of one type (``name``: its name in TABLES); ``offsets[i][table]`` is
    added to valid link columns."""
    first = tables[0]
    cols = {}
    for c in first.columns():
        target = link_target(name or "", c)
        parts = []
        for i, t in enumerate(tables):
            col = getattr(t, c)
            if offsets is not None and target and offsets[i].get(target):
                col = np.where(col >= 0, col + offsets[i][target], col).astype(col.dtype)
            parts.append(col)
        cols[c] = np.concatenate(parts)
    return type(first)(**cols)
