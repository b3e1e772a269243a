"""Property-based fuzzing of the reader: generated, mutated and damaged traces (see fuzzing.py).

``load_trace`` must return tables whose invariants hold, with every event where the documented
rules put it, or raise a TraceError naming the file: never another exception, never a warning.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora_profiler.events import TraceError, fast, load_trace
from lora_profiler.events import jsonstream

from fuzzing import case, check_load, check_oracle, events, name_events

# Deterministic (derandomize): the suite runs the same cases every time; benchmarks/bench_fuzz.py
# explores with other seeds. Health checks off: generation time depends on the machine's load.
FUZZ = settings(max_examples=250, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def _write(data: bytes, suffix: str) -> Path:
    fd = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    with fd:
        fd.write(data)
    return Path(fd.name)


@FUZZ
@given(case())
def test_generated_traces_load_or_raise_trace_error(c):
    path = _write(c["data"], ".json.gz" if c["gz"] else ".json")
    try:
        trace = check_load(path)
        if trace is not None and c["valid_json"] and c["damage"] == "none":
            check_oracle(trace, c["events"])
        if c["damage"] == "none" and trace is None:
            # a document the generator wrote whole is refused only for having no usable event
            with pytest.raises(TraceError, match="no events|none of the|not trace events"):
                load_trace(path)
    finally:
        path.unlink()


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(evs=events(max_events=40), lookahead=st.integers(64, 600))
def test_fast_and_stdlib_paths_agree_on_generated_traces(evs, lookahead):
    """msgspec's typed structs and orjson (when installed) and the stdlib decode the same
    events; a short lookahead forces many cuts and refills, including the fast paths'
    fallbacks (NaN literals, lone surrogates, malformed fields)."""
    name_events(evs)
    text = json.dumps({"traceEvents": evs}, allow_nan=True)
    path = _write(gzip.compress(text.encode("utf-8", "surrogatepass")), ".json.gz")
    try:
        got = []
        for decoders in PATHS:
            with pytest.MonkeyPatch.context() as mp:
                for attr, value in decoders.items():
                    mp.setattr(fast, attr, value)
                mp.setattr(jsonstream, "_LOOKAHEAD", lookahead)
                got.append(_flat(check_load(path)))
        assert all(g == got[-1] for g in got)
    finally:
        path.unlink()


# the decoders of each path compared: every accelerator installed, orjson without msgspec, stdlib
PATHS = [{}, {"MSGSPEC": None}, {"MSGSPEC": None, "ORJSON": None, "ISAL_ZLIB": None}]


def _flat(trace):
    """Everything a Trace holds, as comparable Python values (None for a TraceError)."""
    if trace is None:
        return None
    from lora_profiler.events.tables import TABLES
    out = {"names": trace.names, "skipped": trace.skipped, "ignored": trace.ignored,
           "counts": trace.counts, "device": trace.device}
    for t in TABLES:
        tab = getattr(trace, t)
        out[t] = {c: (getattr(tab, c).dtype.str, getattr(tab, c).tobytes())
                  for c in tab.columns()}
    return out


# --- resource limits ------------------------------------------------------------------------

def _events_with(blob: str) -> str:
    return ('{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 0, "dur": 1}, '
            + blob + "]}")


@pytest.mark.parametrize("depth", [1_000, 1_100, 100_000])
@pytest.mark.parametrize("where", ["event", "args", "top"])
def test_deep_nesting(tmp_path, depth, where):
    """Up to ~1,100 levels the value is read (orjson stops at 1,024, then the stdlib reads it
    with headroom: both paths agree); 100,000 levels are a TraceError, never a crash."""
    deep = "[" * depth + "]" * depth
    evs = ", ".join(['{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 0, "dur": 1}'] * 5)
    text = {"event": '{"traceEvents": [' + evs + ", " + deep + ", " + evs + "]}",
            "args": '{"traceEvents": [' + evs + ', {"ph": "X", "cat": "cpu_op", "name": "b", '
                    '"ts": 0, "dur": 1, "args": {"Input Dims": ' + deep + "}}]}",
            "top": '{"deviceProperties": ' + deep + ', "traceEvents": [' + evs + "]}"}[where]
    path = tmp_path / "deep.json"
    path.write_text(text)
    if depth == 100_000:
        with pytest.raises(TraceError, match="nested too deeply") as exc:
            load_trace(path)
        assert str(path) in str(exc.value)
        return
    got = []
    for decoders in PATHS:
        with pytest.MonkeyPatch.context() as mp:
            for attr, value in decoders.items():
                mp.setattr(fast, attr, value)
            t = check_load(path)
            got.append(_flat(t))
    assert all(g == got[-1] for g in got)
    assert len(t.ops) == {"event": 10, "args": 6, "top": 5}[where]
    assert t.skipped == ({"not an object": 1} if where == "event" else {})


def test_value_over_the_limit_is_refused_and_under_it_read(tmp_path, monkeypatch):
    from lora_profiler.events import jsonstream as js
    monkeypatch.setattr(js, "MAX_VALUE_CHARS", 1 << 20)
    big = '{"ph": "X", "cat": "cpu_op", "name": "%s", "ts": 0, "dur": 1}'
    path = tmp_path / "big.json"
    path.write_text(_events_with(big % ("x" * (900 << 10))))
    assert len(check_load(path).ops) == 2                 # 0.9 MiB: read
    path.write_text(_events_with(big % ("x" * (3 << 20))))
    with pytest.raises(TraceError, match="longer than 1 MiB"):
        load_trace(path)
    path.write_text('{"meta": "' + "y" * (3 << 20) + '", "traceEvents": []}')
    with pytest.raises(TraceError, match="longer than 1 MiB"):
        load_trace(path)


def test_syntax_error_early_in_a_big_file_does_not_read_the_rest(tmp_path, monkeypatch):
    """A damaged byte near the start is reported without buffering the rest of the file."""
    reads = []
    from lora_profiler.events import files
    real = files._plain_chunks

    def counting(fh):
        for block in real(fh):
            reads.append(len(block))
            yield block
    monkeypatch.setattr(files, "_plain_chunks", counting)
    ev = '{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 0, "dur": 1}'
    text = '{"traceEvents": [' + ev + ", {\"ph\" \"X\"}, " + ", ".join([ev] * 200_000) + "]}"
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TraceError, match="not valid JSON"):
        load_trace(path)
    assert sum(reads) < 4 * (1 << 20) < len(text)


def test_many_tiny_events_in_bounded_memory(tmp_path):
    """A million events that are not trace events cost counters, not rows."""
    path = tmp_path / "tiny.json.gz"
    path.write_bytes(gzip.compress(b'{"traceEvents": [' + b"{}," * 1_000_000
                                   + b'{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 0, '
                                     b'"dur": 1}]}'))
    t = check_load(path)
    assert len(t.ops) == 1 and t.skipped == {"missing ph": 1_000_000}


def test_deep_interval_nesting_is_fast_and_exact(tmp_path):
    """20,000 ops each inside the previous one: depths by pointer doubling, not one level per
    pass."""
    n = 20_000
    evs = [{"ph": "X", "cat": "cpu_op", "name": "op", "pid": 1, "tid": 1, "ts": i,
            "dur": 2 * (n - i)} for i in range(n)]
    path = tmp_path / "chain.json"
    path.write_text(json.dumps({"traceEvents": evs}))
    t = check_load(path)
    assert t.ops.depth.tolist() == list(range(n))
    assert t.ops.parent.tolist() == [-1] + list(range(n - 1))
