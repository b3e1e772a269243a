"""Scopes appear in a real profiler trace, named as docs/FORMAT.md says, and only while profiling."""

import torch
from torch import nn

from lora_profiler.capture.hooks import ModuleHooks
from lora_profiler.workload.adapters import find_adapters
from lora_profiler.workload.lora import inject_lora


def _model():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    inject_lora(model, ["0"], rank=2, alpha=4, dropout=0.1)
    return model


def test_scopes_recorded_under_profiler():
    model = _model()
    hooks = ModuleHooks(model, find_adapters(model))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(torch.randn(2, 8)).sum().backward()
    names = {e.name for e in prof.events()}
    for suffix in ("", "#base", "#dropout", "#lora_A", "#lora_B", "#scale_add"):
        assert f"lp/adapter/0{suffix}" in names
    assert "lp/module/1" in names and "lp/module/2" in names
    assert not any(n.startswith("lp/module/0") for n in names)  # adapter parts are not modules
    hooks.remove()


def test_no_scopes_without_profiler_and_stack_balanced():
    model = _model()
    hooks = ModuleHooks(model, find_adapters(model))
    model(torch.randn(2, 8))
    assert hooks._open == [] and hooks.stack == []
    hooks.remove()
    assert not model._forward_hooks and not model[2]._forward_pre_hooks
