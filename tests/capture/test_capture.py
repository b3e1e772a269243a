"""Capture on a tiny preset: all modes timed, traces written, modes switched correctly."""

import json

import pytest
import torch

from lora_profiler.capture.run import CaptureOptions, ProfileSchedule, capture, time_stats
from lora_profiler.workload.modes import InputGrad, switch_mode
from lora_profiler.workload.presets import get_preset
from lora_profiler.workload.spec import LoraOptions, build_preset_workload


@pytest.fixture
def tiny():
    return build_preset_workload(get_preset("tiny"), torch.device("cpu"), LoraOptions(dropout=0.1))


def test_time_stats():
    s = time_stats([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (3.0, 1.0, 5.0, 5)
    assert s["iqr"] == pytest.approx(s["q3"] - s["q1"]) and s["iqr"] == pytest.approx(2.0)


def test_switch_mode_sets_trainable_and_adapters(tiny):
    ig = InputGrad(tiny.model)
    adapter_ids = {id(p) for p in tiny.adapters.parameters()}
    cfg = switch_mode(tiny, "lora", ig)
    assert {id(p) for p in cfg.trainable} == adapter_ids
    assert all(p.requires_grad == (id(p) in adapter_ids) for p in tiny.model.parameters())
    assert not any(part.layer.disabled for part in tiny.adapters.layers)
    cfg = switch_mode(tiny, "full", ig)
    assert not {id(p) for p in cfg.trainable} & adapter_ids
    assert all(part.layer.disabled for part in tiny.adapters.layers)
    cfg = switch_mode(tiny, "frozen", ig)
    assert cfg.trainable == [] and cfg.backward and ig.active
    loss = tiny.loss_fn(tiny.model, cfg.batch)
    assert loss.requires_grad  # backward runs through the network with every weight frozen
    loss.backward()
    assert all(p.grad is None for p in tiny.model.parameters())
    assert not switch_mode(tiny, "forward", ig).backward


def test_capture_all_modes(tiny, tmp_path):
    facts = capture(tiny, CaptureOptions(warmup_steps=1, steps=3, profile=ProfileSchedule(0, 1, 1)),
                    tmp_path, progress=False)
    assert json.loads((tmp_path / "facts.json").read_text()) == facts
    assert facts["adapters"]["source"] == "builtin" and facts["adapters"]["count"] == 8
    for mode in ("full", "lora", "frozen", "forward"):
        entry = facts["modes"][mode]
        assert entry["status"] == "ok", entry["error"]
        assert entry["step_time_s"]["n"] == 3 and len(entry["step_time_s"]["samples"]) == 3
        phases = entry["phase_time_s"]
        assert phases["forward"] > 0
        assert (phases["backward"] > 0) == (mode != "forward")
        assert (phases["optimizer"] > 0) == (mode in ("full", "lora"))
        [trace] = entry["trace_files"]
        assert (tmp_path / trace).is_file() and trace.startswith(f"tb/{mode}/")
    total = facts["workload"]["total_params"]
    assert facts["modes"]["full"]["trainable_params"] + facts["adapters"]["trainable_params"] == total
    assert facts["modes"]["lora"]["trainable_params"] == facts["adapters"]["trainable_params"]
    mem = facts["modes"]["full"]["memory"]
    # AdamW keeps two moments per trainable parameter (plus a step counter each).
    assert mem["optimizer_state_bytes"] >= 2 * mem["grad_bytes"]
    saved = {m: facts["modes"][m]["saved_activations"] for m in ("full", "lora", "frozen")}
    assert saved["lora"]["by_category"]["adapter"] > 0 and saved["frozen"]["by_category"]["adapter"] == 0
    assert saved["full"]["by_category"]["base"] > 0


def test_failing_mode_is_recorded_and_others_run(tiny, tmp_path):
    normal = tiny.loss_fn

    def nan_when_adapters_on(model, batch):
        loss = normal(model, batch)
        on = not tiny.adapters.layers[0].layer.disabled
        return loss * float("nan") if on else loss

    tiny.loss_fn = nan_when_adapters_on
    facts = capture(tiny, CaptureOptions(modes=("full", "lora", "frozen"), warmup_steps=1, steps=2,
                                         profile=None), tmp_path, progress=False)
    assert facts["modes"]["lora"]["status"] == "failed"
    assert "not finite" in facts["modes"]["lora"]["error"]
    assert facts["modes"]["full"]["status"] == facts["modes"]["frozen"]["status"] == "ok"
    assert facts["modes"]["full"]["step_time_s"]["n"] == 2


def test_profiled_runs_interleave_modes(tiny, tmp_path):
    facts = capture(tiny, CaptureOptions(modes=("lora", "frozen"), warmup_steps=0, steps=1,
                                         profile=ProfileSchedule(0, 1, 2)), tmp_path, progress=False)
    files = {m: facts["modes"][m]["trace_files"] for m in ("lora", "frozen")}
    assert [len(f) for f in files.values()] == [2, 2]
    # one session per mode and round, the order rotated each round: lora, frozen | frozen, lora
    stamp = {f: int(f.split("/")[-1].split(".")[1]) for fs in files.values() for f in fs}  # <worker>.<ns>.pt.trace.json.gz
    order = [f.split("/")[-1].split(".")[0] for f in sorted(stamp, key=stamp.get)]
    assert order == ["lora", "frozen", "frozen", "lora"]  # one worker per mode, a span per round
    # every round's recorded step has its own ProfilerStep number: the analysis sees 2 steps
    from lora_profiler.events import load_trace

    trace = load_trace([str(tmp_path / f) for f in files["lora"]])
    assert len(trace.steps) == 2 and len(set(trace.steps.number.tolist())) == 2


def test_timed_steps_run_without_hooks_or_profiler(tiny, tmp_path, monkeypatch):
    from lora_profiler.capture import run as run_mod

    seen = []
    step = run_mod.StepRunner.step

    def spy(self):
        layer = tiny.adapters.layers[0].layer
        seen.append((torch.autograd._profiler_enabled(), len(layer._forward_pre_hooks)))
        return step(self)

    monkeypatch.setattr(run_mod.StepRunner, "step", spy)
    capture(tiny, CaptureOptions(modes=("lora", "frozen"), warmup_steps=1, steps=2,
                                 profile=ProfileSchedule(0, 1, 1), calibrate=False), tmp_path, progress=False)
    timed = seen[:2 * 3]  # warm-up and timed rounds of both modes come first
    assert timed and all(s == (False, 0) for s in timed)
    profiled = [s for s in seen if s[0]]
    assert profiled and all(n > 0 for _, n in profiled)  # the scopes' hooks while profiled
    assert not tiny.adapters.layers[0].layer._forward_pre_hooks  # and removed after


def test_variants_are_timed_and_undone(tiny, tmp_path):
    originals = [(p.dropout, p.lora_A, p.lora_B) for p in tiny.adapters.layers]
    variants = ("no-dropout", "fold-scale", "upper-half", "rank-x4")
    facts = capture(tiny, CaptureOptions(modes=("lora", "frozen"), warmup_steps=1, steps=3,
                                         profile=ProfileSchedule(0, 1, 1), variants=variants, calibrate=False),
                    tmp_path, progress=False)
    for v in variants:
        entry = facts["modes"][v]
        assert entry["status"] == "ok" and entry["variant_of"] == "lora" and entry["step_time_s"]["n"] == 3
        assert "trace_files" not in entry  # timed, not profiled
    assert facts["modes"]["rank-x4"]["trainable_params"] == 4 * facts["modes"]["lora"]["trainable_params"]
    assert facts["modes"]["upper-half"]["variant"]["removed_layers"] == [
        p for p in tiny.adapters.paths if ".layers.0." in p]
    # the model is back as it was, and the profiled lora step saw every part's scope
    for part, (d, a, b) in zip(tiny.adapters.layers, originals):
        layer = part.layer
        assert (layer.lora_dropout, layer.lora_A, layer.lora_B) == (d, a, b) and not layer.fold_scale
    from lora_profiler.events import load_trace

    trace = load_trace([str(tmp_path / f) for f in facts["modes"]["lora"]["trace_files"]])
    scopes = {trace.names[i] for i in trace.scopes.name}
    for path in tiny.adapters.paths:
        assert {f"lp/adapter/{path}#{p}" for p in ("base", "dropout", "lora_A", "lora_B")} <= scopes
