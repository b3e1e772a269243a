"""The one pass over a trace's events: each event's fields go straight into flat numeric buffers.

No event dict outlives its loop iteration. Every kept event appends one row of numbers to the
flat ``array('d')`` buffer of its class (float64 holds the integer ids exactly: they are all
below 2**53); names and other strings are interned into one shared ``names`` dict (str -> id).
``array.fromlist`` either appends the whole row or nothing, so a bad field cannot misalign the
columns. Arg-spelling variants are normalised here (``External id`` / ``external id``).

Untrusted input: a field of the wrong type (a string, list, object, null or boolean where a
number belongs) drops the event in the loop; a number outside ``limits`` (NaN, inf, 1e300, a
negative or week-long duration, a fractional id) drops its row afterwards, with numpy on whole
columns. Both are counted by reason in ``RawFile.skipped``; nothing is repaired or clipped.
"""

from __future__ import annotations

import json
from array import array
from collections import deque
from itertools import islice
from typing import Any, Dict, Iterable, List

import numpy as np

from .jsonstream import OrjsonBatch, RemoteBatch, TypedBatch, _loads
from .limits import MAX_ABS_TS_US, MAX_DUR_US, MAX_ID
from .schema import (ANNOTATION, GPU, GPU_ANNOTATION, MEMORY_EVENT_NAME, OP, RUNTIME,
                     X_CATEGORIES)

# Row layouts of the flat buffers (column order). Units: ts/dur in us, bytes in bytes.
OP_COLS = ("name", "ts_us", "dur_us", "pid", "tid", "ext", "seq", "fwd_tid", "dims")
ANNOT_COLS = ("name", "ts_us", "dur_us", "pid", "tid", "ext", "dims")
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


def build(batches: Iterable[List[Any]], names: Dict[str, int], ids: Dict[Any, int],
          pool=None) -> RawFile:
    """Read the events once into flat column buffers, then drop rows outside ``limits``.

    Args:
        batches: lists of decoded trace events (dicts), e.g. from ``jsonstream.iter_events``.
        names: the shared string intern table (str -> id), extended in place.
        ids: cache for non-integer pid/tid values (legacy traces write tids as strings);
            numeric strings become their number, other strings negative ids.
        pool: the ``parallel.Pool`` that ``batches`` hands some batches to (as
            ``RemoteBatch``); their rows are merged in file order, so the result is the same.

    Returns:
        A RawFile whose ``cols`` hold float64/int columns per event class. Events with a
        missing, wrong-typed (booleans included) or out-of-range field are not in them: they
        are counted in ``skipped`` under a reason such as ``"missing ts"``, ``"non-numeric
        dur"``, ``"negative dur"``, ``"ts out of range"`` or ``"non-integer correlation"``.
    """
    out = RawFile()
    ops, ann, rt, gpu, gann, mem = (array("d") for _ in range(6))
    add_op, add_ann, add_rt = ops.fromlist, ann.fromlist, rt.fromlist
    add_gpu, add_gann, add_mem = gpu.fromlist, gann.fromlist, mem.fromlist
    skipped, ignored = out.skipped, out.ignored
    name_id = names.get
    cats = {cat: (cls if cls != GPU else GPU + gcat) for cat, (cls, gcat) in X_CATEGORIES.items()}
    op_, rt_, ann_, gann_ = OP, RUNTIME, ANNOTATION, GPU_ANNOTATION
    EXT, EXT_LEGACY = "External id", "external id"
    B, S, D = bool, str, dict
    other_ph: Dict[Any, int] = {}
    n = 0
    sinks = (ops, ann, rt, gpu, gann, mem)
    def read(batch) -> None:
        """Append one batch's rows (any kind of batch but a RemoteBatch)."""
        cls = batch.__class__
        if cls is TypedBatch:
            # msgspec decoded only the fields read here; its loop takes clean batches whole
            from .typed import rows

            before = _snapshot(sinks, names, ids, skipped, ignored, other_ph)
            if rows(batch, sinks, names, ids, ignored, other_ph, _ident):
                return
            _restore(before, sinks, names, ids, skipped, ignored, other_ph)
            batch = _dicts(batch.text)  # the typed loop left it: read it as dicts
            cls = batch.__class__
        # orjson decodes integers beyond 64 bits as floats: the Input Dims text of such a
        # batch would differ from the stdlib's, so it is read again with the stdlib
        inexact = cls is OrjsonBatch
        before = _snapshot(sinks, names, ids, skipped, ignored, other_ph) if inexact else None
        while True:
            try:
                for e in batch:
                    try:
                        ph = e.get("ph")
                        if ph == "X":
                            cat = e.get("cat")
                            cls = cats.get(cat, 0)
                            if not cls:
                                if cat is not None and cat.__class__ is not S:
                                    skipped["non-string cat"] = skipped.get("non-string cat", 0) + 1
                                else:
                                    c = str(cat)
                                    ignored[c] = ignored.get(c, 0) + 1
                                continue
                            name = e["name"]
                            ts = e["ts"]
                            dur = e["dur"]
                            if name.__class__ is not S:
                                skipped["non-string name"] = skipped.get("non-string name", 0) + 1
                                continue
                            a = e.get("args")
                            if a.__class__ is not D:
                                if a is not None:
                                    skipped["args not an object"] = skipped.get("args not an object",
                                                                                0) + 1
                                    continue
                                a = _EMPTY
                            pid = e.get("pid", -1)
                            tid = e.get("tid", -1)
                            if pid.__class__ is not int:
                                pid = _ident(pid, ids)
                            if tid.__class__ is not int:
                                tid = _ident(tid, ids)
                            if ts.__class__ is B or dur.__class__ is B:
                                raise TypeError("bool")
                            ext = a.get(EXT)
                            if ext is None:
                                ext = a.get(EXT_LEGACY, -1)
                            if ext.__class__ is B and cls != gann_:
                                raise TypeError("bool")
                            nid = name_id(name)
                            if nid is None:
                                nid = names[name] = len(names)
                            if cls == op_:
                                dims = a.get("Input Dims")
                                seq = a.get("Sequence number", -1)
                                fwd = a.get("Fwd thread id", -1)
                                if seq.__class__ is B or fwd.__class__ is B:
                                    raise TypeError("bool")
                                if dims is not None:
                                    dims = repr(dims)
                                    if inexact and "e+" in dims:
                                        raise _Inexact  # maybe an int orjson made a float
                                    did = name_id(dims)
                                    if did is None:
                                        did = names[dims] = len(names)
                                else:
                                    did = -1
                                add_op([nid, ts, dur, pid, tid, ext, seq, fwd, did])
                            elif cls == rt_:
                                corr = a.get("correlation", -1)
                                if corr.__class__ is B:
                                    raise TypeError("bool")
                                add_rt([nid, ts, dur, pid, tid, corr, ext])
                            elif cls == ann_:
                                dims = a.get("Input Dims")  # collectives' (nccl:all_reduce ...)
                                if dims is not None:
                                    dims = repr([dims, a.get("Input type")])
                                    if inexact and "e+" in dims:
                                        raise _Inexact
                                    did = name_id(dims)
                                    if did is None:
                                        did = names[dims] = len(names)
                                else:
                                    did = -1
                                add_ann([nid, ts, dur, pid, tid, ext, did])
                            else:
                                device = a.get("device", pid)
                                stream = a.get("stream", tid)
                                if device.__class__ is B or stream.__class__ is B:
                                    raise TypeError("bool")
                                if cls == gann_:
                                    add_gann([nid, ts, dur, device, stream])
                                else:  # GPU + category
                                    corr = a.get("correlation", -1)
                                    nbytes = a.get("bytes", -1)
                                    if corr.__class__ is B or nbytes.__class__ is B:
                                        raise TypeError("bool")
                                    add_gpu([nid, ts, dur, device, stream, corr, ext, nbytes, cls - GPU])
                        elif (ph == "i" or ph == "I") and e.get("name") == MEMORY_EVENT_NAME:
                            a = e["args"]
                            pid = e.get("pid", -1)
                            tid = e.get("tid", -1)
                            if pid.__class__ is not int:
                                pid = _ident(pid, ids)
                            if tid.__class__ is not int:
                                tid = _ident(tid, ids)
                            ts = e["ts"]
                            nbytes = a["Bytes"]
                            alloc = a.get("Total Allocated", -1)
                            resv = a.get("Total Reserved", -1)
                            dtype = a.get("Device Type", -1)
                            dev = a.get("Device Id", -1)
                            if (ts.__class__ is B or nbytes.__class__ is B or alloc.__class__ is B
                                    or resv.__class__ is B or dtype.__class__ is B or dev.__class__ is B):
                                raise TypeError("bool")
                            add_mem([ts, nbytes, alloc, resv, dtype, dev, pid, tid])
                        else:
                            other_ph[ph] = other_ph.get(ph, 0) + 1
                    except (KeyError, TypeError, AttributeError, ValueError, OverflowError,
                            RecursionError) as exc:
                        reason = _why(e, exc)
                        skipped[reason] = skipped.get(reason, 0) + 1
                break
            except _Inexact:
                _restore(before, sinks, names, ids, skipped, ignored, other_ph)
                batch, inexact = json.loads(batch.text), False

    if pool is None:
        for batch in batches:
            n += len(batch)
            read(batch)
    else:
        n = _read_in_parallel(batches, read, sinks, names, ignored, other_ph)
    for ph, count in other_ph.items():
        if ph is None:
            skipped["missing ph"] = skipped.get("missing ph", 0) + count
        elif ph.__class__ is not str:
            skipped["non-string ph"] = skipped.get("non-string ph", 0) + count
        else:
            ignored[f"ph={ph}"] = ignored.get(f"ph={ph}", 0) + count
    out.n_events = n
    buffers = {"ops": (ops, OP_COLS), "annotations": (ann, ANNOT_COLS),
               "runtime": (rt, RUNTIME_COLS), "gpu": (gpu, GPU_COLS),
               "gpu_annotations": (gann, GPU_ANNOT_COLS), "memory": (mem, MEM_COLS)}
    # drop every other reference to the buffers (``read`` holds them too), so each is freed
    # as soon as it is converted
    del read
    ops = ann = rt = gpu = gann = mem = sinks = None
    add_op = add_ann = add_rt = add_gpu = add_gann = add_mem = None
    for key in list(buffers):              # convert one buffer at a time, freeing each after
        buf, layout = buffers.pop(key)
        out.cols[key] = _columns(buf, layout, skipped)
        del buf
    return out


def _read_in_parallel(batches, read, sinks, names, ignored, other_ph) -> int:
    """Read ``batches`` where some are decoded by workers (``RemoteBatch``) and the typed ones
    here with names of their own (``parallel.batch_rows``), merging every batch in file order:
    names interned in the order one process meets them, so ids, rows and counters are those
    of ``read`` alone. A batch no typed loop took is given to ``read`` when its turn comes.
    Once the file is read, batches still waiting on a worker are taken back, the last first,
    and read here, so the reader does not sit idle at the end. Returns the number of events."""
    from .parallel import batch_rows

    pending: deque = deque()       # [batch, rows or None], in file order

    def local(batch) -> list:
        return [batch, batch_rows(batch) if batch.__class__ is TypedBatch else None]

    def merge_head() -> None:
        batch, got = pending.popleft()
        if batch.__class__ is RemoteBatch:
            got = batch.worker.result(batch.seq)
            if got is None:        # not taken (or the worker is gone): decoded here
                read(_decode_here(batch))
                return
        if got is None:
            read(batch)
            return
        _merge(got, sinks, names, ignored, other_ph)

    def head_waits() -> bool:
        batch = pending[0][0]
        return batch.__class__ is RemoteBatch and not batch.worker.ready(batch.seq)

    n = 0
    for batch in batches:
        n += batch.n if batch.__class__ is RemoteBatch else len(batch)
        pending.append([batch, None] if batch.__class__ is RemoteBatch else local(batch))
        # merge what is ready; wait on a worker only when many batches are held
        while pending and (not head_waits() or len(pending) > _MAX_PENDING):
            merge_head()
    while pending:
        if head_waits():
            for entry in reversed(pending):   # take back the newest batch still waiting
                batch = entry[0]
                if batch.__class__ is RemoteBatch and not batch.worker.ready(batch.seq):
                    batch.worker.drop(batch.seq)
                    entry[:] = local(_decode_here(batch))
                    break
            continue
        merge_head()
    return n


def _decode_here(batch: RemoteBatch):
    """A worker's batch decoded by the reader, as ``jsonstream`` decodes any batch (its text
    passed msgspec's check, so one decoder at least reads it)."""
    got = _loads(batch.text, typed=True)
    return got if got is not None else json.loads(batch.text)


_MAX_PENDING = 8  # batches held (decoded, not merged) while the head waits on a worker
_LAYOUTS = (OP_COLS, ANNOT_COLS, RUNTIME_COLS, GPU_COLS, GPU_ANNOT_COLS, MEM_COLS)  # sinks' order
_NAME_COLS = tuple(tuple(j for j, c in enumerate(layout) if c in ("name", "dims"))
                   for layout in _LAYOUTS)   # columns holding name ids (dims: -1 for none)


def _merge(got, sinks, names: Dict[str, int], ignored, other_ph) -> None:
    """Append a BatchRows (name ids local to its batch) to the shared buffers and names."""
    if got.names:
        remap = np.fromiter((names.setdefault(s, len(names)) for s in got.names),
                            dtype=np.float64, count=len(got.names))
    for buf, rows, layout, cols in zip(sinks, got.bufs, _LAYOUTS, _NAME_COLS):
        if not len(rows):
            continue
        if cols:
            flat = np.frombuffer(rows, dtype=np.float64).reshape(-1, len(layout))
            for j in cols:
                c = flat[:, j]
                has = c >= 0
                c[has] = remap[c[has].astype(np.intp)]
        buf.extend(rows)
    for total, part in ((ignored, got.ignored), (other_ph, got.other_ph)):
        for k, v in part.items():
            total[k] = total.get(k, 0) + v


class _Inexact(Exception):
    """An orjson batch whose Input Dims may hold an integer orjson turned into a float."""


def _dicts(text: str) -> List[Any]:
    """A batch's text (a JSON array msgspec decoded) as dicts, the way ``jsonstream`` decodes
    a batch without the typed path."""
    batch = _loads(text)
    return batch if batch is not None else json.loads(text)  # (msgspec read it: it is JSON)


def _snapshot(sinks, names, ids, skipped, ignored, other_ph):
    """What ``_restore`` needs to undo the rows, names, ids and counters of one batch."""
    return ([len(b) for b in sinks], len(names), len(ids), dict(skipped), dict(ignored),
            dict(other_ph))


def _restore(snap, sinks, names, ids, skipped, ignored, other_ph) -> None:
    lens, n_names, n_ids, *counters = snap
    for buf, k in zip(sinks, lens):
        del buf[k:]
    for d, k in ((names, n_names), (ids, n_ids)):  # insertion-ordered: drop the newest
        for key in list(islice(reversed(d), len(d) - k)):
            del d[key]
    for d, old in zip((skipped, ignored, other_ph), counters):
        d.clear()
        d.update(old)


# JSON spelling of each id column, for skip reasons
_FIELD = {"ext": "External id", "seq": "Sequence number", "fwd_tid": "Fwd thread id",
          "corr": "correlation", "total_allocated": "Total Allocated",
          "total_reserved": "Total Reserved", "device_type": "Device Type",
          "device_id": "Device Id"}
_SMALL_IDS = ("device_type", "device_id")   # stored as int16


def _columns(buf: array, layout, skipped: Dict[str, int]) -> Dict[str, np.ndarray]:
    """Split a flat row-major buffer into named columns (times float64 us, name ids int32,
    other ids int64), dropping rows with a value outside ``limits`` (counted in ``skipped``)."""
    flat = np.frombuffer(buf, dtype=np.float64) if len(buf) else np.zeros(0)
    rows = flat.reshape(-1, len(layout))                          # (events, columns)
    bad = np.zeros(len(rows), dtype=bool)
    for j, col in enumerate(layout):
        for reason, hit in _checks(col, rows[:, j]):
            new = hit & ~bad
            k = int(np.count_nonzero(new))
            if k:
                skipped[reason] = skipped.get(reason, 0) + k
                bad |= new
    if bad.any():
        rows = rows[~bad]
    cols = {}
    for j, col in enumerate(layout):
        c = rows[:, j]
        if col.endswith("_us"):
            cols[col] = c.copy()
        else:
            cols[col] = c.astype(np.int32 if col in ("name", "dims") else np.int64)
    return cols


def _checks(col: str, c: np.ndarray):
    """(reason, bad-row mask) pairs for one column, in the order they are reported."""
    if col in ("name", "dims", "cat"):            # interned ids and codes made by the loader
        return
    if col == "ts_us":
        yield "non-finite ts", ~np.isfinite(c)
        yield "ts out of range", np.abs(c) >= MAX_ABS_TS_US
    elif col == "dur_us":
        yield "negative dur", c < 0
        yield "non-finite dur", ~np.isfinite(c)
        yield "dur out of range", c > MAX_DUR_US
    else:
        bound = 2.0 ** 15 if col in _SMALL_IDS else MAX_ID
        yield f"bad {_FIELD.get(col, col)}", ~(np.abs(c) < bound) | (np.floor(c) != c)


def _ident(x: Any, ids: Dict[Any, int]) -> int:
    """An int for a pid/tid that is not an int: '25738' -> 25738; 'stream 7' -> a negative id.

    Raises:
        TypeError: a boolean, list, object or null (not an id).
    """
    if x.__class__ is bool or x is None:
        raise TypeError("bool")
    try:
        return ids[x]
    except KeyError:
        pass
    if isinstance(x, str):
        t = x.strip()
        digits = t[1:] if t[:1] == "-" else t
        v = int(t) if digits.isascii() and digits.isdigit() and len(digits) <= 18 \
            else -2 - len(ids)
    elif isinstance(x, float) and x.is_integer():
        return int(x)  # not cached: an int needs no label, whichever decoder made it a float
    else:
        v = -2 - len(ids)        # non-integral float: a label, like a string tid
    ids[x] = v
    return v


_WHY_FIELDS = ("name", "ts", "dur", "pid", "tid", "cat")
_WHY_ARGS = ("External id", "external id", "correlation", "Sequence number", "Fwd thread id",
             "device", "stream", "bytes", "Bytes", "Total Allocated", "Total Reserved",
             "Device Type", "Device Id")


def _why(e: Any, exc: BaseException) -> str:
    """A short reason for dropping a malformed event (slow path only)."""
    if not isinstance(e, dict):
        return "not an object"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]}"
    if not isinstance(e.get("ph"), (str, type(None))):
        return "non-string ph"
    for key in _WHY_FIELDS:
        v = e.get(key)
        if key in ("name", "cat"):
            if v is not None and not isinstance(v, str):
                return f"non-string {key}"
        elif v is not None and not _number(v, allow_str=key in ("pid", "tid")):
            return f"non-numeric {key}"
    a = e.get("args")
    if isinstance(a, dict):
        for key in _WHY_ARGS:
            v = a.get(key)
            if v is not None and not _number(v):
                return f"non-numeric {key}"
    return "bad field"


def _number(v: Any, allow_str: bool = False) -> bool:
    """A JSON number (not a boolean); strings too where ids may be labels (pid, tid)."""
    if allow_str and isinstance(v, str):
        return True
    return isinstance(v, (int, float)) and not isinstance(v, bool)
