"""StepRunner with gradient accumulation: one zero_grad and optimizer step around several
micro-batches, each with its own forward and backward phase scope."""

import torch

from lora_profiler.capture.step import StepRunner
from lora_profiler.workload.modes import InputGrad, switch_mode
from lora_profiler.workload.presets import get_preset
from lora_profiler.workload.spec import LoraOptions, build_preset_workload


def _grads(params):
    return [p.grad.clone() for p in params]


def test_micro_batches_accumulate_like_one_loop():
    wl = build_preset_workload(get_preset("tiny"), torch.device("cpu"), LoraOptions(dropout=0.0))
    cfg = switch_mode(wl, "lora", InputGrad(wl.model, wl.floor))
    half = {k: v[:1] for k, v in wl.batch.items()}
    other = {k: v[1:] for k, v in wl.batch.items()}
    runner = StepRunner(wl, cfg)
    runner.optimizer = None  # keep the gradients to compare them
    loss, times = runner.step(batches=[half, other])
    got = _grads(cfg.trainable)
    for p in cfg.trainable:
        p.grad = None
    want_loss = 0.0
    for b in (half, other):  # the same accumulation by hand
        value = wl.loss_fn(wl.model, b)
        value.backward()
        want_loss += float(value)
    assert all(torch.allclose(a, b) for a, b in zip(got, _grads(cfg.trainable)))
    assert abs(loss - want_loss) < 1e-5
    assert times["forward"] > 0 and times["backward"] > 0 and times["optimizer"] == 0.0
    assert set(runner.last_faults) == {"zero_grad", "forward", "backward", "optimizer"}


def test_micro_batches_open_one_phase_scope_each(tmp_path):
    wl = build_preset_workload(get_preset("tiny"), torch.device("cpu"), LoraOptions())
    cfg = switch_mode(wl, "lora", InputGrad(wl.model, wl.floor))
    runner = StepRunner(wl, cfg)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        runner.step(batches=[wl.batch, wl.batch, wl.batch])
    names = [e.name for e in prof.events()]
    assert names.count("lp/phase/forward") == 3 and names.count("lp/phase/backward") == 3
    assert names.count("lp/phase/optimizer") == 1 and names.count("lp/phase/zero_grad") == 1
