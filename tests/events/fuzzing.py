"""Generated traces for property tests of the reader (Hypothesis), and the properties.

Shared by ``test_events_fuzz.py`` (a few hundred cases) and ``benchmarks/bench_fuzz.py``
(tens of thousands). A case is a list of events of every schema variant the engine reads,
mutated field by field (dropped, retyped, NaN/inf/huge/negative, duplicated, unsorted), then
written as a document (object or bare array, gzip or not) and optionally damaged as bytes
(truncated, a byte changed, bad UTF-8, trailing garbage, deep nesting, a cut gzip stream).

Two properties:

- ``check_load``: ``load_trace`` returns a Trace whose invariants hold (``check_invariants``)
  or raises TraceError naming the file; any other exception or a warning fails.
- ``check_oracle`` (documents that are still valid JSON): every event lands exactly where an
  independent classification (``classify``, written from the documented rules, not from the
  loader) says — a table, ``skipped`` or ``ignored`` — so no malformed event is used silently
  and no good one is lost. Every event gets a unique name to make this checkable.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import warnings
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np
from hypothesis import strategies as st

from lora_profiler.events import TraceError, load_trace
from lora_profiler.events.schema import LAUNCH_APIS, MEMORY_EVENT_NAME, X_CATEGORIES
from lora_profiler.events.tables import TABLES, link_target

MAX_TS = 2.0 ** 62 / 1e3
MAX_DUR = 7 * 86400e6
MAX_ID = 2.0 ** 53

# --- generation -------------------------------------------------------------------------------

X_CATS = sorted(X_CATEGORIES) + ["python_function", "ac2g", "Trace", None]
BAD_VALUES = [None, True, False, "7", "x", [], [1], {}, {"a": 1}, float("nan"), float("inf"),
              -float("inf"), -1, -5.5, 1e300, -1e300, 10 ** 30, 2.5, 2.0 ** 62, 0.0,
              8 * 86400e6, 2 ** 53 + 2]
ARG_KEYS = ["External id", "external id", "correlation", "Sequence number", "Fwd thread id",
            "Input Dims", "device", "stream", "bytes", "Ev Idx"]
MEM_KEYS = ["Bytes", "Total Allocated", "Total Reserved", "Device Type", "Device Id"]

small_int = st.integers(-2, 40)
ident = st.one_of(small_int, st.sampled_from(["9", "stream 7", " 12", "-3"]))
time_us = st.one_of(st.integers(0, 5000), st.floats(0, 5000, allow_nan=False, width=64),
                    st.integers(1_600_000_000_000_000, 1_600_000_000_005_000))
dur_us = st.one_of(st.integers(0, 500), st.floats(0, 500, allow_nan=False))


@st.composite
def x_event(draw) -> Dict[str, Any]:
    cat = draw(st.sampled_from(X_CATS))
    e: Dict[str, Any] = {"ph": "X", "cat": cat, "name": "", "pid": draw(ident),
                         "tid": draw(ident), "ts": draw(time_us), "dur": draw(dur_us)}
    if cat is None:
        del e["cat"]
    args = {}
    for key in draw(st.lists(st.sampled_from(ARG_KEYS), max_size=5, unique=True)):
        args[key] = draw(st.lists(st.lists(small_int, max_size=3), max_size=3)) \
            if key == "Input Dims" else draw(small_int)
    if args or draw(st.booleans()):
        e["args"] = args
    name = draw(st.sampled_from(["op", "ProfilerStep#", "lp/scope", "sgemm_kernel",
                                 "elementwise", "nccl:all_reduce"] + sorted(LAUNCH_APIS)[:6]))
    e["name"] = name
    return e


@st.composite
def other_event(draw) -> Dict[str, Any]:
    kind = draw(st.sampled_from(["memory", "memory_I", "flow_s", "flow_f", "meta", "instant"]))
    if kind.startswith("memory"):
        e = {"ph": "I" if kind == "memory_I" else "i", "name": MEMORY_EVENT_NAME,
             "pid": draw(ident), "tid": draw(ident), "ts": draw(time_us),
             "args": {k: draw(st.integers(-10 ** 6, 10 ** 6)) for k in
                      draw(st.lists(st.sampled_from(MEM_KEYS), max_size=5, unique=True))}}
        e["args"]["Bytes"] = draw(st.integers(-4096, 4096))
        return e
    if kind.startswith("flow"):
        return {"ph": kind[-1], "id": draw(small_int), "pid": draw(ident), "tid": draw(ident),
                "ts": draw(time_us), "cat": "ac2g", "name": "ac2g"}
    if kind == "meta":
        return {"ph": "M", "name": "process_name", "pid": draw(ident),
                "args": {"name": "python"}}
    return {"ph": "i", "name": "marker", "ts": draw(time_us), "pid": 1, "tid": 1, "s": "t"}


@st.composite
def mutated(draw, e: Dict[str, Any]) -> Any:
    """The event with 0-2 fields dropped, retyped or set out of range; rarely not a dict."""
    if draw(st.integers(0, 40)) == 0:
        return draw(st.sampled_from([[1, 2], "event", 7, None]))
    e = json.loads(json.dumps(e))
    for _ in range(draw(st.integers(0, 2))):
        where = e.get("args") if isinstance(e.get("args"), dict) and draw(st.booleans()) else e
        keys = sorted(where) + ["args", "ph", "Bytes"]
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 3)) == 0:
            where.pop(key, None)
        else:
            # a copy: BAD_VALUES holds lists and dicts, and a later mutation may write into
            # the value set here (args set to {}), which must not change the next case
            where[key] = copy.deepcopy(draw(st.sampled_from(BAD_VALUES)))
    return e


@st.composite
def events(draw, max_events: int = 30) -> List[Any]:
    base = draw(st.lists(st.one_of(x_event(), x_event(), other_event()), min_size=1,
                         max_size=max_events))
    out = []
    for e in base:
        e = draw(mutated(e)) if draw(st.integers(0, 3)) == 0 else e
        out.append(e)
        if draw(st.integers(0, 15)) == 0:
            out.append(json.loads(json.dumps(e, allow_nan=True)))    # a duplicate
    if draw(st.booleans()):
        out = draw(st.permutations(out))
    return out


def name_events(evs: List[Any]) -> None:
    """Give every event a unique name (steps: a unique step number) so tables can be checked
    row by row; the [memory] instants keep theirs."""
    for i, e in enumerate(evs):
        if isinstance(e, dict) and isinstance(e.get("name"), str) and \
                e.get("name") != MEMORY_EVENT_NAME:
            e["name"] = f"ProfilerStep#{1000 + i}" if e["name"] == "ProfilerStep#" \
                else f"{e['name']}#{i}" if e["name"] not in LAUNCH_APIS else e["name"]


DAMAGE = ["none", "none", "none", "truncate", "flip", "bad_utf8", "garbage", "deep",
          "long_string", "gzip_cut", "gzip_garbage", "empty"]


@st.composite
def case(draw, max_events: int = 30) -> Dict[str, Any]:
    """One generated file: {'events', 'doc_bytes', 'gz', 'damage', 'valid_json'}."""
    evs = draw(events(max_events))
    name_events(evs)
    layout = draw(st.sampled_from(["object", "object", "array"]))
    top = {}
    if layout == "object":
        top = draw(st.fixed_dictionaries({}, optional={
            "displayTimeUnit": st.sampled_from(["ns", "ms", 7]),
            "schemaVersion": st.integers(0, 2),
            "deviceProperties": st.lists(st.fixed_dictionaries({"name": st.sampled_from(
                ["Tesla V100", "AMD Instinct MI300X"])}), max_size=2),
            "distributedInfo": st.fixed_dictionaries({"rank": small_int})}))
        doc: Any = {**top, "traceEvents": evs}
    else:
        doc = evs
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 1])), allow_nan=True,
                      ensure_ascii=draw(st.booleans()))
    data = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(DAMAGE))
    valid = damage in ("none", "gzip_cut")
    if damage == "truncate":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    elif damage == "bad_utf8":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + data[i:]
    elif damage == "garbage":
        data = data + draw(st.sampled_from([b"}", b" x", b"]]", b"\x00"]))
    elif damage in ("deep", "long_string"):
        depth = draw(st.sampled_from([50, 900, 1100, 100_000]))
        blob = ("[" * depth + "]" * depth) if damage == "deep" else \
            json.dumps("y" * draw(st.sampled_from([10, 100_000, 3_000_000])))
        marker = b'"pid": ' if b'"pid": ' in data else b'"pid":'
        data = data.replace(marker, marker + blob.encode() + b", \"p2\": ", 1)
        valid = damage == "long_string" or depth < 800
    elif damage == "empty":
        data = b""
    gz = draw(st.booleans()) or damage.startswith("gzip")
    if gz:
        data = gzip.compress(data, compresslevel=1)
        if damage == "gzip_cut":
            data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
            valid = False
        elif damage == "gzip_garbage":
            data = data + draw(st.sampled_from([b"\x00\x00", b"garbage", b"\x1f\x8b\x08"]))
            valid = False
    return {"events": evs, "data": data, "gz": gz, "damage": damage, "valid_json": valid,
            "layout": layout}


# --- properties -------------------------------------------------------------------------------

def check_load(path) -> Optional[Any]:
    """load_trace under warnings-as-errors: the Trace (invariants checked) or None after a
    TraceError that names the file. Anything else propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            trace = load_trace(path)
        except TraceError as exc:
            assert str(path) in str(exc), str(exc)
            assert "\n" not in str(exc)
            return None
        check_invariants(trace)
    return trace


def check_invariants(t) -> None:
    """Everything the analyses rely on: finite bounded times, links into existing rows,
    children inside parents on their own thread, steps and scopes that hold their rows."""
    for name in TABLES:
        tab = getattr(t, name)
        n = len(tab)
        for col in tab.columns():
            v = getattr(tab, col)
            assert len(v) == n, (name, col)
            if col.endswith("_us") and not col.startswith("gpu_"):
                assert np.isfinite(v).all(), (name, col)
                assert (np.abs(v) < MAX_TS).all(), (name, col)
            target = link_target(name, col)
            if target:
                assert v.dtype.kind == "i", (name, col)
                assert ((v >= -1) & (v < len(getattr(t, target)))).all(), (name, col)
            if col in ("name", "dims"):
                assert ((v >= -1 if col == "dims" else v >= 0) & (v < len(t.names))).all()
            if col == "file":
                assert ((v >= 0) & (v < len(t.files))).all()
        if "dur_us" in tab.columns():
            assert (tab.dur_us >= 0).all() and (tab.dur_us <= MAX_DUR).all(), name
    s = t.steps
    assert np.isnan(s.gpu_ts_us).sum() == np.isnan(s.gpu_end_us).sum()
    ok = ~np.isnan(s.gpu_ts_us)
    assert (s.gpu_ts_us[ok] <= s.gpu_end_us[ok]).all()
    for name in ("ops", "scopes"):
        tab = getattr(t, name)
        _check_tree(tab)
    o = t.ops
    assert (o.self_us >= 0).all() and (o.self_us <= o.dur_us).all()
    assert (o.is_top == (o.parent < 0)).all()
    has = o.fwd_op >= 0
    assert (o.is_backward[has]).all() and not o.is_backward[o.fwd_op[has]].any()
    k, L = t.kernels, t.launches
    lk = k.launch >= 0
    assert (L.corr[k.launch[lk]] == k.corr[lk]).all() and (k.file[lk] == L.file[k.launch[lk]]).all()
    assert (k.op[lk] == L.op[k.launch[lk]]).all() and (k.op[~lk] == -1).all()
    assert (L.n_gpu == np.bincount(k.launch[lk], minlength=len(L))).all()
    lk2 = L.kernel >= 0
    assert (k.launch[L.kernel[lk2]] == np.flatnonzero(lk2)).all()
    assert ((L.n_gpu > 0) == lk2).all()
    _check_inside(t, "ops", "scope", "scopes", midpoint=True)
    _check_inside(t, "launches", "op", "ops", midpoint=True, same_thread=True, optional=True)
    for name in ("ops", "launches", "scopes", "annotations", "memory"):
        _check_inside(t, name, "step", "steps", midpoint=False, same_thread=False)


def _check_tree(tab) -> None:
    p = tab.parent
    has = p >= 0
    c = np.flatnonzero(has)
    q = p[has]
    assert (tab.pid[c] == tab.pid[q]).all() and (tab.tid[c] == tab.tid[q]).all()
    assert (tab.file[c] == tab.file[q]).all()
    assert (tab.ts_us[q] <= tab.ts_us[c]).all()
    assert (tab.ts_us[q] + tab.dur_us[q] >= tab.ts_us[c] + tab.dur_us[c]).all()
    assert (tab.depth[c] == tab.depth[q] + 1).all() and (tab.depth[~has] == 0).all()


def _check_inside(t, name, col, target, midpoint, same_thread=True, optional=False) -> None:
    """Rows linked to ``target`` lie inside the target row's window (same process, file)."""
    tab, tg = getattr(t, name), getattr(t, target)
    link = getattr(tab, col)
    has = link >= 0
    r, q = np.flatnonzero(has), link[has]
    if optional:      # launches fall back to the op with their External id: no window then
        keep = (tab.pid[r] == tg.pid[q]) & (tab.tid[r] == tg.tid[q])
        keep &= (tg.ts_us[q] <= tab.ts_us[r]) | (tab.ext[r] >= 0)
        assert keep.any() or not r.size or (tab.ext[r] >= 0).all()
        return
    assert (tab.file[r] == tg.file[q]).all() and (tab.pid[r] == tg.pid[q]).all()
    if same_thread:
        assert (tab.tid[r] == tg.tid[q]).all()
    at = tab.ts_us[r] + (0.5 * tab.dur_us[r] if midpoint else 0.0)
    assert (tg.ts_us[q] <= at).all() and (at <= tg.ts_us[q] + tg.dur_us[q]).all()


# --- the oracle: where each event of a valid document must land -----------------------------

def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _id_ok(v, bound=MAX_ID) -> bool:
    try:
        return _num(v) and math.isfinite(v) and abs(v) < bound and float(v) == math.floor(v)
    except OverflowError:
        return False


def _label_type_ok(v) -> bool:
    """pid/tid: an int, a float or a string (a label); never a boolean, null, list or object."""
    return isinstance(v, (int, float, str)) and not isinstance(v, bool)


def _label_ok(v) -> bool:
    """A pid/tid that is stored: an integral number (or numeric string) within 2**53, or a
    label (other strings, fractional or non-finite floats)."""
    if not _label_type_ok(v):
        return False
    if isinstance(v, str):
        t = v.strip()
        d = t[1:] if t[:1] == "-" else t
        if d.isascii() and d.isdigit() and len(d) <= 18:
            return abs(int(t)) < MAX_ID
        return True
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        return True
    return _id_ok(v)


def classify(e: Any) -> str:
    """'op', 'annotation', 'runtime', 'gpu', 'gpu_annotation', 'memory', 'ignored' or
    'skipped', from the documented rules (README "Reading traces", events.limits)."""
    if not isinstance(e, dict):
        return "skipped"
    ph = e.get("ph")
    if ph is None or not isinstance(ph, str):
        return "skipped"
    if ph == "X":
        cat = e.get("cat")
        if cat is None:
            return "ignored"
        if not isinstance(cat, str):
            return "skipped"
        if cat not in X_CATEGORIES:
            return "ignored"
        kind = {1: "op", 2: "annotation", 3: "runtime", 4: "gpu_annotation", 8: "gpu"}[
            X_CATEGORIES[cat][0]]
        if not isinstance(e.get("name"), str):
            return "skipped"
        ts, dur = e.get("ts"), e.get("dur")
        if not (_num(ts) and _finite(ts) and abs(ts) < MAX_TS):
            return "skipped"
        if not (_num(dur) and _finite(dur) and 0 <= dur <= MAX_DUR):
            return "skipped"
        a = e.get("args", None)
        if a is None:
            a = {}
        if not isinstance(a, dict):
            return "skipped"
        stored = kind not in ("gpu", "gpu_annotation")
        for key in ("pid", "tid"):
            if key in e and not (_label_ok if stored else _label_type_ok)(e[key]):
                return "skipped"
        ext = a.get("External id")
        if ext is None:
            ext = a.get("external id", -1)
        used = [ext]
        if kind == "op":
            used += [a.get("Sequence number", -1), a.get("Fwd thread id", -1)]
        elif kind == "runtime":
            used += [a.get("correlation", -1)]
        elif kind in ("gpu", "gpu_annotation"):
            for arg, key in (("device", "pid"), ("stream", "tid")):   # pid/tid: defaults
                if arg in a:
                    used.append(a[arg])
                elif key in e and not _label_ok(e[key]):
                    return "skipped"
            if kind == "gpu":
                used += [a.get("correlation", -1), a.get("bytes", -1)]
        if kind == "gpu_annotation":
            used = used[1:]
        return kind if all(_id_ok(v) for v in used) else "skipped"
    if ph in ("i", "I") and e.get("name") == MEMORY_EVENT_NAME:
        a = e.get("args")
        if not isinstance(a, dict) or "Bytes" not in a or "ts" not in e:
            return "skipped"
        ts = e["ts"]
        if not (_num(ts) and _finite(ts) and abs(ts) < MAX_TS):
            return "skipped"
        for key in ("pid", "tid"):
            if key in e and not _label_ok(e[key]):
                return "skipped"
        vals = [a["Bytes"], a.get("Total Allocated", -1), a.get("Total Reserved", -1)]
        small = [a.get("Device Type", -1), a.get("Device Id", -1)]
        ok = all(_id_ok(v) for v in vals) and all(_id_ok(v, 2.0 ** 15) for v in small)
        return "memory" if ok else "skipped"
    return "ignored"


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:      # an int too large for a float
        return False


def check_oracle(trace, evs: List[Any]) -> None:
    """Each generated event is where ``classify`` says: its (unique) name in a table, or
    counted in ``skipped`` / ``ignored``."""
    kinds = [classify(e) for e in evs]
    count = Counter(kinds)
    assert trace.counts["events"] == len(evs)
    assert sum(trace.skipped.values()) == count["skipped"], (trace.skipped, count)
    assert sum(trace.ignored.values()) == count["ignored"], (trace.ignored, count)
    assert trace.counts["runtime_calls"] == count["runtime"]
    assert len(trace.memory) == count["memory"]
    want = Counter(e["name"] for e, k in zip(evs, kinds) if k in ("op", "annotation", "gpu"))
    got = Counter()
    for name in ("ops", "annotations", "scopes", "steps", "kernels"):
        got.update(trace.names_of(getattr(trace, name).name))
    assert got == want
