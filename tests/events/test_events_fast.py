"""The optional fast path (orjson, isal) gives the stdlib path's tables bit for bit."""

from __future__ import annotations


import pytest

from lora_profiler.events import fast, load_trace
from lora_profiler.events.tables import TABLES

from conftest import SHARED_TRACES as TRACES  # noqa: E402 (tests/conftest.py: the one place it is defined)
FOLDERS = sorted({p.parent for p in TRACES.rglob("*.gz")}) if TRACES.is_dir() else []


def snapshot(trace):
    """Every column (dtype and bytes) of every table, names, counters and metadata."""
    out = {"names": list(trace.names), "skipped": dict(trace.skipped),
           "ignored": dict(trace.ignored), "counts": dict(trace.counts),
           "device": trace.device, "meta": trace.meta, "files": trace.files}
    for t in TABLES:
        tab = getattr(trace, t)
        out[t] = {c: (getattr(tab, c).dtype.str, getattr(tab, c).tobytes())
                  for c in tab.columns()}
    return out


PATHS = {  # decoders switched on for each path compared (the others set to None)
    "msgspec": ("MSGSPEC", "ORJSON", "ISAL_ZLIB"),
    "orjson": ("ORJSON", "ISAL_ZLIB"),
    "stdlib": (),
}


def load_with(path, folder, monkeypatch):
    """load_trace(folder) with only the decoders of PATHS[path], those installed of them (None
    when the path's own decoder, its first, is not installed)."""
    with monkeypatch.context() as mp:
        if PATHS[path] and getattr(fast, PATHS[path][0]) is None:
            return None
        for attr in ("MSGSPEC", "ORJSON", "ISAL_ZLIB"):
            if attr not in PATHS[path]:
                mp.setattr(fast, attr, None)
        return snapshot(load_trace(folder))


@pytest.mark.skipif(not FOLDERS, reason=f"real traces not found at {TRACES.resolve()}")
@pytest.mark.skipif(fast.describe() == "stdlib",
                    reason="neither msgspec, orjson (>= 3.9.15) nor isal installed: no fast path")
@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(TRACES)))
def test_fast_paths_equal_stdlib_on_real_traces(folder, monkeypatch):
    if not any(p.name.endswith(".json.gz") and "memory_timeline" not in str(p)
               for p in folder.iterdir()):
        pytest.skip("no trace in this folder")
    slow_trace = load_with("stdlib", folder, monkeypatch)
    assert len(slow_trace["names"]) > 10            # a real trace, not an empty one
    compared = 0
    for path in ("msgspec", "orjson"):
        fast_trace = load_with(path, folder, monkeypatch)
        if fast_trace is None:
            continue
        compared += 1
        assert fast_trace.keys() == slow_trace.keys()
        for key in fast_trace:
            assert fast_trace[key] == slow_trace[key], (path, key)
    assert compared


@pytest.mark.skipif(fast.MSGSPEC is None, reason="msgspec not installed")
@pytest.mark.skipif(not FOLDERS, reason=f"real traces not found at {TRACES.resolve()}")
def test_msgspec_reads_real_traces_itself(monkeypatch):
    """The typed loop reads the real traces (not the dict loop after giving up on them)."""
    from lora_profiler.events import typed

    monkeypatch.setenv("LORA_PROFILER_WORKERS", "0")  # every batch read here, where the spy is
    taken = []
    real = typed.rows

    def spy(*a, **k):
        taken.append(real(*a, **k))
        return taken[-1]

    monkeypatch.setattr(typed, "rows", spy)
    for folder in FOLDERS:
        if any(p.name.endswith(".json.gz") and "memory_timeline" not in str(p) for p in folder.iterdir()):
            load_trace(folder)
    assert taken and sum(taken) >= 0.95 * len(taken), f"{taken.count(False)} of {len(taken)} batches left"


@pytest.mark.skipif(fast.MSGSPEC is None, reason="msgspec not installed")
@pytest.mark.parametrize("event, why", [
    ({"ph": "X", "cat": "cpu_op", "ts": 1, "dur": 1}, "missing name"),
    ({"ph": "X", "cat": "cpu_op", "name": "a", "ts": True, "dur": 1}, "a boolean"),
    ({"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 1, "args": {"External id": "7"}}, "a string id"),
    ({"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 1e400}, "out of float range"),
    ({"ph": "X", "cat": "cpu_op", "name": "a", "ts": 10 ** 400, "dur": 1}, "an int no float holds"),
    ({"ph": "i", "name": "[memory]", "ts": 1, "args": {}}, "memory event without Bytes"),
    ({"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 1, "pid": None}, "a null pid"),
])
def test_msgspec_leaves_malformed_batches_to_the_dict_loop(tmp_path, monkeypatch, event, why):
    """A batch with one malformed event among good ones: read as dicts, counted the same."""
    import json

    good = [{"ph": "X", "cat": "cpu_op", "name": f"op{i}", "ts": i, "dur": 1, "pid": "7",
             "tid": 3.0, "args": {"Input Dims": [[2, 10 ** 30], []], "External id": i}}
            for i in range(50)]
    good += [{"ph": "X", "cat": "kernel", "name": "k", "ts": 5, "dur": 2, "args": {"correlation": 9}},
             {"ph": "i", "name": "[memory]", "ts": 3, "args": {"Bytes": 64}}]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": good[:25] + [event] + good[25:]}).replace(
        "1e+400", "1e400").replace("Infinity", "1e400"))
    got = {p: load_with(p, path, monkeypatch) for p in PATHS}
    assert got["msgspec"] == got["stdlib"], why
    if got["orjson"] is not None:
        assert got["orjson"] == got["stdlib"], why
    assert sum(got["stdlib"]["skipped"].values()) == 1, got["stdlib"]["skipped"]
