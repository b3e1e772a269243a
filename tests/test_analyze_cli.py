"""python -m lora_profiler.analyze as users run it: in a subprocess, on real and bad input."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lora_profiler.analyze import analyze_run

REPO = Path(__file__).resolve().parents[1]
TRACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces"
SMALL = TRACES / "hta" / "critical_path_alexnet"        # tiny, no steps
STEPS = TRACES / "tracelens" / "h100"                   # tiny, one ProfilerStep
needs_traces = pytest.mark.skipif(not TRACES.is_dir(),
                                  reason=f"real traces not found at {TRACES.resolve()}")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lora_profiler.analyze", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def small_trace(path: Path, kernels: int = 2) -> Path:
    events = [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#0", "pid": 1, "tid": 1,
               "ts": 0, "dur": 1000}]
    for i in range(kernels):
        events += [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1,
                    "ts": 10 + 100 * i, "dur": 50},
                   {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1,
                    "tid": 1, "ts": 20 + 100 * i, "dur": 5, "args": {"correlation": i}},
                   {"ph": "X", "cat": "kernel", "name": "sgemm", "pid": 0, "tid": 7,
                    "ts": 40 + 100 * i, "dur": 30, "args": {"correlation": i, "stream": 7,
                                                             "device": 0}}]
    path.write_text(json.dumps({"traceEvents": events}))
    return path


@needs_traces
def test_json_document(tmp_path):
    r = cli(SMALL, "--json", "--top", "3")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    raw = json.loads(gzip.decompress(next(SMALL.glob("*.gz")).read_bytes()))
    kernels = [e for e in raw["traceEvents"] if e.get("cat") == "kernel"]
    assert doc["gpu"]["kernel"]["count"] == len(kernels)
    assert doc["gpu"]["kernel"]["total_us"] == sum(e["dur"] for e in kernels)
    cats = [e.get("cat") for e in raw["traceEvents"]]
    assert doc["gpu"]["memcpy"]["count"] == cats.count("gpu_memcpy")
    assert doc["gpu"]["memset"]["count"] == cats.count("gpu_memset")
    assert doc["launches"]["count"] >= doc["launches"]["linked"] > 0
    assert doc["steps"] == 0 and doc["device"] == "cuda"
    assert len(doc["gpu"]["by_name"]) == 3
    for key in ("ops", "dispatch", "per_step", "headline"):
        assert key in doc


@needs_traces
def test_text_tables_end_with_headline_json():
    r = cli(STEPS, "--top", "5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    head = json.loads(lines[-1])
    assert head["steps"] == 1 and head["gpu.kernel.count"] == 60 and head["device"] == "cuda"
    assert "top kernels by GPU time" in r.stdout and "per step" in r.stdout


def test_step_and_compare(tmp_path):
    a, b = small_trace(tmp_path / "a.json", 2), small_trace(tmp_path / "b.json", 5)
    r = cli(a, "--step", "0", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["step"] == 0
    r = cli(a, "--compare", b)
    assert r.returncode == 0, r.stderr
    head = json.loads(r.stdout.strip().splitlines()[-1])
    assert head["gpu.kernel.count"] == 3 and "kernels with the largest GPU time change" in r.stdout
    doc = json.loads(cli(a, "--compare", b, "--json").stdout)
    assert doc["kernels"][0] == {"name": "sgemm", "count_a": 2, "count_b": 5, "count_delta": 3,
                                 "total_us_a": 60.0, "total_us_b": 150.0, "delta_us": 90.0}


def test_help_teaches():
    r = cli("--help")
    assert r.returncode == 0 and "--compare" in r.stdout and "examples:" in r.stdout


def _truncated_gz(tmp):
    data = gzip.compress(json.dumps({"traceEvents": [{"ph": "X", "name": "x" * 50000}]}).encode())
    p = tmp / "cut.json.gz"
    p.write_bytes(data[: len(data) // 2])
    return p


def _text(tmp, name, content):
    p = tmp / name
    p.write_text(content)
    return p


def _empty_dir(tmp):
    d = tmp / "nothing_here"
    d.mkdir()
    (d / "README.txt").write_text("no traces")
    return d


def _flipped_gz(tmp):
    data = bytearray(gzip.compress(json.dumps({"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": f"op{i}", "ts": i, "dur": 1} for i in range(2000)]
    }).encode()))
    data[len(data) // 2] ^= 0xFF
    p = tmp / "flipped.json.gz"
    p.write_bytes(bytes(data))
    return p


def _bytes(tmp, name, content: bytes):
    p = tmp / name
    p.write_bytes(content)
    return p


_EV = '{"ph": "X", "cat": "cpu_op", "name": "a", "ts": %s, "dur": 1}'

BAD = {
    "changed gzip byte": (_flipped_gz, "gzip"),
    "bad UTF-8": (lambda t: _bytes(t, "u.json", b'{"traceEvents": [{"name": "\xff"}]}'),
                  "not UTF-8"),
    "deep nesting": (lambda t: _text(t, "d.json", '{"traceEvents": [' + "[" * 100_000
                                      + "]" * 100_000 + "]}"), "nested too deeply"),
    "no usable event": (lambda t: _text(t, "n.json", '{"traceEvents": [%s, %s]}'
                                        % (_EV % "NaN", _EV % "1e300")), "none of the 2 events"),
    "truncated gzip": (_truncated_gz, "truncated"),
    "not JSON": (lambda t: _text(t, "x.json", "this is not json"), "not valid JSON"),
    "no traceEvents": (lambda t: _text(t, "x.json", '{"schemaVersion": 1}'), "traceEvents"),
    "no events": (lambda t: _text(t, "x.json", '{"traceEvents": []}'), "no events"),
    "empty file": (lambda t: _text(t, "x.json", ""), "empty file"),
    "folder without traces": (_empty_dir, "no trace file"),
    "missing path": (lambda t: t / "does_not_exist.json", "no such file"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    make, words = BAD[case]
    path = make(tmp_path)
    r = cli(path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert str(path) in lines[0] and words in lines[0]
    assert r.stdout == ""


def test_debug_shows_traceback(tmp_path):
    r = cli(tmp_path / "missing.json", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def _run_folder(tmp_path):
    run = tmp_path / "run"
    for mode, n in (("full", 3), ("lora", 4)):
        (run / "tb" / mode).mkdir(parents=True)
        small_trace(run / "tb" / mode / f"host_1.{mode}.pt.trace.json", n)
    (run / "tb" / "scalars").mkdir()
    (run / "facts.json").write_text(json.dumps({"version": 1, "kind": "lora_profiler.facts"}))
    return run


def test_run_folder_and_hook(tmp_path):
    run = _run_folder(tmp_path)
    seen = {}

    def hook(run_dir, facts, traces, result):
        seen["modes"] = sorted(traces)
        result["attribution"] = {"kernels_lora": len(traces["lora"].kernels)}

    doc = analyze_run(run, hooks=[hook])
    assert sorted(doc["modes"]) == ["full", "lora"] and seen["modes"] == ["full", "lora"]
    assert doc["modes"]["lora"]["gpu"]["kernel"]["count"] == 4
    assert doc["attribution"] == {"kernels_lora": 4}
    r = cli(run, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["modes"]["full"]["gpu"]["kernel"]["count"] == 3
