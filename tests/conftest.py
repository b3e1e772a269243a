"""Shared test fixtures, in one place: where the real traces are, synthetic Kineto events, a
small inline report, and one real tiny run shared by the session.

Three kinds of test data (ARCHITECTURE.md): inline synthetic events (``ev``, ``mk``), the real
traces beside the checkout (``SHARED_TRACES``, ``traces_dir``: skipped when absent; see its
MANIFEST.tsv) and tiny models defined in the tests (``tiny_run``: the tiny preset, run once).
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = (REPO.parent / "shared" / "traces").resolve()


def real_trace_files() -> list:
    """Every gzip/JSON file under the shared traces folder (empty when it is absent)."""
    if not SHARED_TRACES.is_dir():
        return []
    return sorted(p for p in SHARED_TRACES.rglob("*") if p.is_file()
                  and (p.name.endswith(".gz") or p.name.endswith(".json")))


# Slow tests (over ~10 s on a 2-core CPU) in files that are not to change; the others carry
# @pytest.mark.slow themselves. ``pytest -m "not slow"`` is the quick pass.
SLOW = {"test_trace_cli.py::test_tiny_preset_run_writes_report"}


def pytest_collection_modifyitems(items):
    for item in items:
        if f"{item.path.name}::{item.originalname}" in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def traces_dir() -> Path:
    """The real traces folder (``../shared/traces``); the test is skipped without it."""
    if not SHARED_TRACES.is_dir():
        pytest.skip(f"real traces not found at {SHARED_TRACES} (they live beside the checkout in shared/traces)")
    return SHARED_TRACES


shared_traces = traces_dir  # the same fixture under its older name


def suptitle(fig) -> str:
    """A figure's suptitle text (``Figure.get_suptitle`` is matplotlib 3.8+; the floor is 3.7)."""
    sup = getattr(fig, "_suptitle", None)
    return sup.get_text() if sup is not None else ""


# --- synthetic Kineto events (times in us) ---------------------------------------------------------

def _x(cat, name, ts, dur, pid=1, tid=1, **args):
    e = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}
    if args:
        e["args"] = {k.replace("_", " "): v for k, v in args.items()}
    return e


def op(name, ts, dur, tid=1, pid=1, **args):
    """A cpu_op; args use underscores for spaces (External_id, Sequence_number, ...)."""
    return _x("cpu_op", name, ts, dur, pid, tid, **args)


def rt(name, ts, dur, corr, tid=1, pid=1, ext=None, cat="cuda_runtime"):
    """A runtime call (a launch when ``corr`` links it to GPU work)."""
    args = {"correlation": corr}
    if ext is not None:
        args["External id"] = ext
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def launch(ts, dur, corr, tid=1, name="cudaLaunchKernel"):
    """A kernel launch call."""
    return rt(name, ts, dur, corr, tid=tid)


def kern(name, ts, dur, corr, stream=7, device=0, cat="kernel", **extra):
    """A GPU kernel (or memcpy/memset with ``cat``)."""
    args = {"device": device, "stream": stream, "correlation": corr, **extra}
    return {"ph": "X", "cat": cat, "name": name, "pid": device, "tid": stream, "ts": ts, "dur": dur, "args": args}


def ann(name, ts, dur, tid=1, pid=1, cat="user_annotation"):
    """A record_function range."""
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}


def step(n, ts, dur):
    """A ``ProfilerStep#n`` window."""
    return ann(f"ProfilerStep#{n}", ts, dur)


def mem(ts, nbytes, total, device_type=1, device_id=0, tid=1):
    """A ``[memory]`` allocator event."""
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


EVENTS = SimpleNamespace(op=op, rt=rt, launch=launch, kern=kern, ann=ann, step=step, mem=mem, write=write)


@pytest.fixture
def ev():
    """Synthetic event constructors: ev.op, ev.rt, ev.launch, ev.kern, ev.ann, ev.step, ev.mem, ev.write."""
    return EVENTS


@pytest.fixture
def mk(tmp_path):
    """mk(events) -> Trace (written to a fresh JSON file)."""
    from lora_profiler.events import load_trace

    n = [0]

    def make(events):
        n[0] += 1
        path = tmp_path / f"t{n[0]}.json"
        path.write_text(json.dumps({"traceEvents": events}))
        return load_trace(path)
    return make


# --- a small inline report --------------------------------------------------------------------------

ENV = {"device": "cpu", "device_name": "Test CPU 9000", "gpu_name": None, "torch": "2.13.0",
       "threads": 2}


def _mode(fwd, bwd, opt, params=1_000_000, grads=0, opt_state=0, base=0, adapter=0, other=0):
    total = fwd + bwd + opt
    spread = (0.9, 0.95, 1.0, 1.05, 1.2)  # the timed steps: a phase the mode does not run is 0 in every step
    return {
        "status": "ok", "error": None,
        "step_time_s": {"median": total, "min": total * 0.9, "max": total * 1.2, "q1": total * 0.95,
                        "q3": total * 1.05, "iqr": total * 0.1, "n": 5,
                        "samples": [total * f for f in spread]},
        "phase_time_s": {"forward": fwd, "backward": bwd, "optimizer": opt * 0.9, "zero_grad": opt * 0.1},
        "phase_samples_s": {"forward": [fwd * f for f in spread], "backward": [bwd * f for f in spread],
                            "optimizer": [opt * 0.9 * f for f in spread], "zero_grad": [opt * 0.1 * f for f in spread]},
        "trainable_params": grads // 4,
        "memory": {"param_bytes": params, "grad_bytes": grads, "optimizer_state_bytes": opt_state,
                   "peak_bytes": None, "peak_source": "test"},
        "saved_activations": {"total_bytes": base + adapter + other,
                              "by_category": {"base": base, "adapter": adapter, "other": other},
                              "by_module": {}},
    }


def _timeline():
    events, t = [], 0.0
    fwd = [("aten::linear", "base", 40.0), ("aten::dropout", "adapter", 6.0), ("aten::linear", "adapter", 9.0),
           ("aten::linear", "adapter", 8.0), ("aten::mul", "adapter", 3.0), ("aten::add", "adapter", 3.0)]
    bwd = [("aten::mul", "adapter", 3.0), ("aten::mm", "adapter", 7.0), ("aten::mm", "adapter", 7.0),
           ("aten::mm", "base", 45.0), ("aten::add_", "other", 2.0)]
    for phase, ops in (("forward", fwd), ("backward", bwd)):
        for name, role, dur in ops:
            events.append({"name": name, "role": role, "phase": phase, "lane": "cpu", "start_us": t, "dur_us": dur})
            t += dur + 1.0
        t += 500.0
    return {"layer": "model.layers.0.self_attn.q_proj", "events": events}


# causes of the inline attribution (s): they sum to overhead - residual = 6 ms
CAUSES = {"dropout": 0.0025, "lora_A": 0.0015, "lora_B": 0.001, "optimizer": 0.0005, "dispatch": 0.0005,
          "floor_only_nodes": -0.0005, "rest_of_network": 0.0005}


def _cause(v):
    return {"seconds": v, "min": v * 0.8 if v > 0 else v * 1.2, "max": v * 1.3 if v > 0 else v * 0.7, "n": 3,
            "phases": {"forward": v / 2, "backward": v / 2}}


REPORT = {
    "version": 1, "kind": "lora_profiler.report",
    "workload": {"name": "inline", "arch": "llama", "batch_size": 2, "seq_len": 16, "tokens_per_step": 32,
                 "total_params": 250_000},
    "environment": ENV,
    "adapters": {"source": "builtin", "count": 8, "rank": 8, "alpha": 16.0, "dropout": 0.05, "trainable_params": 8_000},
    "created": "2026-11-29T15:00:00+00:00",
    "settings": {"steps": 5, "block": 1, "profile": {"wait": 0, "warmup": 1, "active": 3}},
    "modes": {
        "full": _mode(0.010, 0.020, 0.006, grads=1_000_000, opt_state=2_000_000, base=400_000, other=20_000),
        "lora": _mode(0.012, 0.016, 0.001, grads=32_000, opt_state=64_000, base=380_000, adapter=110_000),
        "frozen": _mode(0.010, 0.012, 0.0, base=380_000),
        "forward": _mode(0.009, 0.0, 0.0),
    },
    "speedup": {"lora_vs_full": 36 / 29, "ideal_vs_full": 36 / 22, "lora_vs_frozen": 22 / 29},
    "attribution": {
        "overhead_s": 0.007, "overhead_ci_s": [0.006, 0.008], "residual_s": 0.001, "rounds": 3,
        "causes": {name: _cause(v) for name, v in CAUSES.items()},
        "labels": {"dropout": "dropout", "lora_A": "lora_A matmul", "lora_B": "lora_B matmul",
                   "optimizer": "optimizer", "dispatch": "dispatch / launch",
                   "floor_only_nodes": "input gradients skipped", "rest_of_network": "rest of the network"},
        "components": {"adapter_matmul_fwd": 0.0015, "adapter_matmul_bwd": 0.0025, "adapter_elementwise": 0.001,
                       "adapter_optimizer": 0.0005, "dispatch_overhead": 0.0005, "gpu_idle_in_adapter": 0.0},
        "validation": [
            {"variant": "no-dropout", "predicted_s": 0.0025, "measured_s": 0.0027, "ci_s": [0.002, 0.0033],
             "agrees": True},
            {"variant": "rank-x4", "predicted_s": -0.001, "measured_s": -0.003, "ci_s": [-0.0035, -0.0025],
             "agrees": False},
            {"variant": "fold-scale", "predicted_s": None, "measured_s": None, "ci_s": None, "agrees": None,
             "why": "skipped: torchtune adapters multiply by the scale inside their own forward"},
        ],
        "vs_full": {"overhead_s": 0.014, "table": [
            {"cause": "dropout", "label": "dropout", "lora_s": 0.0025, "full_s": 0.0, "saved_s": -0.0025},
            {"cause": "weight_grad", "label": "weight-gradient matmuls", "lora_s": 0.0, "full_s": 0.008,
             "saved_s": 0.008},
            {"cause": "optimizer", "label": "optimizer", "lora_s": 0.0005, "full_s": 0.006, "saved_s": 0.0055},
            {"cause": "residual", "label": "residual (unexplained)", "lora_s": 0.001, "full_s": 0.0,
             "saved_s": -0.001}]},
        "adapter_launches": 120, "extra_saved_activation_bytes": 110_000,
        "small_matmuls": {"unit": "op", "adapter_us": [3.0, 4.0, 5.5, 6.0, 8.0, 9.0, 12.0, 7.5],
                          "base_us": [30.0, 45.0, 50.0, 80.0], "launch_cost_us": 5.0,
                          "adapter_intensity": 3.9, "base_intensity": 40.0, "ridge_flop_per_byte": None,
                          "below_ridge_fraction": 1.0},
        "timeline": _timeline(),
    },
    "prediction": {"rows": [
        {"mode": "full", "measured_s": 0.040, "predicted_s": 0.036, "error": -0.10},
        {"mode": "lora", "measured_s": 0.030, "predicted_s": 0.033, "error": 0.10},
        {"mode": "frozen", "measured_s": 0.020, "predicted_s": 0.019, "error": -0.05},
        {"mode": "lora-fa", "measured_s": None, "predicted_s": 0.028, "error": None}]},
    "analysis": {}, "figures": [],
}


@pytest.fixture
def report() -> dict:
    """A complete small report dict (a fresh copy per test)."""
    return copy.deepcopy(REPORT)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A real run folder: ``python -m lora_profiler.trace --preset tiny`` (2 steps, no figures);
    read-only for tests (copy it to change it)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "lora_profiler.trace", "--preset", "tiny", "--steps", "2", "--warmup", "1",
         "--no-figures", "--quiet", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["out"] == str(out)
    return out
