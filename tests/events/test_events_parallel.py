"""Decoding workers (``events/parallel.py``): the same tables as one process, whatever happens
to the workers.

Every comparison is against ``LORA_PROFILER_WORKERS=0`` (one process reads every batch) on the
same file, column bytes and all. A short lookahead cuts a trace into many batches, so the
worker gets many of them and their merge order is exercised.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora_profiler.events import TraceError, fast, files, jsonstream, load_trace, parallel

from conftest import SHARED_TRACES as TRACES  # noqa: E402
from fuzzing import events as fuzz_events, name_events
from test_events_fast import snapshot

pytestmark = [
    pytest.mark.skipif(fast.MSGSPEC is None, reason="workers decode with msgspec: not installed"),
    pytest.mark.skipif(not hasattr(os, "fork") or os.name != "posix" or os.uname().sysname != "Linux",
                       reason="workers are forked (Linux only)"),
]

FILES = sorted(p for p in TRACES.rglob("*.json.gz") if "memory_timeline" not in str(p)) \
    if TRACES.is_dir() else []


def load(path, workers: int, monkeypatch, lookahead: int = 1 << 14):
    """load_trace(path) with ``workers`` workers from the first batch on, batches of about
    ``lookahead`` characters; (snapshot or the TraceError's text, parallel.LAST)."""
    with monkeypatch.context() as mp:
        mp.setenv("LORA_PROFILER_WORKERS", str(workers))
        mp.setattr(parallel, "START_AFTER", 0)
        mp.setattr(jsonstream, "_LOOKAHEAD", lookahead)
        mp.setattr(files, "CHUNK_BYTES", lookahead)
        try:
            got = snapshot(load_trace(path))
        except TraceError as exc:
            got = str(exc)
        return got, dict(parallel.LAST)


@pytest.mark.skipif(not FILES, reason=f"real traces not found at {TRACES.resolve()}")
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(TRACES)))
def test_workers_build_the_tables_one_process_builds(path, monkeypatch):
    alone, stats0 = load(path, 0, monkeypatch)
    together, stats = load(path, 1, monkeypatch)
    assert stats0["workers"] == 0
    assert stats["workers"] == 1 and stats["read_by_workers"] > 0, stats
    assert together.keys() == alone.keys()
    for key in alone:
        assert together[key] == alone[key], key


def assert_ended(stats):
    """The workers of a load are gone and reaped (no process, no zombie left behind)."""
    assert stats["pids"]
    for pid in stats["pids"]:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert not os.path.exists(f"/proc/{pid}")


def _trace(tmp_path, events, gz=True):
    text = json.dumps({"traceEvents": events})
    path = tmp_path / ("t.json.gz" if gz else "t.json")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def _events(n=3000):
    """A trace with what the typed loop takes and what it leaves to the reader: string tids
    (legacy traces), Input Dims, memory events, flows, unknown categories, malformed events."""
    evs = []
    for i in range(n):
        evs.append({"ph": "X", "cat": "cpu_op", "name": f"aten::op{i % 37}", "ts": 10 * i,
                    "dur": 5, "pid": 1, "tid": "stream 7" if i % 500 == 0 else 2,
                    "args": {"External id": i, "Input Dims": [[i % 5, 3]]}})
        evs.append({"ph": "X", "cat": "kernel", "name": f"k{i % 11}", "ts": 10 * i + 1,
                    "dur": 2, "pid": 0, "tid": 7, "args": {"correlation": i, "device": 0,
                                                           "stream": 7}})
        if i % 7 == 0:
            evs.append({"ph": "s", "id": i, "pid": 1, "tid": 2, "ts": 10 * i, "cat": "ac2g",
                        "name": "ac2g"})
            evs.append({"ph": "i", "name": "[memory]", "ts": 10 * i, "pid": 1, "tid": 2,
                        "args": {"Bytes": 512, "Total Allocated": 4096}})
        if i % 13 == 0:
            evs.append({"ph": "X", "cat": "python_function", "name": "f", "ts": 10 * i,
                        "dur": 1})
        if i % 401 == 0:
            evs.append({"ph": "X", "cat": "cpu_op", "name": "bad", "ts": -5, "dur": True})
    return evs


def test_batches_the_typed_loop_leaves_are_read_by_the_reader_in_order(tmp_path, monkeypatch):
    path = _trace(tmp_path, _events())
    alone, _ = load(path, 0, monkeypatch)
    for workers in (1, 2):
        together, stats = load(path, workers, monkeypatch)
        assert together == alone
        assert 0 < stats["read_by_workers"] < stats["handed"], stats   # some left to the reader
    assert alone["skipped"] and "ph=s" in alone["ignored"]


def test_a_worker_that_dies_costs_nothing_but_time(tmp_path, monkeypatch):
    path = _trace(tmp_path, _events(2000), gz=False)
    alone, _ = load(path, 0, monkeypatch)
    monkeypatch.setattr(parallel, "_serve", lambda conn: os._exit(3))
    together, stats = load(path, 1, monkeypatch)
    assert together == alone
    assert stats["workers"] == 1 and stats["read_by_workers"] == 0   # (handed: 0 if it died first)


def test_batches_a_slow_worker_has_not_sent_are_taken_back(tmp_path, monkeypatch):
    """Once the file is read, the reader reads the batches still waiting on a worker itself
    (the newest first); rows that arrive later are dropped, not merged twice."""
    import time

    path = _trace(tmp_path, _events(3000))
    alone, _ = load(path, 0, monkeypatch)
    real = parallel._serve

    def slow(conn):
        time.sleep(0.3)
        real(conn)

    monkeypatch.setattr(parallel, "_serve", slow)
    together, stats = load(path, 1, monkeypatch)
    assert together == alone
    assert stats["handed"] > 0 and stats["read_by_workers"] < stats["handed"], stats


def test_a_worker_that_finds_another_file_reads_nothing(tmp_path, monkeypatch):
    """The worker opens the path itself: if that is not the file the reader has open (replaced
    in between), it reads none of it and the reader reads everything."""
    path = _trace(tmp_path, _events(2000))
    alone, _ = load(path, 0, monkeypatch)
    monkeypatch.setattr(parallel, "_identity", lambda st: (st.st_ino, os.getpid()))
    together, stats = load(path, 1, monkeypatch)
    assert together == alone
    assert stats["handed"] > 0 and stats["read_by_workers"] == 0


def test_an_error_in_the_reader_stops_the_workers(tmp_path, monkeypatch):
    """A truncated file is a TraceError as in one process, and no worker is left behind."""
    data = gzip.compress(json.dumps({"traceEvents": _events(3000)}).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    alone, _ = load(path, 0, monkeypatch)
    together, stats = load(path, 1, monkeypatch)
    assert isinstance(alone, str) and "truncated" in alone
    assert together == alone and stats["handed"] > 0
    assert_ended(stats)


def test_ctrl_c_while_reading_leaves_no_worker(tmp_path, monkeypatch):
    from lora_profiler.events import builder

    path = _trace(tmp_path, _events(3000))
    calls = []
    real = builder._merge

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(builder, "_merge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(path, 1, monkeypatch)
    assert_ended(parallel.LAST)


def test_workers_wanted_follows_the_environment(monkeypatch):
    monkeypatch.setenv("LORA_PROFILER_WORKERS", "0")
    assert parallel.workers_wanted() == 0
    monkeypatch.setenv("LORA_PROFILER_WORKERS", "2")
    assert parallel.workers_wanted() == 2
    monkeypatch.setenv("LORA_PROFILER_WORKERS", "many")
    assert parallel.workers_wanted() == 0
    monkeypatch.delenv("LORA_PROFILER_WORKERS")
    cpus = len(os.sched_getaffinity(0))
    assert parallel.workers_wanted() == max(0, min(cpus - 1, parallel.MAX_WORKERS))
    monkeypatch.setattr(fast, "MSGSPEC", None)
    assert parallel.workers_wanted() == 0


def _load_in_daemon(path, queue):
    os.environ["LORA_PROFILER_WORKERS"] = "1"
    parallel.START_AFTER = 0
    jsonstream._LOOKAHEAD = 1 << 14
    files.CHUNK_BYTES = 1 << 14
    queue.put(snapshot(load_trace(path)))


def test_inside_a_daemonic_process_the_trace_is_read_the_same(tmp_path, monkeypatch):
    """A multiprocessing pool's worker (a daemonic process) reads a trace as well: its workers
    are plain forks it reaps itself, and the tables are those of one process."""
    path = _trace(tmp_path, _events(1000))
    alone, _ = load(path, 0, monkeypatch)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_load_in_daemon, args=(path, q), daemon=True)
    p.start()
    got = q.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0 and got == alone


@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(evs=fuzz_events(max_events=60), lookahead=st.integers(64, 2000))
def test_workers_and_one_process_agree_on_generated_traces(evs, lookahead):
    """Generated and mutated events (the fuzzer's), cut into many small batches: the worker's
    rows, the batches it leaves and the ones taken back all merge into one process's tables."""
    import tempfile
    from pathlib import Path

    name_events(evs)
    text = json.dumps({"traceEvents": evs}, allow_nan=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.json.gz"
        path.write_bytes(gzip.compress(text.encode("utf-8", "surrogatepass")))
        with pytest.MonkeyPatch.context() as mp:
            alone, _ = load(path, 0, mp, lookahead)
            together, _ = load(path, 1, mp, lookahead)
    assert together == alone
