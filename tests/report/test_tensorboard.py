"""TensorBoard: scalars written beside the traces; a real server lists every mode's trace."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lora_profiler.report.tensorboard import scalar_series, write_scalars


def test_scalar_series(report):
    s = scalar_series(report)
    assert s["step_time_s/lora"] == report["modes"]["lora"]["step_time_s"]["samples"]
    assert s["step_time_median_s/full"] == [pytest.approx(0.036)]
    assert s["speedup/lora_vs_full"] == [pytest.approx(36 / 29)]
    assert s["phase_time_s/lora/backward"] == [0.016]
    assert s["overhead_s/lora_minus_frozen"] == [0.007] and "overhead_s/residual" in s
    report["modes"]["lora"] = {"status": "failed", "error": "x"}
    report["attribution"] = None
    s = scalar_series(report)
    assert not any("lora" in tag.split("/")[1] for tag in s if tag.startswith("step_time"))
    assert not any(tag.startswith("overhead_s") for tag in s)


def test_write_scalars_reads_back(report, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert write_scalars(report, tmp_path) == "tb/scalars"
    files = list((tmp_path / "tb" / "scalars").glob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    tags = acc.Tags()["tensors"] + acc.Tags()["scalars"]
    assert {"step_time_s/full", "step_time_s/lora", "speedup/lora_vs_full"} <= set(tags)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(port: int):
    url = f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler/runs"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def test_tensorboard_lists_modes(tiny_run, tmp_path):
    """A real ``tensorboard --logdir OUT/tb`` serves every mode's trace in the profiler plugin."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install lora_profiler[tb])")
    pytest.importorskip("torch_tb_profiler", reason="torch-tb-profiler is not installed (pip install lora_profiler[tb])")
    exe = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    if not Path(exe).exists():
        pytest.skip("no tensorboard executable on PATH")
    report = json.loads((tiny_run / "report.json").read_text())
    assert write_scalars(report, tiny_run) == "tb/scalars"
    modes = sorted(m for m, e in report["modes"].items() if e.get("trace_files"))
    assert modes, "the tiny run wrote no traces"
    port = _free_port()
    log = (tmp_path / "tensorboard.log").open("w")
    proc = subprocess.Popen([exe, "--logdir", str(tiny_run / "tb"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # the profiler plugin loads runs asynchronously
        runs = None
        while time.monotonic() < deadline:
            runs = _runs(port)
            if runs and set(modes) <= set(runs.get("runs", [])):
                break
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {proc.returncode}: "
                            f"{(tmp_path / 'tensorboard.log').read_text()[-1500:]}")
            time.sleep(0.5)
        assert runs is not None and set(modes) <= set(runs["runs"]), \
            f"after 60 s the profiler plugin lists {runs}; expected {modes}"
        assert "scalars" not in runs["runs"]  # the scalars folder holds no trace
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
