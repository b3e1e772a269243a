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


@pytest.mark.skipif(not FOLDERS, reason=f"real traces not found at {TRACES.resolve()}")
@pytest.mark.skipif(fast.describe() == "stdlib",
                    reason="neither orjson (>= 3.9.15) nor isal installed: no fast path")
@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(TRACES)))
def test_fast_path_equals_stdlib_on_real_traces(folder, monkeypatch):
    if not any(p.name.endswith(".json.gz") and "memory_timeline" not in str(p)
               for p in folder.iterdir()):
        pytest.skip("no trace in this folder")
    fast_trace = snapshot(load_trace(folder))
    monkeypatch.setattr(fast, "ORJSON", None)
    monkeypatch.setattr(fast, "ISAL_ZLIB", None)
    assert fast.describe() == "stdlib"
    slow_trace = snapshot(load_trace(folder))
    assert fast_trace.keys() == slow_trace.keys()
    for key in fast_trace:
        assert fast_trace[key] == slow_trace[key], key
    assert len(fast_trace["names"]) > 10            # a real trace, not an empty one
