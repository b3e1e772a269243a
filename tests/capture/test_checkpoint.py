"""An interruption at every point of a run leaves facts a report can be built from, and --resume
finishes the run from there (in-process: the interruption is raised where a signal could land)."""

import json
import signal

import pytest

from lora_profiler import runstate, trace
from lora_profiler.capture import checkpoint as ckpt_mod
from lora_profiler.capture import run as run_mod
from lora_profiler.runstate import RunInterrupted

ARGS = ["--preset", "tiny", "--steps", "3", "--block", "1", "--warmup", "1", "--profile-steps", "2",
        "--no-figures", "--no-calibrate", "--threads", "1", "--device", "cpu", "--quiet"]


def main(capsys, *argv):
    code = trace.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def interrupt_when(monkeypatch, phase, sig=signal.SIGTERM, nth=1):
    """Raise RunInterrupted(sig) the ``nth`` time capture announces ``phase``."""
    real = ckpt_mod.Checkpoint.at
    seen = []

    def at(self, ph, where):
        real(self, ph, where)
        if ph == phase:
            seen.append(where)
            if len(seen) == nth:
                raise RunInterrupted(sig)

    monkeypatch.setattr(ckpt_mod.Checkpoint, "at", at)


def resume_and_check(capsys, monkeypatch, out, steps=3):
    monkeypatch.undo()
    code, stdout, err = main(capsys, "--resume", str(out))
    assert code == 0, err
    facts = json.loads((out / "facts.json").read_text())
    assert facts["status"] == "complete" and len(facts["resumed"]) == 1
    for mode, e in facts["modes"].items():
        assert e["status"] == "ok", e
        assert e["step_time_s"]["n"] == steps
        if e.get("profiled") is not False:
            assert len(e["trace_files"]) == 2
    assert json.loads((out / "report.json").read_text())["status"] == "complete"
    return facts


@pytest.mark.parametrize("phase, nth, extra", [
    ("warmup", 1, []),
    ("accounting", 1, []),
    ("calibration", 1, ["--no-calibrate"]),  # replaced below: calibration runs
    ("timed", 2, []),
    ("profiled", 2, []),
    ("variants", 1, ["--validate", "--variants", "no-dropout"]),
])
def test_interrupted_at_each_phase_then_resumed(capsys, monkeypatch, tmp_path, phase, nth, extra):
    out = tmp_path / "run"
    args = list(ARGS) + [a for a in extra if a != "--no-calibrate"]
    if phase == "calibration":
        args.remove("--no-calibrate")
        monkeypatch.setattr(run_mod, "calibrate", lambda *a, **k: {"cost_us": {}, "stub": True})
    interrupt_when(monkeypatch, phase, nth=nth)
    code, stdout, err = main(capsys, *args, "--out", str(out))
    assert code == 143, err
    facts = json.loads((out / "facts.json").read_text())
    prog = facts["progress"]
    assert facts["status"] == "interrupted" and prog["signal"] == "SIGTERM" and prog["phase"] == phase
    report = json.loads((out / "report.json").read_text())
    assert report["notes"][0].startswith(f"run interrupted by SIGTERM during {prog['at']}")
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "interrupted"
    assert not (out / ".lock").exists()
    if phase == "calibration":
        monkeypatch.undo()
        monkeypatch.setattr(run_mod, "calibrate", lambda *a, **k: {"cost_us": {}, "stub": True})
        code, _, err = main(capsys, "--resume", str(out))
        assert code == 0, err
        assert json.loads((out / "facts.json").read_text())["calibration"]["stub"]
        return
    resumed = resume_and_check(capsys, monkeypatch, out)
    kept = resumed["resumed"][0]["kept"]
    assert kept["timed_rounds"] == prog["timed_rounds_done"]
    assert kept["accounting"] == (phase not in ("warmup", "accounting"))


@pytest.mark.parametrize("nth, at", [
    (4 + 8 + 3, "profiled round 1 of 2"),    # warm-up (4 modes), timed round 1 (4 x 2), 3 steps in
    (4 + 8 + 8 + 3, "timed round 2 of 3"),   # ... profiled round 1 (4 x 2), 3 steps in
])
def test_interrupted_in_a_step_drops_the_unfinished_round(capsys, monkeypatch, tmp_path, nth, at):
    """A signal inside a round: the samples and traces some modes already took in it are not
    kept (every mode's i-th sample and trace must come from the same round)."""
    out = tmp_path / "run"
    real = run_mod.StepRunner.step
    calls = []

    def step(self):
        calls.append(1)
        if len(calls) == nth:
            raise RunInterrupted(signal.SIGINT)
        return real(self)

    monkeypatch.setattr(run_mod.StepRunner, "step", step)
    code, _, err = main(capsys, *ARGS, "--out", str(out))
    assert code == 130, err
    facts = json.loads((out / "facts.json").read_text())
    prog = facts["progress"]
    assert prog["timed_rounds_done"] == 1 and prog["at"] == at
    assert prog["profiled_rounds_done"] == (1 if at.startswith("timed") else 0)
    assert {e["step_time_s"]["n"] for e in facts["modes"].values()} == {1}
    listed = sorted(f for e in facts["modes"].values() for f in e.get("trace_files") or [])
    assert sorted(str(p.relative_to(out)) for p in (out / "tb").glob("*/*.json*")) == listed
    assert len(listed) == 4 * prog["profiled_rounds_done"]
    resume_and_check(capsys, monkeypatch, out)


def test_interrupted_while_writing_the_report(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    import lora_profiler.report.build as build

    def boom(*a, **k):
        raise RunInterrupted(signal.SIGINT)

    monkeypatch.setattr(build, "build_report", boom)
    code, _, err = main(capsys, *ARGS, "--out", str(out))
    assert code == 130 and "the measurements are complete" in err
    assert json.loads((out / "facts.json").read_text())["status"] == "complete"
    assert not (out / "report.json").exists()
    monkeypatch.undo()
    code, _, err = main(capsys, "--resume", str(out))
    assert code == 0, err
    assert json.loads((out / "report.json").read_text())["status"] == "complete"


def test_killed_run_left_running_is_resumed(capsys, tmp_path):
    """kill -9: facts.json says running and the lock is stale; --resume takes both over."""
    out = tmp_path / "run"
    code, _, err = main(capsys, *ARGS, "--out", str(out))
    assert code == 0, err
    facts = json.loads((out / "facts.json").read_text())
    # make it look like a run killed after its first timed round: a checkpoint and a stale lock
    for e in facts["modes"].values():
        for key in ("samples",):
            e["step_time_s"][key] = e["step_time_s"][key][:1]
        e["phase_samples_s"] = {p: v[:1] for p, v in e["phase_samples_s"].items()}
        e["page_faults"]["timed"] = {p: v[:1] for p, v in e["page_faults"]["timed"].items()}
        e["trace_files"] = []
    facts["status"] = "running"
    facts["progress"] = {"phase": "timed", "at": "timed round 2 of 3", "signal": None,
                         "warmup_done": True, "accounting_done": True, "calibration_wanted": False,
                         "calibration_done": False, "timed_rounds_done": 1, "timed_rounds": 3,
                         "profiled_rounds_done": 0, "profiled_rounds": 2,
                         "args": trace._stored_args(trace.build_parser().parse_args(ARGS))}
    (out / "facts.json").write_text(json.dumps(facts))
    (out / "report.json").unlink()
    (out / ".lock").write_text('{"pid": 999999999, "host": "x", "started": "then"}')
    code, _, err = main(capsys, "--resume", str(out))
    assert code == 0, err
    assert "took over the stale lock" in err
    done = json.loads((out / "facts.json").read_text())
    assert done["status"] == "complete" and done["resumed"][0]["after"] == "stopped during timed round 2 of 3"
    for mode, e in done["modes"].items():
        assert e["step_time_s"]["samples"][:1] == facts["modes"][mode]["step_time_s"]["samples"]
        assert e["step_time_s"]["n"] == 3 and len(e["trace_files"]) == 2
    # the old trace files (not listed in the checkpoint) were removed, the new ones are listed
    on_disk = sorted(str(p.relative_to(out)) for p in (out / "tb").glob("*/*.pt.trace.json.gz"))
    assert on_disk == sorted(f for e in done["modes"].values() for f in e["trace_files"])


def test_resume_refuses_another_workload(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    interrupt_when(monkeypatch, "timed", nth=2)
    assert main(capsys, *ARGS, "--out", str(out))[0] == 143
    facts = json.loads((out / "facts.json").read_text())
    facts["workload"]["total_params"] += 1  # as if the model file had changed
    (out / "facts.json").write_text(json.dumps(facts))
    monkeypatch.undo()
    code, _, err = main(capsys, "--resume", str(out), "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot resume: the workload differ" in err and "total_params" in err
    assert not (out / ".lock").exists()
    code, _, err = main(capsys, "--resume", str(tmp_path / "nothing"))
    assert code == 2 and "no such folder" in err


def test_new_run_on_an_interrupted_folder_points_to_resume(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    interrupt_when(monkeypatch, "timed", nth=2)
    assert main(capsys, *ARGS, "--out", str(out))[0] == 143
    monkeypatch.undo()
    code, _, err = main(capsys, *ARGS, "--out", str(out))
    assert code == 2 and f"continue it with --resume {out}" in err


def test_incomplete_line_names_what_is_missing():
    facts = {"status": "interrupted",
             "progress": {"signal": "SIGINT", "at": "timed round 3 of 5", "accounting_done": True,
                          "calibration_wanted": True, "calibration_done": True, "timed_rounds_done": 2,
                          "timed_rounds": 5, "profiled_rounds_done": 1, "profiled_rounds": 5}}
    assert runstate.incomplete_line(facts, "runs/x") == (
        "run interrupted by SIGINT during timed round 3 of 5; missing: timed rounds 3–5 of 5 (every "
        "mode's steps in them), profiled rounds 2–5 of 5 (their traces); "
        "python -m lora_profiler.trace --resume runs/x finishes it")
    assert runstate.incomplete_line({"status": "complete"}) is None
    assert runstate.incomplete_line({}) is None  # facts written before statuses existed
