"""Profiling under torch.distributed: 2 ranks x Gloo on CPU started with torchrun (bounded in
time), a rank killed mid-run, and the analysis side on real multi-rank NCCL traces."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_profiler.analyses.communication import record_bytes
from lora_profiler.analyses.ranks import spread
from lora_profiler.documents import analyze_trace
from lora_profiler.events import load_trace

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with Gloo on Linux/macOS")


def torchrun(out, *extra, nproc=2):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "lora_profiler.trace", "--preset", "tiny", "--device", "cpu", "--no-figures", "--quiet",
           "--out", str(out), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "run"
    proc = torchrun(out, "--steps", "3", "--profile-steps", "2", "--dist-timeout", "60")
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    return out, stdout, stderr


def test_two_ranks_write_one_report_with_both_ranks(run2):
    out, stdout, _ = run2
    head = json.loads(stdout.strip().splitlines()[-1])  # rank 0's headline only
    assert head["out"] == str(out) and head["failed"] == []
    facts = json.loads((out / "facts.json").read_text())
    d = facts["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo" and [r["rank"] for r in d["ranks"]] == [0, 1]
    assert facts["workload"]["batch_size"] * 2 == d["global_batch_size"]
    report = json.loads((out / "report.json").read_text())
    rd = report["distributed"]
    for mode in ("full", "lora", "frozen"):
        assert set(rd["step_time"][mode]["per_rank_s"]) == {"0", "1"}
        assert rd["step_time"][mode]["slowest_rank"] in (0, 1)
    # the gradient bytes the traces show are the trainable parameters x 4 bytes (float32)
    for mode in ("full", "lora"):
        c = rd["communication"][mode]
        assert c["expected_bytes_per_step"] == facts["modes"][mode]["trainable_params"] * 4
        assert c["matches"] is True
        assert {v["gradient_bytes_per_step"] for v in c["per_rank"].values()} == {c["expected_bytes_per_step"]}
    assert rd["communication"]["frozen"]["wrapped"] is None
    assert rd["communication"]["full"]["expected_bytes_per_step"] > 10 * rd["communication"]["lora"]["expected_bytes_per_step"]
    att = report["attribution"]
    assert "communication" in att["causes"] and "communication" in att["vs_full"]["causes"]
    assert set(rd["attribution_per_rank"]) == {"0", "1"}
    assert "## Ranks" in (out / "report.md").read_text()


def test_each_rank_writes_its_traces_with_its_rank(run2):
    out, _, _ = run2
    for mode in ("full", "lora", "frozen"):
        files = sorted((out / "tb" / mode).glob("*.pt.trace.json.gz"))
        assert {f.name.split(".")[1] for f in files} == {"rank0", "rank1"}
        for f in files:
            info = json.loads(gzip.open(f).read())["distributedInfo"]
            assert info["rank"] == int(f.name.split(".")[1][4:]) and info["world_size"] == 2


def test_analyze_reports_per_rank_figures_of_a_mode_folder(run2):
    out, _, _ = run2
    proc = subprocess.run([sys.executable, "-m", "lora_profiler.analyze", str(out / "tb" / "lora"), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ranks = json.loads(proc.stdout)["ranks"]
    assert ranks["world_size"] == 2 and [r["rank"] for r in ranks["ranks"]] == [0, 1]
    for r in ranks["ranks"]:
        assert r["step_us"] > 0 and r["steps"] == 2
        assert r["communication"]["collectives"]["all_reduce"]["count"] == 2
        assert r["communication"]["backend"] == "gloo"


def _facts(out):
    try:
        return json.loads((out / "facts.json").read_text())
    except (OSError, ValueError):
        return None


def test_a_killed_rank_ends_the_run_naming_it_and_keeps_what_was_measured(tmp_path):
    out = tmp_path / "run"
    timeout = 20
    proc = torchrun(out, "--steps", "200", "--block", "1", "--no-profile", "--dist-timeout", str(timeout))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            f = _facts(out)
            if f and (f.get("progress") or {}).get("timed_rounds_done", 0) >= 2:
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the run did not reach its second timed round")
        pid = f["distributed"]["ranks"][1]["pid"]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = proc.communicate(timeout=timeout + 60)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and took < timeout + 30
    ours = [line for line in stderr.splitlines() if "lora_profiler" in line and "rank 1" in line]
    assert ours, stderr[-3000:]
    assert "Traceback" not in "\n".join(line for line in stderr.splitlines() if "lora_profiler" in line)
    facts = _facts(out)
    assert facts["status"] == "interrupted"
    assert facts["progress"]["timed_rounds_done"] >= 2
    assert len(facts["modes"]["lora"]["step_time_s"]["samples"]) >= 2


def test_real_nccl_ranks_sampled_128_rank_job(traces_dir):
    doc = analyze_trace(load_trace(traces_dir / "hta" / "sampled_2ranks"), top=5, steps=False)
    ranks = doc["ranks"]
    assert ranks["world_size"] == 128 and [r["rank"] for r in ranks["ranks"]] == [0, 1]
    for r in ranks["ranks"]:
        c = r["communication"]
        assert c["backend"] == "nccl" and c["time_us"] > 0 and 0 < c["overlap_fraction"] < 1
        assert {"all_reduce", "all_to_all", "all_gather_base"} <= set(c["collectives"])
        assert c["bytes_per_step"] > 0 and r["kernels"]["count"] > 1000
    assert ranks["step"]["slowest_rank"] == 1 and ranks["step"]["spread"] > 0
    # nccl:all_reduce of [[19618307]] float: 4 bytes each
    assert doc["communication"]["collectives"]["all_reduce"]["bytes_known"]


def test_real_ddp_rank_without_input_dims(traces_dir):
    doc = analyze_trace(load_trace(traces_dir / "hta" / "ddp_v100_rank1"), top=5, steps=False)
    c = doc["communication"]
    assert c["backend"] == "nccl" and c["source"] == "gpu kernels"
    assert c["collectives"]["all_reduce"]["count"] == 2020
    assert c["collectives"]["all_reduce"]["bytes_known"] is False and c["bytes_per_step"] is None
    assert doc["ranks"]["ranks"][0]["rank"] == 1 and doc["ranks"]["world_size"] == 2


def test_a_single_process_trace_has_no_ranks(tiny_run):
    doc = analyze_trace(load_trace(tiny_run / "tb" / "lora"), top=5, steps=False)
    assert doc["ranks"] is None and doc["communication"]["count"] == 0


def test_record_bytes_and_spread():
    assert record_bytes(repr([[[4224]], ["float"]])) == 4224 * 4
    assert record_bytes(repr([[[2, 3], []], ["c10::BFloat16", "Scalar"]])) == 12
    assert record_bytes(repr([[[5]], ["mystery"]])) is None
    s = spread({0: 1.0, 1: 1.5, 2: 1.0})
    assert s["slowest_rank"] == 1 and s["stragglers"] == [1] and s["spread_fraction"] == 0.5


def test_python_m_trace_runs_the_imported_module_so_rank_state_is_shared(monkeypatch):
    """``python -m lora_profiler.trace`` must run ``lora_profiler.trace.main`` itself, not the
    ``__main__`` copy of the module: a rank's DistContext is kept in the module's state, which
    trace_distributed fills through ``lora_profiler.trace`` (with two copies, a rank stopped by
    torchrun's SIGTERM could not name the rank that failed)."""
    import runpy

    import lora_profiler.trace as trace_module

    called = []
    monkeypatch.setattr(trace_module, "main", lambda: called.append(True) or 0)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("lora_profiler.trace", run_name="__main__")
    assert called and exit_.value.code == 0
