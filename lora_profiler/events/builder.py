"""The one pass over a trace's events: each event's fields go straight into flat numeric buffers.

No event dict outlives its loop iteration. Every kept event appends one row of numbers to the
flat ``array('d')`` buffer of its class (float64 holds the integer ids exactly: they are all
below 2**53); names and other strings are interned into one shared ``names`` dict (str -> id).
``array.fromlist`` either appends the whole row or nothing, so a bad field cannot misalign the
columns. Arg-spelling variants are normalised here (``External id`` / ``external id``).
"""

from __future__ import annotations

from array import array
from typing import Any, Dict, Iterable, List

import numpy as np

from .schema import (ANNOTATION, GPU, GPU_ANNOTATION, MEMORY_EVENT_NAME, OP, RUNTIME,
                     X_CATEGORIES)

# Row layouts of the flat buffers (column order). Units: ts/dur in us, bytes in bytes.
OP_COLS = ("name", "ts_us", "dur_us", "pid", "tid", "ext", "seq", "fwd_tid", "dims")
ANNOT_COLS = ("name", "ts_us", "dur_us", "pid", "tid", "ext")
RUNTIME_COLS = ("name", "ts_us", "dur_us", "pid", "tid", "corr", "ext")
GPU_COLS = ("name", "ts_us", "dur_us", "device", "stream", "corr", "ext", "bytes", "cat")
GPU_ANNOT_COLS = ("name", "ts_us", "dur_us", "device", "stream")
MEM_COLS = ("ts_us", "bytes", "total_allocated", "total_reserved", "device_type", "device_id",
            "pid", "tid")

_EMPTY: Dict[str, Any] = {}


class RawFile:
    """Columns of one trace file, before linking: ``cols[class][column] -> ndarray``."""

    def __init__(self) -> None:
        self.cols: Dict[str, Dict[str, np.ndarray]] = {}
        self.skipped: Dict[str, int] = {}   # reason -> events dropped as malformed
        self.ignored: Dict[str, int] = {}   # category -> well-formed events not tabulated
        self.n_events = 0


def build(batches: Iterable[List[Any]], names: Dict[str, int], ids: Dict[Any, int]) -> RawFile:
    """Read the events once into flat column buffers.

    Args:
        batches: lists of decoded trace events (dicts), e.g. from ``jsonstream.iter_events``.
        names: the shared string intern table (str -> id), extended in place.
        ids: cache for non-integer pid/tid values (legacy traces write tids as strings);
            numeric strings become their number, other strings negative ids.

    Returns:
        A RawFile whose ``cols`` hold float64/int columns per event class.
    """
    out = RawFile()
    ops, ann, rt, gpu, gann, mem = (array("d") for _ in range(6))
    add_op, add_ann, add_rt = ops.fromlist, ann.fromlist, rt.fromlist
    add_gpu, add_gann, add_mem = gpu.fromlist, gann.fromlist, mem.fromlist
    skipped, ignored = out.skipped, out.ignored
    intern = names.setdefault
    cats = {cat: (cls if cls != GPU else GPU + gcat) for cat, (cls, gcat) in X_CATEGORIES.items()}
    op_, rt_, ann_, gann_ = OP, RUNTIME, ANNOTATION, GPU_ANNOTATION
    EXT, EXT_LEGACY = "External id", "external id"
    other_ph: Dict[Any, int] = {}
    n = 0
    for batch in batches:
        n += len(batch)
        for e in batch:
            try:
                ph = e.get("ph")
                if ph == "X":
                    cls = cats.get(e.get("cat"), 0)
                    if not cls:
                        c = str(e.get("cat"))
                        ignored[c] = ignored.get(c, 0) + 1
                        continue
                    name = e["name"]
                    ts = e["ts"]
                    dur = e["dur"]
                    if not dur >= 0:   # also NaN
                        skipped["negative dur"] = skipped.get("negative dur", 0) + 1
                        continue
                    if name.__class__ is not str:
                        skipped["non-string name"] = skipped.get("non-string name", 0) + 1
                        continue
                    nid = intern(name, len(names))
                    a = e.get("args") or _EMPTY
                    pid = e.get("pid", -1)
                    tid = e.get("tid", -1)
                    if pid.__class__ is not int:
                        pid = _ident(pid, ids)
                    if tid.__class__ is not int:
                        tid = _ident(tid, ids)
                    ext = a.get(EXT)
                    if ext is None:
                        ext = a.get(EXT_LEGACY, -1)
                    if cls == op_:
                        dims = a.get("Input Dims")
                        add_op([nid, ts, dur, pid, tid, ext, a.get("Sequence number", -1),
                                a.get("Fwd thread id", -1),
                                -1 if dims is None else intern(repr(dims), len(names))])
                    elif cls == rt_:
                        add_rt([nid, ts, dur, pid, tid, a.get("correlation", -1), ext])
                    elif cls == ann_:
                        add_ann([nid, ts, dur, pid, tid, ext])
                    elif cls == gann_:
                        add_gann([nid, ts, dur, a.get("device", pid), a.get("stream", tid)])
                    else:  # GPU + category
                        add_gpu([nid, ts, dur, a.get("device", pid), a.get("stream", tid),
                                 a.get("correlation", -1), ext, a.get("bytes", -1), cls - GPU])
                elif (ph == "i" or ph == "I") and e.get("name") == MEMORY_EVENT_NAME:
                    a = e["args"]
                    pid = e.get("pid", -1)
                    tid = e.get("tid", -1)
                    if pid.__class__ is not int:
                        pid = _ident(pid, ids)
                    if tid.__class__ is not int:
                        tid = _ident(tid, ids)
                    add_mem([e["ts"], a["Bytes"], a.get("Total Allocated", -1),
                             a.get("Total Reserved", -1), a.get("Device Type", -1),
                             a.get("Device Id", -1), pid, tid])
                else:
                    other_ph[ph] = other_ph.get(ph, 0) + 1
            except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
                reason = _why(e, exc)
                skipped[reason] = skipped.get(reason, 0) + 1
    for ph, count in other_ph.items():
        if ph is None:
            skipped["missing ph"] = skipped.get("missing ph", 0) + count
        else:
            ignored[f"ph={ph}"] = ignored.get(f"ph={ph}", 0) + count
    out.n_events = n
    buffers = {"ops": (ops, OP_COLS), "annotations": (ann, ANNOT_COLS),
               "runtime": (rt, RUNTIME_COLS), "gpu": (gpu, GPU_COLS),
               "gpu_annotations": (gann, GPU_ANNOT_COLS), "memory": (mem, MEM_COLS)}
    del ops, ann, rt, gpu, gann, mem, add_op, add_ann, add_rt, add_gpu, add_gann, add_mem
    for key in list(buffers):              # convert one buffer at a time, freeing each after
        buf, layout = buffers.pop(key)
        out.cols[key] = _columns(buf, layout)
        del buf
    return out


def _columns(buf: array, layout) -> Dict[str, np.ndarray]:
    """Split a flat row-major buffer into named columns: times float64 (us), name ids int32,
    other ids int64."""
    flat = np.frombuffer(buf, dtype=np.float64) if len(buf) else np.zeros(0)
    rows = flat.reshape(-1, len(layout))                          # (events, columns)
    cols = {}
    for j, col in enumerate(layout):
        c = rows[:, j]
        if col.endswith("_us"):
            cols[col] = c.copy()
        else:
            cols[col] = c.astype(np.int32 if col in ("name", "dims") else np.int64)
    return cols


def _ident(x: Any, ids: Dict[Any, int]) -> int:
    """An int for a pid/tid that is not an int: '25738' -> 25738; 'stream 7' -> a negative id."""
    try:
        return ids[x]
    except KeyError:
        pass
    except TypeError:           # unhashable (list/dict): not a usable id
        return -1
    if isinstance(x, str) and x.strip().lstrip("-").isdigit():
        v = int(x)
    elif isinstance(x, float) and x.is_integer():
        v = int(x)
    else:
        v = -2 - len(ids)
    ids[x] = v
    return v


def _why(e: Any, exc: BaseException) -> str:
    """A short reason for dropping a malformed event (slow path only)."""
    if not isinstance(e, dict):
        return "not an object"
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]}"
    for key in ("name", "ts", "dur"):
        v = e.get(key)
        if key == "name" and v is not None and not isinstance(v, str):
            return "non-string name"
        if key != "name" and v is not None and not isinstance(v, (int, float)):
            return f"non-numeric {key}"
    if isinstance(exc, TypeError) and "unhashable" in str(exc):
        return "non-string name"
    return "non-numeric field"
