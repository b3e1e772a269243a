"""The msgspec fast path: decode only the fields the tables need, into typed structs.

With msgspec installed (``fast.MSGSPEC``), a batch of events cut from the trace text is decoded
by a ``msgspec.json.Decoder`` of a list of event structs tagged by ``ph`` (complete events,
instants, and empty structs for the other phases, which are only counted): only the ~20 fields
below become Python objects (the rest of each event is skipped while parsing), and their types
are checked on the way. ``rows`` then turns the structs into table rows with attribute reads and no per-field type
checks: together about 1.7x faster than orjson's dicts and the dict loop of ``builder.build``.

Same results as the dict path, by construction:

- msgspec refuses a batch whose fields are not the plain types declared here (a boolean, string,
  null or object where a number belongs; a number out of float range; a lone surrogate; NaN
  literals, which are not JSON; a missing, non-string or unknown ``ph``, or two different
  ``ph`` in one event): ``decode`` returns None and the batch is decoded as dicts;
- ``rows`` handles only clean events (every field it reads present and well typed) and gives
  up on the first other one (a missing ``name``, ``ts`` or ``dur``, a memory event without
  ``Bytes``, a number a row cannot hold): ``builder.build`` then undoes what it did for the
  batch (rows, interned names, id labels, counters) and reads the batch as dicts, where every
  malformed event is counted under its reason.

So a batch is read either entirely here or entirely by the dict loop, and both produce the same
rows, names and counters for the events read here (``tests/events/test_events_fast.py`` checks
every real trace, the fuzzer generated ones). Duplicate keys keep their last value in msgspec,
orjson and the stdlib alike; integers of any size are Python ints in all three.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import msgspec
from msgspec import UNSET, Struct, UnsetType, field

from .schema import ANNOTATION, GPU, GPU_ANNOTATION, MEMORY_EVENT_NAME, OP, RUNTIME, X_CATEGORIES

Num = Union[int, float]
_Num = Union[int, float, UnsetType]


class Args(Struct, gc=False):
    """The ``args`` the tables read (every other key is skipped while parsing)."""

    ext: _Num = field(name="External id", default=UNSET)
    ext_legacy: Num = field(name="external id", default=-1)
    seq: Num = field(name="Sequence number", default=-1)
    fwd: Num = field(name="Fwd thread id", default=-1)
    dims: Optional[list] = field(name="Input Dims", default=None)
    types: Optional[list] = field(name="Input type", default=None)
    corr: Num = field(name="correlation", default=-1)
    device: _Num = UNSET
    stream: _Num = UNSET
    nbytes: Num = field(name="bytes", default=-1)
    mem_bytes: _Num = field(name="Bytes", default=UNSET)
    alloc: Num = field(name="Total Allocated", default=-1)
    resv: Num = field(name="Total Reserved", default=-1)
    dtype: Num = field(name="Device Type", default=-1)
    dev: Num = field(name="Device Id", default=-1)


class _Common(Struct, gc=False, tag_field="ph"):
    """The fields every event kind the tables read has (``ph`` is the tag: it picks the
    class, and is no attribute)."""

    cat: Optional[str] = None
    name: Union[str, UnsetType] = UNSET
    ts: _Num = UNSET
    pid: Union[int, float, str] = -1
    tid: Union[int, float, str] = -1
    args: Optional[Args] = None


class Event(_Common, tag="X"):
    """A complete event (``ph`` X): ops, annotations, runtime calls, GPU activities."""

    dur: _Num = UNSET


class Instant(_Common, tag="i"):
    """An instant event (``ph`` i): the allocator's ``[memory]`` events among others."""


class InstantOld(_Common, tag="I"):
    """An instant event in the old spelling (``ph`` I)."""


# The other phases of the Chrome trace format: decoded as empty structs (their fields skipped
# while parsing, nothing allocated for them), only counted. A phase not listed makes msgspec
# refuse the batch, which is then read as dicts (same counts, just slower).
_OTHER_PHASES = "BECbneSTpFstfPNODMVvRc()"
_OTHERS = tuple(msgspec.defstruct(f"Phase_{i}", [], tag_field="ph", tag=ph, gc=False)
                for i, ph in enumerate(_OTHER_PHASES))
_PHASE_OF = {cls: ph for cls, ph in zip(_OTHERS, _OTHER_PHASES)}
_PHASE_OF.update({Instant: "i", InstantOld: "I"})


_EMPTY = Args()
_decoder = msgspec.json.Decoder(List[Union[(Event, Instant, InstantOld) + _OTHERS]])  # type: ignore


def decode(text: str) -> Optional[list]:
    """``text`` (a JSON array of events) as a list of Event structs; None when msgspec refuses
    it (not JSON, or a field of another type than declared)."""
    try:
        return _decoder.decode(text)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None


def rows(batch: list, sinks, names: Dict[str, int], ids: Dict[Any, int],
         ignored: Dict[str, int], other_ph: Dict[Any, int], ident) -> bool:
    """Append the rows of ``batch`` (Event structs) to ``sinks`` (the six row buffers of
    ``builder.build``: ops, annotations, runtime, gpu, gpu annotations, memory), intern
    names, count ignored events; True when done. False at the first event this loop does not
    handle (see the module's docstring): the caller undoes the batch and reads it as dicts."""
    try:
        _rows(batch, sinks, names, ids, ignored, other_ph, ident)
        return True
    except Exception:  # noqa: BLE001 - any surprise: the dict loop decides
        return False


class _Unhandled(Exception):
    """An event the typed loop leaves to the dict loop."""


def _rows(batch, sinks, names, ids, ignored, other_ph, ident) -> None:
    # rows are gathered per class in flat lists and appended once per batch (one fromlist of
    # the whole batch: all or nothing, like the batch itself)
    op_rows, ann_rows, rt_rows, gpu_rows, gann_rows, mem_rows = [], [], [], [], [], []
    cats = {cat: (cls if cls != GPU else GPU + gcat) for cat, (cls, gcat) in X_CATEGORIES.items()}
    get_cls = cats.get
    name_id = names.get
    op_, rt_, ann_, gann_ = OP, RUNTIME, ANNOTATION, GPU_ANNOTATION
    U, I, empty, X, phase_of = UNSET, int, _EMPTY, Event, _PHASE_OF
    for e in batch:
        k = e.__class__
        if k is X:
            cat = e.cat
            cls = get_cls(cat, 0)
            if not cls:
                c = str(cat)
                ignored[c] = ignored.get(c, 0) + 1
                continue
            name = e.name
            ts = e.ts
            dur = e.dur
            if name is U or ts is U or dur is U:
                raise _Unhandled
            a = e.args
            if a is None:
                a = empty
            pid = e.pid
            tid = e.tid
            if pid.__class__ is not I:
                pid = ident(pid, ids)
            if tid.__class__ is not I:
                tid = ident(tid, ids)
            ext = a.ext
            if ext is U:
                ext = a.ext_legacy
            nid = name_id(name)
            if nid is None:
                nid = names[name] = len(names)
            if cls == op_:
                dims = a.dims
                if dims is not None:
                    dims = repr(dims)
                    did = name_id(dims)
                    if did is None:
                        did = names[dims] = len(names)
                else:
                    did = -1
                op_rows += (nid, ts, dur, pid, tid, ext, a.seq, a.fwd, did)
            elif cls == rt_:
                rt_rows += (nid, ts, dur, pid, tid, a.corr, ext)
            elif cls == ann_:
                dims = a.dims
                if dims is not None:
                    dims = repr([dims, a.types])
                    did = name_id(dims)
                    if did is None:
                        did = names[dims] = len(names)
                else:
                    did = -1
                ann_rows += (nid, ts, dur, pid, tid, ext, did)
            else:
                device = a.device
                stream = a.stream
                if device is U:
                    device = pid
                if stream is U:
                    stream = tid
                if cls == gann_:
                    gann_rows += (nid, ts, dur, device, stream)
                else:
                    gpu_rows += (nid, ts, dur, device, stream, a.corr, ext, a.nbytes, cls - GPU)
        elif (k is Instant or k is InstantOld) and e.name == MEMORY_EVENT_NAME:
            a = e.args
            if a is None or a.mem_bytes is U or e.ts is U:
                raise _Unhandled
            pid = e.pid
            tid = e.tid
            if pid.__class__ is not I:
                pid = ident(pid, ids)
            if tid.__class__ is not I:
                tid = ident(tid, ids)
            mem_rows += (e.ts, a.mem_bytes, a.alloc, a.resv, a.dtype, a.dev, pid, tid)
        else:
            ph = phase_of[k]
            other_ph[ph] = other_ph.get(ph, 0) + 1
    for buf, got in zip(sinks, (op_rows, ann_rows, rt_rows, gpu_rows, gann_rows, mem_rows)):
        if got:
            buf.fromlist(got)  # a value no float64 holds raises: the caller undoes the batch
