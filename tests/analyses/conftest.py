"""Fixtures for the generic analyses: a synthetic-trace builder and the real traces folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_profiler.events import load_trace

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"


class Events:
    """Tiny constructors for Kineto-style events (times in us)."""

    @staticmethod
    def op(name, ts, dur, tid=1, **args):
        e = {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}
        if args:
            e["args"] = {k.replace("_", " "): v for k, v in args.items()}
        return e

    @staticmethod
    def launch(ts, dur, corr, tid=1, name="cudaLaunchKernel"):
        return {"ph": "X", "cat": "cuda_runtime", "name": name, "pid": 1, "tid": tid, "ts": ts,
                "dur": dur, "args": {"correlation": corr}}

    @staticmethod
    def kern(name, ts, dur, corr, stream=7, device=0, cat="kernel"):
        return {"ph": "X", "cat": cat, "name": name, "pid": device, "tid": stream, "ts": ts,
                "dur": dur, "args": {"device": device, "stream": stream, "correlation": corr}}

    @staticmethod
    def step(n, ts, dur):
        return {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{n}", "pid": 1,
                "tid": 1, "ts": ts, "dur": dur}


@pytest.fixture
def ev():
    return Events


@pytest.fixture
def mk(tmp_path):
    """mk(events) -> Trace (written to a fresh JSON file)."""
    n = [0]

    def make(events):
        n[0] += 1
        path = tmp_path / f"t{n[0]}.json"
        path.write_text(json.dumps({"traceEvents": events}))
        return load_trace(path)
    return make


@pytest.fixture
def traces_dir() -> Path:
    if not TRACES.is_dir():
        pytest.skip(f"real traces not found at {TRACES.resolve()}")
    return TRACES
