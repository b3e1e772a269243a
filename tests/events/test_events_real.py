"""The engine on real GPU traces: totals equal what the raw JSON says, links are complete.

Expected figures are computed here from each file with plain ``json``, never typed in.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from lora_profiler.events import CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET, TraceError, load_trace

from conftest import SHARED_TRACES as TRACES  # noqa: E402 (tests/conftest.py: the one place it is defined)
FILES = sorted(p for p in TRACES.rglob("*") if p.is_file() and p.name.endswith((".gz", ".json"))
               ) if TRACES.is_dir() else []
GPU_CATS = {"kernel": CAT_KERNEL, "Kernel": CAT_KERNEL, "gpu_memcpy": CAT_MEMCPY,
            "Memcpy": CAT_MEMCPY, "gpu_memset": CAT_MEMSET, "Memset": CAT_MEMSET}
_RAW = {}


def raw_doc(path: Path):
    if path not in _RAW:
        with gzip.open(path, "rt") if path.name.endswith(".gz") else open(path) as fh:
            _RAW[path] = json.load(fh)
    return _RAW[path]


_LOADED = {}


def loaded(path):
    if path not in _LOADED:
        _LOADED[path] = load_trace(path)
    return _LOADED[path]


def is_trace(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list)


def rel(p: Path) -> str:
    return str(p.relative_to(TRACES))


pytestmark = pytest.mark.skipif(not FILES, reason=f"real traces not found at {TRACES.resolve()}")


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_gpu_counts_and_durations_equal_raw_json(path):
    doc = raw_doc(path)
    if not is_trace(doc):
        with pytest.raises(TraceError, match=path.name):
            load_trace(path)
        return
    count = {c: 0 for c in (CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET)}
    total = {c: 0.0 for c in count}
    for e in doc["traceEvents"]:
        c = GPU_CATS.get(e.get("cat"))
        if c is not None and e.get("ph") == "X":
            count[c] += 1
            total[c] += e["dur"]
    k = loaded(path).kernels
    for c in count:
        assert int((k.cat == c).sum()) == count[c]
        assert float(k.dur_us[k.cat == c].sum()) == pytest.approx(total[c], rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_launch_links_and_steps_equal_raw_json(path):
    doc = raw_doc(path)
    if not is_trace(doc):
        pytest.skip("not a trace")
    ev = doc["traceEvents"]
    gpu_corr = {e["args"]["correlation"] for e in ev if e.get("cat") in GPU_CATS}
    runtime = [e for e in ev if e.get("cat") in ("cuda_runtime", "cuda_driver", "Runtime")]
    linked = sum(1 for e in runtime if e["args"].get("correlation") in gpu_corr)
    runtime_corr = {r["args"].get("correlation") for r in runtime}
    unlinked_kernels = sum(1 for e in ev if e.get("cat") in ("kernel", "Kernel")
                           and e["args"]["correlation"] not in runtime_corr)
    steps = sum(1 for e in ev if e.get("ph") == "X" and e.get("cat") in ("user_annotation",
                                                                        "Operator")
                and str(e.get("name")).startswith("ProfilerStep#"))
    t = loaded(path)
    assert int((t.launches.n_gpu > 0).sum()) == linked
    assert t.counts["kernels_unlinked"] == unlinked_kernels
    assert len(t.steps) == steps
    # every linked launch is inside an op (these traces profile ops)
    if len(t.ops):
        assert (t.launches.op[t.launches.n_gpu > 0] >= 0).mean() > 0.95


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_op_self_time_adds_up(path):
    if not is_trace(raw_doc(path)):
        pytest.skip("not a trace")
    o = loaded(path).ops
    assert (o.self_us >= 0).all() and (o.self_us <= o.dur_us + 1e-9).all()
    top = o.parent < 0
    # per thread, self times of a tree add up to its root's duration (up to rounding overruns)
    assert o.self_us.sum() == pytest.approx(o.dur_us[top].sum(), rel=0.02)


def test_devices_detected(traces_dir):
    assert loaded(next((traces_dir / "tracelens" / "mi300").glob("*.gz"))).device == "rocm"
    assert loaded(next((traces_dir / "tracelens" / "h100").glob("*.gz"))).device == "cuda"
    assert loaded(next((traces_dir / "kineto").rglob("*.gz"))).device == "cuda"


def test_ns_display_unit_is_not_rescaled(traces_dir):
    path = next((traces_dir / "hta" / "ns_resolution_v100").glob("*.gz"))
    doc = raw_doc(path)
    assert doc["displayTimeUnit"] == "ns"
    t = loaded(path)
    first = next(e for e in doc["traceEvents"] if e.get("cat") == "kernel")
    i = int(np.flatnonzero(t.kernels.corr == first["args"]["correlation"])[0])
    assert t.kernels.dur_us[i] == first["dur"]            # stored as given: microseconds
    # ProfilerSteps of a V100 CNN step last tens of ms, which is only true in microseconds
    assert 1e4 < np.median(t.steps.dur_us) < 1e6


def test_legacy_schema(traces_dir):
    path = next((traces_dir / "kineto").rglob("*.gz"))
    doc = raw_doc(path)
    t = loaded(path)
    ops = [e for e in doc["traceEvents"] if e.get("cat") == "Operator"
           and not e["name"].startswith("ProfilerStep#")]
    assert len(t.ops) == len(ops)
    assert len(t.steps) == 6 and t.step_numbers() == list(range(5, 11))
    assert (t.kernels.step >= 0).all()
    assert len(t.memory) == sum(1 for e in doc["traceEvents"] if e.get("name") == "[memory]")
    assert (t.memory.total_allocated == -1).all()         # legacy: no totals recorded
    # backward nodes link to forward ops
    node = t.ops.is_backward & (t.ops.seq >= 0)
    assert node.sum() > 100 and (t.ops.fwd_op[node] >= 0).all()


def test_amd_launches_and_unlinked_kernels(traces_dir):
    path = next((traces_dir / "tracelens" / "mi300").glob("*.gz"))
    t = loaded(path)
    names = set(t.names_of(np.unique(t.launches.name)))
    assert {"hipLaunchKernel", "hipExtModuleLaunchKernel", "hipModuleLaunchKernel"} <= names
    assert len(t.kernels) > len(t.launches)                # more kernels than launch calls
    assert t.counts["kernels_unlinked"] > 0
    assert t.memory.device_type.max() == 6                # HIP, as recorded


def test_driver_and_exc_launches(traces_dir):
    t = loaded(next((traces_dir / "tracelens" / "h100").glob("*.gz")))
    names = t.names_of(t.launches.name[t.launches.n_gpu > 0])
    assert {"cuLaunchKernel", "cudaLaunchKernelExC", "cudaLaunchKernel"} <= set(names)
    assert t.counts["kernels_unlinked"] == 0


def test_folder_of_ranks_is_one_trace(traces_dir):
    folder = traces_dir / "hta" / "sampled_2ranks"
    both = load_trace(folder)
    files = sorted(folder.glob("*.gz"))
    singles = [loaded(f) for f in files]
    assert len(both.files) == 2
    assert len(both.kernels) == sum(len(s.kernels) for s in singles)
    assert len(both.steps) == sum(len(s.steps) for s in singles)
    # links stay inside their file
    k = both.kernels
    ok = k.launch >= 0
    assert (both.launches.file[k.launch[ok]] == k.file[ok]).all()
    # a step view keeps both ranks' rows of that step
    s = both.for_step(551)
    assert len(s.steps) == 2 and set(s.kernels.file.tolist()) == {0, 1}


def test_for_step_partitions_kernels(traces_dir):
    t = loaded(next((traces_dir / "hta" / "ddp_v100_rank1").glob("*.gz")))
    parts = [t.for_step(n) for n in t.step_numbers()]
    assert sum(len(p.kernels) for p in parts) == int((t.kernels.step >= 0).sum())
    p = parts[0]
    ok = p.kernels.launch >= 0
    assert (p.launches.corr[p.kernels.launch[ok]] == p.kernels.corr[ok]).all()
    with pytest.raises(TraceError, match="ProfilerStep#999"):
        t.for_step(999)
