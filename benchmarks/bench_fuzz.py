"""Fuzzing benchmark: tens of thousands of generated, mutated and damaged traces through the reader.

Each case (``tests/events/fuzzing.py``: every schema variant, fields dropped, retyped, NaN /
inf / 1e300 / negative, duplicated, unsorted; files truncated, bytes changed, bad UTF-8, deep
nesting, long strings, cut gzip streams) is written to a temporary file and read by
``load_trace`` with warnings turned into errors. Outcomes:

- accepted: a Trace whose invariants hold (and, for an undamaged document, every event where
  the documented rules put it: a table, ``skipped`` or ``ignored``);
- rejected: a TraceError whose one-line message names the file;
- tracebacks: anything else (another exception, a warning, a broken invariant) — must be 0.

With ``--compare`` (default) every case is also read with the stdlib decoders and the tables
compared with the fast path's (orjson/isal when installed). ``--workers`` also reads every case
cut into batches of a few hundred characters twice, with a decoding worker (``parallel``) and in
one process, and compares the two (tables, or the TraceError's text). ``--analyze`` also runs every
generic analysis of ``python -m lora_profiler.analyze`` on each accepted trace, warnings as
errors, and counts failures separately (``analysis_errors``).

    python benchmarks/bench_fuzz.py [--cases 10000] [--seed 0] [--no-compare] [--analyze] [--workers]

The last stdout line is one JSON object with the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "events"))
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import fuzzing  # noqa: E402
from lora_profiler.events import fast  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="generated cases (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    ap.add_argument("--max-events", type=int, default=30, help="events per case before damage")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip reading each case again with the stdlib decoders")
    ap.add_argument("--analyze", action="store_true",
                    help="also run the generic analyses on every accepted trace")
    ap.add_argument("--workers", action="store_true",
                    help="also read every case cut into small batches with a decoding worker "
                         "and in one process, and compare (tables, or the TraceError's text)")
    a = ap.parse_args()

    counts: Counter = Counter()
    by_damage: Counter = Counter()
    first_failure: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_fuzz_"))

    def fail(kind: str, c, exc: BaseException) -> None:
        counts[kind] += 1
        if kind not in first_failure:
            first_failure[kind] = {"damage": c["damage"], "error": repr(exc)[:300],
                                   "traceback": traceback.format_exc()[-1500:]}

    @seed(a.seed)
    @settings(max_examples=a.cases, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(fuzzing.case(a.max_events))
    def one(c):
        counts["cases"] += 1
        path = tmp / f"case{counts['cases'] % 7}{'.json.gz' if c['gz'] else '.json'}"
        path.write_bytes(c["data"])
        try:
            trace = fuzzing.check_load(path)
            if trace is not None and c["valid_json"] and c["damage"] == "none":
                fuzzing.check_oracle(trace, c["events"])
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            fail("tracebacks", c, exc)
            return
        outcome = "rejected" if trace is None else "accepted"
        counts[outcome] += 1
        by_damage[f"{c['damage']}:{outcome}"] += 1
        if not a.no_compare and fast.describe() != "stdlib":
            saved = (fast.MSGSPEC, fast.ORJSON, fast.ISAL_ZLIB)
            # the stdlib alone, then orjson without msgspec (when both are installed)
            for off in (("MSGSPEC", "ORJSON", "ISAL_ZLIB"), ("MSGSPEC",)):
                if off == ("MSGSPEC",) and (fast.MSGSPEC is None or fast.ORJSON is None):
                    continue
                for attr in off:
                    setattr(fast, attr, None)
                try:
                    again = fuzzing.check_load(path)
                except Exception as exc:  # noqa: BLE001
                    fail("tracebacks", c, exc)
                    return
                finally:
                    fast.MSGSPEC, fast.ORJSON, fast.ISAL_ZLIB = saved
                if _flat(trace) != _flat(again):
                    fail("fast_stdlib_mismatch", c, AssertionError(f"tables differ without {off}"))
                    by_damage[f"{c['damage']}:fast/stdlib differ"] += 1
        if a.workers:
            try:
                alone, together = (_read_in_small_batches(path, w) for w in (0, 1))
            except Exception as exc:  # noqa: BLE001
                fail("tracebacks", c, exc)
                return
            counts["worker_cases"] += 1
            if alone != together:
                fail("worker_mismatch", c, AssertionError("a worker's tables differ"))
                by_damage[f"{c['damage']}:worker/one process differ"] += 1
        if a.analyze and trace is not None:
            from lora_profiler.analyze import analyze_trace
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    json.dumps(analyze_trace(trace), allow_nan=False)
            except Exception as exc:  # noqa: BLE001
                fail("analysis_errors", c, exc)

    t0 = time.perf_counter()
    one()
    wall = time.perf_counter() - t0
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    print(f"decoders: {fast.describe()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'outcome by damage':40s} {'cases':>8s}")
    for key, n in sorted(by_damage.items()):
        print(f"{key:40s} {n:8,d}")
    summary = {"cases": counts["cases"], "accepted": counts["accepted"],
               "rejected_trace_error": counts["rejected"], "tracebacks": counts["tracebacks"],
               "fast_stdlib_mismatch": counts["fast_stdlib_mismatch"],
               "analysis_errors": counts["analysis_errors"] if a.analyze else None,
               "worker_cases": counts["worker_cases"] if a.workers else None,
               "worker_mismatch": counts["worker_mismatch"] if a.workers else None,
               "decoders": fast.describe(), "wall_s": round(wall, 2), "seed": a.seed,
               "first_failure": first_failure}
    for kind, info in first_failure.items():
        print(f"\nfirst {kind} ({info['damage']}): {info['error']}\n{info['traceback']}")
    print(f"\n{counts['cases']:,} cases in {wall:.1f} s: {counts['accepted']:,} accepted, "
          f"{counts['rejected']:,} rejected with TraceError, {counts['tracebacks']} tracebacks")
    print(json.dumps(summary))


def _read_in_small_batches(path, workers: int):
    """The case read in batches of a few hundred characters, with ``workers`` decoding workers
    from the first batch on: its tables, or the TraceError's text."""
    from lora_profiler.events import TraceError, files, jsonstream, load_trace, parallel

    saved = (os.environ.get("LORA_PROFILER_WORKERS"), parallel.START_AFTER,
             jsonstream._LOOKAHEAD, files.CHUNK_BYTES)
    os.environ["LORA_PROFILER_WORKERS"] = str(workers)
    parallel.START_AFTER, jsonstream._LOOKAHEAD, files.CHUNK_BYTES = 0, 256, 256
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return _flat(load_trace(path))
    except TraceError as exc:
        return str(exc)
    finally:
        env, parallel.START_AFTER, jsonstream._LOOKAHEAD, files.CHUNK_BYTES = saved
        if env is None:
            os.environ.pop("LORA_PROFILER_WORKERS", None)
        else:
            os.environ["LORA_PROFILER_WORKERS"] = env


def _flat(trace):
    """A Trace as comparable values (None for a refused file)."""
    if trace is None:
        return None
    from lora_profiler.events.tables import TABLES
    out = {"names": trace.names, "skipped": trace.skipped, "ignored": trace.ignored,
           "counts": trace.counts, "device": trace.device, "meta": trace.meta}
    for t in TABLES:
        tab = getattr(trace, t)
        out[t] = {c: (getattr(tab, c).dtype.str, getattr(tab, c).tobytes())
                  for c in tab.columns()}
    return out


if __name__ == "__main__":
    main()
