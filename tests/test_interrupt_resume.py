"""Interrupted, resumed, concurrent and failing runs, as a user meets them: real processes, real
signals, real read-only and full file systems."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tiny model, one timed step per round so a round is short and the run has many of them; the
# two profiled rounds run after timed rounds 10 and 30 (of 40)
RUN = ["--preset", "tiny", "--steps", "40", "--block", "1", "--warmup", "0", "--profile-steps", "2",
       "--no-figures", "--no-calibrate", "--threads", "1", "--device", "cpu"]
TIMEOUT = 600


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def start(out, *argv, prefix=()):
    return subprocess.Popen([*prefix, sys.executable, "-m", "lora_profiler.trace", *argv, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)


def finish(proc):
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def resume(out, *argv):
    proc = subprocess.run([sys.executable, "-m", "lora_profiler.trace", "--resume", str(out), *argv],
                          capture_output=True, text=True, env=env(), cwd=REPO, timeout=TIMEOUT)
    return proc.returncode, proc.stdout, proc.stderr


def wait_for(proc, ready, what):
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > TIMEOUT:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def trace_files(out):
    """The profiler traces under tb/<mode>/ (TensorBoard's scalars lie beside them)."""
    return sorted(str(p.relative_to(out)) for p in (out / "tb").glob("*/*") if ".pt.trace.json" in p.name)


def facts_of(out):
    return json.loads((out / "facts.json").read_text())


def checkpoint_reached(out, key, n):
    def ready():
        try:
            return facts_of(out).get("progress", {}).get(key, 0) >= n
        except (OSError, ValueError):  # not written yet (never half-written: ValueError would fail below)
            return False
    return ready


def check_interrupted(out, code, stdout, stderr, sig):
    assert code == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr
    head = json.loads(stdout.strip().splitlines()[-1])
    assert head["status"] == "interrupted" and head["signal"] == signal.Signals(sig).name
    facts = facts_of(out)
    prog = facts["progress"]
    assert facts["status"] == "interrupted" and prog["signal"] == signal.Signals(sig).name and prog["at"]
    assert prog["args"]["preset"] == "tiny" and prog["args"]["steps"] == 40
    # only finished rounds: every mode has the same number of samples, one per finished round,
    # and one trace file per finished profiled round; nothing else is left in tb/<mode>/
    listed = []
    for mode, e in facts["modes"].items():
        n = (e.get("step_time_s") or {}).get("n", 0)
        assert n == prog["timed_rounds_done"], (mode, n, prog)
        assert len(e.get("trace_files") or []) == prog["profiled_rounds_done"]
        listed += e.get("trace_files") or []
    assert trace_files(out) == sorted(listed)
    for f in listed:
        with gzip.open(out / f) as fh:  # whole gzip files
            json.load(fh)
    assert not (out / ".lock").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert report["notes"][0].startswith(f"run interrupted by {signal.Signals(sig).name} during ")
    assert f"--resume {out}" in report["notes"][0]
    if prog["timed_rounds_done"] < prog["timed_rounds"]:
        assert "missing: " in report["notes"][0] and "timed rounds" in report["notes"][0]
    assert "> **Incomplete:** run interrupted" in (out / "report.md").read_text()
    assert "run interrupted by" in stdout  # the terminal summary says so too
    return facts


def check_resumed(out, before, code, stdout, stderr):
    assert code == 0, stderr[-3000:]
    facts = facts_of(out)
    assert facts["status"] == "complete" and "progress" not in facts
    assert facts["created"] == before["created"]
    [res] = facts["resumed"]
    kept = before["progress"]["timed_rounds_done"]
    assert res["kept"]["timed_rounds"] == kept
    assert res["kept"]["profiled_rounds"] == before["progress"]["profiled_rounds_done"]
    for mode, e in facts["modes"].items():
        old = before["modes"][mode]
        samples = e["step_time_s"]["samples"]
        assert len(samples) == 40
        assert samples[:kept] == (old.get("step_time_s") or {}).get("samples", [])[:kept]  # kept, not redone
        for phase, v in e["phase_samples_s"].items():
            assert v[:kept] == (old.get("phase_samples_s") or {}).get(phase, [])[:kept]
        assert len(e["trace_files"]) == 2
        assert e["trace_files"][:len(old.get("trace_files") or [])] == (old.get("trace_files") or [])
        assert all((out / f).is_file() for f in e["trace_files"])
    assert trace_files(out) == sorted(f for e in facts["modes"].values() for f in e["trace_files"])
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["attribution"] is not None
    assert not any(n.startswith("run interrupted") for n in report["notes"])
    assert ("resumed after" in stdout) == (len(stdout.strip().splitlines()) > 1)  # summary unless --quiet
    assert json.loads(stdout.strip().splitlines()[-1])["failed"] == []
    assert not (out / ".lock").exists()


def test_sigint_after_the_first_trace_file_then_resume(tmp_path):
    out = tmp_path / "run"
    proc = start(out, *RUN)
    wait_for(proc, lambda: (out / "tb").is_dir() and any((out / "tb").glob("*/*.pt.trace.json.gz")),
             "the first trace file")
    proc.send_signal(signal.SIGINT)
    before = check_interrupted(out, *finish(proc), signal.SIGINT)
    assert 10 <= before["progress"]["timed_rounds_done"] < 40  # stopped in the middle
    # --resume refuses other options: the run goes on as it was started
    code, _, err = resume(out, "--steps", "5")
    assert code == 2 and "--resume continues a run with the options it was started with; drop --steps" in err
    check_resumed(out, before, *resume(out))
    code, _, err = resume(out)
    assert code == 2 and "the run is complete and reported" in err


def test_sigterm_after_a_finished_profiled_round_keeps_its_traces(tmp_path):
    out = tmp_path / "run"
    proc = start(out, *RUN)
    wait_for(proc, checkpoint_reached(out, "profiled_rounds_done", 1), "the first profiled round")
    proc.send_signal(signal.SIGTERM)
    before = check_interrupted(out, *finish(proc), signal.SIGTERM)
    assert before["progress"]["profiled_rounds_done"] >= 1 and trace_files(out)
    check_resumed(out, before, *resume(out, "--quiet"))


def test_sigint_before_anything_was_measured_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    # a model file whose build_model waits: the signal arrives while the workload is built
    model = tmp_path / "slow.py"
    model.write_text("import time, torch\nprint('building', flush=True)\n"
                     "def build_model():\n    time.sleep(30)\n    return torch.nn.Linear(4, 4)\n")
    proc = start(out, str(model), "--quiet")
    wait_for(proc, lambda: True, "start")
    assert proc.stdout.readline().strip() == "building"
    proc.send_signal(signal.SIGINT)
    code, stdout, stderr = finish(proc)
    assert code == 130 and "Traceback" not in stderr and "interrupted" in stderr
    assert not out.exists()


def test_two_runs_on_one_folder_exactly_one_wins(tmp_path):
    out = tmp_path / "run"
    a, b = start(out, *RUN[:3], "4", *RUN[4:]), start(out, *RUN[:3], "4", *RUN[4:])
    results = {p.pid: finish(p) for p in (a, b)}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], {pid: (c, e[-1500:]) for pid, (c, _, e) in results.items()}
    [(winner, _)] = [(pid, r) for pid, r in results.items() if r[0] == 0]
    [(_, (_, _, err))] = [(pid, r) for pid, r in results.items() if r[0] == 2]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"another run (pid {winner} on " in err and "choose another --out" in err
    assert facts_of(out)["status"] == "complete" and not (out / ".lock").exists()


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def _in_own_mount(mount_opts: str, folder: Path):
    """A command prefix: run in a private mount namespace with a tmpfs on ``folder``."""
    return ("unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o {mount_opts} tmpfs "{folder}" && exec "$@"', "sh")


@pytest.mark.skipif(not _unshare_ok() and os.geteuid() == 0,
                    reason="needs unshare (user + mount namespaces) or a non-root user")
def test_read_only_output_folder(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    if _unshare_ok():
        proc = start(out, *RUN, "--quiet", prefix=_in_own_mount("ro", out))
    else:
        out.chmod(0o555)
        proc = start(out, *RUN, "--quiet")
    code, _, err = finish(proc)
    assert code == 2, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot write {out}" in err and ("Read-only file system" in err or "Permission denied" in err)
    assert "choose another --out" in err


@pytest.mark.skipif(not _unshare_ok(), reason="needs unshare (user + mount namespaces) for a small tmpfs")
def test_disk_full_stops_with_one_line_and_nothing_half_written(tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    # room for the first checkpoints, not for every trace: run, list what is left
    script = (f'mount -t tmpfs -o size=300k tmpfs "{out}" && "$@"; code=$?; '
              f'cd "{out}" && find . -type f | sort > "{tmp_path}/left.txt"; '
              f'tar cf "{tmp_path}/left.tar" . 2>/dev/null; exit $code')
    proc = start(out / "run", *RUN, "--quiet", prefix=("unshare", "-rm", "sh", "-c", script, "sh"))
    code, _, err = finish(proc)
    assert code == 2, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "No space left on device" in err and f"--resume {out / 'run'} continues it" in err
    left = (tmp_path / "left.txt").read_text().split()
    assert "./run/.lock" not in left
    assert not [f for f in left if f.endswith(".tmp")]  # no temporary file left behind
    shutil.unpack_archive(tmp_path / "left.tar", tmp_path / "copy", "tar")
    run = tmp_path / "copy" / "run"
    facts = facts_of(run)  # whole JSON: the last checkpoint
    assert facts["status"] == "running"
    listed = {f for e in facts["modes"].values() for f in e.get("trace_files") or []}
    assert listed <= set(trace_files(run))
    for f in trace_files(run):  # every trace file under its final name is whole
        with gzip.open(run / f) as fh:
            json.load(fh)


def test_analyze_while_a_run_writes_reads_only_whole_files(tmp_path):
    from lora_profiler.analyze import analyze_run
    from lora_profiler.events import TraceError

    out = tmp_path / "run"
    proc = start(out, *RUN[:3], "12", *RUN[4:], "--quiet")
    reads = 0
    while proc.poll() is None:
        if (out / "facts.json").is_file():
            try:
                result = analyze_run(out)
            except TraceError as exc:
                if "no facts.json" in str(exc):  # removed by nothing, but a fresh folder may lack it
                    continue
                raise
            reads += 1
            assert isinstance(result, dict)
        time.sleep(0.01)
    code, _, err = finish(proc)
    assert code == 0, err[-2000:]
    assert reads > 0
