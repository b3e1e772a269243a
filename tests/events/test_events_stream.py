"""Streaming JSON decode: same events as json.loads, whatever the chunk boundaries."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from lora_profiler.events import TraceError, files, jsonstream
from lora_profiler.events.jsonstream import iter_events

TRICKY = [
    {"ph": "X", "cat": "cpu_op", "name": "a}, {b", "ts": 1, "dur": 2,
     "args": {"s": "}, {\"x\": 1}"}},
    {"ph": "X", "cat": "cpu_op", "name": "nested", "ts": 2, "dur": 1,
     "args": {"obj": {"k": 1}, "after": 2, "list": [{"a": 1}, {"b": 2}]}},
    {"ph": "X", "cat": "cpu_op", "name": "esc \\ \" \u00e9 \u4e2d", "ts": 3, "dur": 1},
    {"ph": "i", "name": "[memory]", "ts": 4, "args": {"Bytes": 8}},
    [1, 2, {"not": "an event"}],
    "just a string",
]


def _events(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        e = rng.choice(TRICKY) if rng.random() < 0.3 else {
            "ph": "X", "cat": "kernel", "name": f"k{i % 7}", "ts": i * 1.5, "dur": 1,
            "args": {"correlation": i, "grid": [1, 2, 3]}}
        out.append(e)
    return out


@pytest.fixture
def small_chunks(monkeypatch):
    """Force many refills and cuts: 257-byte reads, 100-char lookahead."""
    monkeypatch.setattr(files, "CHUNK_BYTES", 257)
    monkeypatch.setattr(jsonstream, "_LOOKAHEAD", 100)


@pytest.mark.parametrize("indent", [None, 0, 2])
@pytest.mark.parametrize("gz", [False, True])
def test_stream_equals_json_loads(tmp_path, small_chunks, indent, gz):
    events = _events(300)
    doc = {"schemaVersion": 1, "deviceProperties": [{"name": "X}, {"}], "traceEvents": events,
           "traceName": "t", "displayTimeUnit": "ns"}
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    path = tmp_path / ("t.json.gz" if gz else "t.json")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    meta = {}
    got = [e for batch in iter_events(path, meta) for e in batch]
    assert got == json.loads(text)["traceEvents"]
    assert meta["displayTimeUnit"] == "ns" and meta["deviceProperties"][0]["name"] == "X}, {"


def test_default_chunks_and_bare_array(tmp_path):
    events = _events(2000, seed=1)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(events))
    meta = {}
    got = [e for batch in iter_events(path, meta) for e in batch]
    assert got == events and meta["_has_events_key"]


def test_event_larger_than_lookahead(tmp_path, small_chunks):
    events = [{"ph": "X", "name": "big", "args": {"s": "x" * 5000}}, {"ph": "M"}]
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"traceEvents": events}))
    assert [e for b in iter_events(path, {}) for e in b] == events


@pytest.mark.parametrize("text, what", [
    ('{"traceEvents": [{"ph": "X"}, {"ph": ', "ends early"),
    ('{"traceEvents": [{"ph": "X"}, {"ph": "X", "name": "aten::m', "ends early"),
    ('{"traceEvents": [{"ph": "X", "ts": ' + "1" * 5000 + "}]}", "digits"),
    ('{"traceEvents": [{"ph": "X"} {"ph": "X"}]}', "not valid JSON"),
    ('{"traceEvents": []} trailing', "extra data"),
    ("hello", "not valid JSON"),
    ("   \n ", "empty file"),
])
def test_malformed_json(tmp_path, text, what):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TraceError, match=what) as exc:
        for _ in iter_events(path, {}):
            pass
    assert str(path) in str(exc.value)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(json.dumps({"traceEvents": _events(500)}).encode())
    path = tmp_path / "t.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="truncated gzip"):
        for _ in iter_events(path, {}):
            pass
