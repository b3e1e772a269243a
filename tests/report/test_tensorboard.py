"""TensorBoard: one run per mode whose scalars overlay, the report as text, and a real server that
lists one run per mode in Scalars and one worker per mode (its rounds as spans) in the Profiler."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from lora_profiler.report.tensorboard import scalar_series, write_scalars


def test_one_series_per_mode_with_shared_tags(report):
    s = scalar_series(report)
    assert set(s) == {"full", "lora", "frozen", "forward"}
    for mode, tags in s.items():
        assert tags["step_time_s"] == report["modes"][mode]["step_time_s"]["samples"]
    # a phase a mode does not run gets no chart: forward-only has no backward, the floor no optimizer
    assert set(s["forward"]) == {"step_time_s", "phase_time_s/forward", "speedup_vs_full"}
    assert set(s["frozen"]) == {"step_time_s", "phase_time_s/forward", "phase_time_s/backward", "speedup_vs_full"}
    assert {"phase_time_s/optimizer", "phase_time_s/zero_grad", "overhead_vs_frozen_s"} <= set(s["lora"])
    assert "speedup_vs_full" not in s["full"] and "overhead_vs_frozen_s" in s["full"]
    full, lora, frozen = (report["modes"][m]["step_time_s"]["samples"] for m in ("full", "lora", "frozen"))
    assert s["lora"]["speedup_vs_full"] == pytest.approx([f / x for f, x in zip(full, lora)])  # paired steps
    assert s["lora"]["overhead_vs_frozen_s"] == pytest.approx([x - f for x, f in zip(lora, frozen)])
    assert s["lora"]["phase_time_s/backward"] == report["modes"]["lora"]["phase_samples_s"]["backward"]


def test_failed_mode_has_no_run(report):
    report["modes"]["lora"] = {"status": "failed", "error": "x"}
    s = scalar_series(report)
    assert "lora" not in s and set(s) == {"full", "frozen", "forward"}


def test_write_scalars_reads_back(report, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install lora_profiler[tb])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for _ in range(2):  # rebuilding a report replaces its event files, never adds to them
        assert write_scalars(report, tmp_path) == "tb"
    series = scalar_series(report)
    for mode, tags in series.items():
        files = list((tmp_path / "tb" / mode).glob("events.out.tfevents.*"))
        assert len(files) == 1
        acc = EventAccumulator(str(files[0].parent))
        acc.Reload()
        assert set(acc.Tags()["tensors"]) == set(tags)
        got = [float(e.tensor_proto.float_val[0]) for e in acc.Tensors("step_time_s")]
        assert got == pytest.approx(tags["step_time_s"], rel=1e-6)
        assert [e.step for e in acc.Tensors("step_time_s")] == list(range(len(tags["step_time_s"])))
    acc = EventAccumulator(str(tmp_path / "tb" / "report"))
    acc.Reload()
    text = acc.Tensors("report")[0].tensor_proto.string_val[0].decode()
    assert text.startswith("# lora_profiler report: inline") and "## Figures" not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, **query):
    url = f"http://127.0.0.1:{port}/data/{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_tensorboard_shows_one_run_and_one_worker_per_mode(tiny_run, tmp_path):
    """A real ``tensorboard --logdir OUT/tb``: Scalars lists one run per mode, Text the report, and
    the PyTorch Profiler plugin one worker per mode whose spans are the profiled rounds."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install lora_profiler[tb])")
    pytest.importorskip("torch_tb_profiler", reason="torch-tb-profiler is not installed (pip install lora_profiler[tb])")
    exe = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    if not Path(exe).exists():
        pytest.skip("no tensorboard executable on PATH")
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["tensorboard_scalars"] == "tb"
    modes = sorted(m for m, e in report["modes"].items() if e["status"] == "ok")
    rounds = report["settings"]["profile"]["active"]
    port = _free_port()
    log = (tmp_path / "tensorboard.log").open("w")
    proc = subprocess.Popen([exe, "--logdir", str(tiny_run / "tb"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # the profiler plugin parses the traces in the background
        runs = None
        while time.monotonic() < deadline:
            runs = _get(port, "plugin/pytorch_profiler/runs")
            if runs and not runs.get("loading") and set(modes) <= set(runs.get("runs", [])):
                break
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {proc.returncode}: "
                            f"{(tmp_path / 'tensorboard.log').read_text()[-1500:]}")
            time.sleep(1)
        assert runs is not None and sorted(runs["runs"]) == modes, f"after 120 s the profiler lists {runs}"
        scalars = _get(port, "plugin/scalars/tags")
        assert sorted(scalars) == modes  # one run per mode; the report run holds text only
        assert all("step_time_s" in tags for tags in scalars.values())
        assert _get(port, "plugin/text/tags") == {"report": ["report"]}
        for mode in modes:
            assert _get(port, "plugin/pytorch_profiler/workers", run=mode, view="Overview") == [mode]
            spans = _get(port, "plugin/pytorch_profiler/spans", run=mode, worker=mode)
            assert len(spans) == rounds, spans  # the profiled rounds are spans of the one worker
            overview = _get(port, "plugin/pytorch_profiler/overview", run=mode, worker=mode, span=spans[0])
            assert {"title": "Number of Worker(s)", "value": "1"} in overview["environments"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
