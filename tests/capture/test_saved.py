"""Saved-activation accounting counts each storage once, by category, without parameters."""

import torch
from torch import nn

from lora_profiler.capture.hooks import ModuleHooks
from lora_profiler.capture.saved import measure_saved
from lora_profiler.workload.adapters import find_adapters
from lora_profiler.workload.lora import LoRALinear


class TwoAdapters(nn.Module):
    """Two adapted projections reading the same x (like q and v)."""

    def __init__(self, d=16, rank=2):
        super().__init__()
        self.q = LoRALinear(nn.Linear(d, d), rank, alpha=4)
        self.v = LoRALinear(nn.Linear(d, d), rank, alpha=4)

    def forward(self, x):
        return self.q(x) + self.v(x)


def _lora_mode(model):
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = find_adapters(model)
    for p in adapters.parameters():
        p.requires_grad_(True)
    return adapters


def test_adapter_path_saves_x_once_and_its_rank_outputs():
    torch.manual_seed(0)
    model = TwoAdapters()
    adapters = _lora_mode(model)
    hooks = ModuleHooks(model, adapters)
    x = torch.randn(4, 16)  # does not require grad, as a frozen embedding's output
    got = measure_saved(model, hooks, lambda: model(x).sum())
    x_bytes = x.numel() * 4
    a_out_bytes = 4 * 2 * 4  # (4 rows, rank 2) float32, saved by each lora_B
    # Frozen base layers save nothing for a grad-free x; each lora_A saves x (the same
    # storage, counted once), each lora_B saves lora_A's output.
    assert got["by_category"] == {"base": 0, "adapter": x_bytes + 2 * a_out_bytes, "other": 0}
    assert got["by_module"]["q.lora_A"] == x_bytes
    assert "v.lora_A" not in got["by_module"]
    hooks.remove()


def test_full_mode_base_saves_input_parameters_excluded():
    model = TwoAdapters()
    adapters = find_adapters(model)
    adapters.set_enabled(False)
    for p in model.parameters():
        p.requires_grad_(True)
    hooks = ModuleHooks(model, adapters)
    x = torch.randn(4, 16)
    got = measure_saved(model, hooks, lambda: model(x).sum())
    # Each base linear needs x for its weight gradient: one storage; weights are not counted.
    assert got["by_category"] == {"base": x.numel() * 4, "adapter": 0, "other": 0}
    assert got["tensors"] == 1
    hooks.remove()
