import math

import pytest
import torch
from torch import nn

from lora_profiler.workload.adapters import find_adapters
from lora_profiler.workload.errors import WorkloadError
from lora_profiler.workload.lora import LoRALinear, inject_lora, resolve_targets


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(16, 16)
        self.v_proj = nn.Linear(16, 16)
        self.mlp = nn.Linear(16, 32)
        self.lm_head = nn.Linear(32, 10)

    def forward(self, x):
        return self.lm_head(self.mlp(self.q_proj(x) + self.v_proj(x)))


def test_lora_matches_peft_math_and_init():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    layer = LoRALinear(base, rank=4, alpha=8.0, dropout=0.0)
    x = torch.randn(3, 16)
    # B starts at zero: the adapted layer computes exactly the base layer.
    assert torch.equal(layer(x), base(x))
    assert layer.lora_A.weight.shape == (4, 16) and layer.lora_B.weight.shape == (12, 4)
    bound = 1 / math.sqrt(16)  # kaiming_uniform(a=sqrt(5)) bound for fan_in 16
    assert layer.lora_A.weight.abs().max() <= bound
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    expected = base(x) + (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * (8.0 / 4)
    torch.testing.assert_close(layer(x), expected)
    layer.disabled = True
    assert torch.equal(layer(x), base(x))


def test_default_targets_pick_attention_projections():
    model = Block()
    used, names = resolve_targets(model, None)
    assert names == ["q_proj", "v_proj"]
    assert "q_proj" in used


def test_all_linear_skips_lm_head_and_regex_works():
    model = Block()
    assert resolve_targets(model, ["all-linear"])[1] == ["q_proj", "v_proj", "mlp"]
    assert resolve_targets(model, [r"(q|v)_proj"])[1] == ["q_proj", "v_proj"]


def test_no_match_names_the_layers():
    with pytest.raises(WorkloadError, match="no linear layer matches LoRA targets.*q_proj"):
        resolve_targets(Block(), ["nothing_here"])
    with pytest.raises(WorkloadError, match="no nn.Linear"):
        resolve_targets(nn.Sequential(nn.ReLU()), None)
    with pytest.raises(WorkloadError, match="regular expression"):
        resolve_targets(Block(), ["(unclosed"])


def test_inject_then_find_builtin():
    model = Block()
    inject_lora(model, ["q_proj", "v_proj"], rank=2, alpha=4, dropout=0.1)
    found = find_adapters(model)
    assert found.source == "builtin" and found.paths == ["q_proj", "v_proj"]
    assert found.rank == 2 and found.alpha == 4 and found.dropout == pytest.approx(0.1)
    assert sum(p.numel() for p in found.parameters()) == 2 * (16 * 2 + 2 * 16)
