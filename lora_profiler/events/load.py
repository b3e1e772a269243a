"""``load_trace``: files -> one pass per file -> linked tables -> one Trace."""

from __future__ import annotations

import gc
import sys
from typing import Any, Dict, List, Sequence, Union

import numpy as np

from .builder import build
from .errors import TraceError
from .files import PathLike, find_trace_files
from .jsonstream import iter_events
from .limits import JSON_DEPTH
from .link import assemble
from .nesting import DepthError
from .parallel import Pool, forget_last, workers_wanted
from .schema import DEFAULT_SCOPE_PREFIX
from .tables import TABLES, Trace, concat

# top-level keys worth keeping per file (small); the rest (e.g. deviceProperties) is summarised
_META_KEYS = ("displayTimeUnit", "distributedInfo", "schemaVersion", "traceName",
              "baseTimeNanoseconds", "record_shapes", "profile_memory", "with_stack",
              "cuda_runtime_version", "hip_runtime_version", "roctracer_version")


def load_trace(paths: Union[PathLike, Sequence[PathLike]],
               scope_prefix: str = DEFAULT_SCOPE_PREFIX) -> Trace:
    """Read one or more Chrome/Kineto trace files into linked columnar tables.

    Args:
        paths: a trace file (``.json`` or gzip), a folder of per-rank trace files, or a list
            of either. Several files are concatenated; the ``file`` column tells them apart and
            links never cross files.
        scope_prefix: ``record_function`` names starting with this become scopes.

    Returns:
        A Trace (see ``lora_profiler.events`` for the tables and columns).

    Raises:
        TraceError: a path is missing, a folder holds no trace, or a file is empty, truncated,
            not JSON, JSON without trace events, holds no usable event, or exceeds a bound of
            ``limits`` (a value over 64 MiB, nesting too deep). The message names the file.
            Single malformed events do not raise: they are counted in ``Trace.skipped``.
    """
    files = find_trace_files(paths)
    names: Dict[str, int] = {}
    ids: Dict[Any, int] = {}
    parts, metas = [], []
    skipped: Dict[str, int] = {}
    ignored: Dict[str, int] = {}
    n_workers = workers_wanted()
    pool = Pool(n_workers) if n_workers else None
    forget_last()
    try:
        for i, f in enumerate(files):
            _read_file(i, f, pool, names, ids, parts, metas, skipped, ignored, scope_prefix)
    finally:
        if pool is not None:
            pool.close()
    name_list = list(names)
    if len(parts) == 1:
        tables = {t: parts[0][t] for t in TABLES}
    else:
        offsets, run = [], {t: 0 for t in TABLES}
        for p in parts:
            offsets.append(dict(run))
            for t in TABLES:
                run[t] += len(p[t])
        tables = {t: concat([p[t] for p in parts], offsets, name=t) for t in TABLES}
    counts: Dict[str, int] = {}
    for p in parts:
        _add(counts, p["counts"])
    return Trace(names=name_list, device=_device(tables, name_list, metas),
                 files=[str(f) for f in files], meta=metas, skipped=skipped, ignored=ignored,
                 counts=counts, scope_prefix=scope_prefix, **tables)


def _read_file(i, f, pool, names, ids, parts, metas, skipped, ignored, scope_prefix) -> None:
    """One file's events into ``parts`` (its linked tables) and ``metas``."""
    meta: Dict[str, Any] = {}
    raw = _build_without_gc(f, meta, names, ids, pool)
    _check_events(f, meta, raw)
    _add(skipped, raw.skipped)
    _add(ignored, raw.ignored)
    metas.append(_small_meta(meta))
    try:
        parts.append(assemble(raw, list(names), i, scope_prefix))
    except DepthError as exc:
        raise TraceError(f"{f}: events on one thread nested {exc.args[0]:,} deep (more than "
                         "the 32,767 levels a trace can hold); is the file damaged?") from None


def _build_without_gc(path, meta, names, ids, pool=None):
    """One pass over the file with the cyclic GC paused (the event dicts hold no cycles and are
    freed by reference counting, so GC passes would only re-scan them: ~10% of the time), and
    with recursion headroom for ``JSON_DEPTH`` levels, so the stdlib decoder reads whatever
    nesting orjson reads (orjson stops at 1,024) and the two paths agree."""
    was_enabled = gc.isenabled()
    limit = sys.getrecursionlimit()
    gc.disable()
    sys.setrecursionlimit(max(limit, _stack_depth() + JSON_DEPTH))
    try:
        return build(iter_events(path, meta, typed=True, pool=pool), names, ids, pool)
    finally:
        sys.setrecursionlimit(limit)
        if was_enabled:
            gc.enable()


def _stack_depth() -> int:
    """Frames on the current stack."""
    f, n = sys._getframe(), 0
    while f is not None:
        f, n = f.f_back, n + 1
    return n


def _check_events(path, meta: Dict[str, Any], raw) -> None:
    """Raise a TraceError for JSON that is not a trace (no event list, or no events in it)."""
    if not meta.get("_has_events_key"):
        raise TraceError(f"{path}: JSON without a 'traceEvents' list; not a Chrome/Kineto "
                         "trace (export one with torch.profiler export_chrome_trace)")
    if raw.n_events == 0:
        raise TraceError(f"{path}: the trace holds no events; profile at least one step "
                         "(check the profiler schedule's active steps)")
    if raw.skipped.get("not an object", 0) == raw.n_events:
        raise TraceError(f"{path}: JSON array whose items are not trace events (an "
                         "export_memory_timeline file?); pass a Chrome/Kineto trace")
    if sum(raw.skipped.values()) == raw.n_events:
        top = ", ".join(f"{n:,} {why}" for why, n in
                        sorted(raw.skipped.items(), key=lambda kv: -kv[1])[:3])
        raise TraceError(f"{path}: none of the {raw.n_events:,} events is usable ({top}); "
                         "is this a damaged or hand-edited trace?")


def _small_meta(meta: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON-friendly part of a file's top-level keys, with device names."""
    out = {k: meta[k] for k in _META_KEYS if k in meta}
    props = meta.get("deviceProperties")
    if isinstance(props, list):
        out["devices"] = [str(p.get("name", "")) for p in props if isinstance(p, dict)]
    return out


def _device(tables, names: List[str], metas: List[Dict[str, Any]]) -> str:
    """'cpu' without GPU activity; 'rocm' for HIP launches or AMD devices; else 'cuda'."""
    if len(tables["kernels"]) == 0:
        return "cpu"
    if any("hip_runtime_version" in m or "roctracer_version" in m for m in metas):
        return "rocm"
    if any(d.startswith("AMD") for m in metas for d in m.get("devices", [])):
        return "rocm"
    launch_names = np.unique(tables["launches"].name)
    if any(names[i].startswith("hip") for i in launch_names.tolist()):
        return "rocm"
    return "cuda"


def _add(total: Dict[str, int], part: Dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v
