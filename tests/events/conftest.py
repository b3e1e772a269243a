"""Fixtures for the events tests: the real traces folder and a synthetic-trace writer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"


def _x(cat, name, ts, dur, pid=1, tid=1, **args):
    e = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}
    if args:
        e["args"] = {k.replace("_", " "): v for k, v in args.items()}
    return e


def op(name, ts, dur, tid=1, pid=1, **args):
    """A cpu_op; args use underscores for spaces (External_id, Sequence_number, ...)."""
    return _x("cpu_op", name, ts, dur, pid, tid, **args)


def rt(name, ts, dur, corr, tid=1, pid=1, ext=None, cat="cuda_runtime"):
    args = {"correlation": corr}
    if ext is not None:
        args["External id"] = ext
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur,
            "args": args}


def kern(name, ts, dur, corr, stream=7, device=0, cat="kernel", **extra):
    args = {"device": device, "stream": stream, "correlation": corr, **extra}
    return {"ph": "X", "cat": cat, "name": name, "pid": device, "tid": stream, "ts": ts,
            "dur": dur, "args": args}


def ann(name, ts, dur, tid=1, pid=1, cat="user_annotation"):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}


def mem(ts, nbytes, total, device_type=1, device_id=0, tid=1):
    return {"ph": "i", "cat": "cpu_instant_event", "s": "t", "name": "[memory]", "pid": 1,
            "tid": tid, "ts": ts, "args": {"Bytes": nbytes, "Total Allocated": total,
                                           "Device Type": device_type, "Device Id": device_id}}


def write(path: Path, events, gz: bool = False, **top) -> Path:
    """Write a Chrome trace {**top, "traceEvents": events} (gzip when gz)."""
    doc = {"schemaVersion": 1, **top, "traceEvents": events}
    text = json.dumps(doc, indent=1)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture
def ev():
    """Synthetic event constructors: ev.op, ev.rt, ev.kern, ev.ann, ev.mem, ev.write."""
    return SimpleNamespace(op=op, rt=rt, kern=kern, ann=ann, mem=mem, write=write)


@pytest.fixture
def traces_dir() -> Path:
    if not TRACES.is_dir():
        pytest.skip(f"real traces not found at {TRACES.resolve()} (they live beside the "
                    "checkout in shared/traces)")
    return TRACES


def real_trace_files():
    """Every gzip/JSON file under the shared traces folder (empty when it is absent)."""
    if not TRACES.is_dir():
        return []
    return sorted(p for p in TRACES.rglob("*") if p.is_file()
                  and (p.name.endswith(".gz") or p.name.endswith(".json")))
