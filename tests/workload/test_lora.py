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


class TiedLM(nn.Module):
    """An output projection tied to the token embedding, named neither lm_head nor anything known."""

    def __init__(self, vocab=20, d=8):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.to_vocab = nn.Linear(d, vocab, bias=False)
        self.to_vocab.weight = self.tok.weight

    def forward(self, ids):
        return self.to_vocab(self.mix(self.tok(ids)))


class Untied(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(20, 8)
        self.lm_head = nn.Linear(8, 8)  # named lm_head, but not the output layer
        self.decode = nn.Linear(8, 20)

    def forward(self, ids):
        return torch.sigmoid(self.decode(self.lm_head(self.tok(ids))))  # the output is not a linear's


def test_all_linear_excludes_the_output_layer_by_what_it_is():
    from lora_profiler.workload.probe import probe_forward

    ids = torch.randint(0, 20, (2, 5))
    model = TiedLM()
    assert resolve_targets(model, ["all-linear"])[1] == ["mix"]  # tied to the input embedding
    model = Untied()
    assert resolve_targets(model, ["all-linear"])[1] == ["lm_head"]  # last vocabulary-sized linear
    probe = probe_forward(model, ids, lambda m, b: m(b).sum())
    assert resolve_targets(model, ["all-linear"], probe)[1] == ["lm_head"]
    head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3), nn.Linear(3, 3))
    probe = probe_forward(head, torch.randn(2, 4), lambda m, b: m(b).sum())
    assert probe.output_modules == ("3",)
    assert resolve_targets(head, ["all-linear"], probe)[1] == ["0", "2"]


class WithMHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.unused = nn.Linear(8, 8)
        self.ff = nn.Linear(8, 8)

    def forward(self, x):
        return self.ff(self.attn(x, x, x, need_weights=False)[0])


def test_modules_the_step_never_calls_are_skipped_with_a_note():
    from lora_profiler.workload.lora import runnable_targets
    from lora_profiler.workload.probe import probe_forward

    model = WithMHA()
    names = resolve_targets(model, ["all-linear"])[1]
    assert "attn.out_proj" in names
    kept, notes = runnable_targets(model, names)  # without a dry forward: MHA's out_proj by type
    assert "attn.out_proj" not in kept
    probe = probe_forward(model, torch.randn(2, 3, 8), lambda m, b: m(b).sum())
    kept, notes = runnable_targets(model, ["attn.out_proj", "unused", "ff"], probe)
    assert kept == ["ff"]
    assert "attn.out_proj" in notes[0] and "reads its out_proj.weight directly" in notes[0]
    assert "unused" in notes[1] and "never called as a module" in notes[1]
    inject_lora(model, kept, rank=2, alpha=4, dropout=0.0)
    model(torch.randn(2, 3, 8)).sum().backward()  # the parent still works


def test_inject_error_names_the_module():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(WorkloadError, match=r"cannot adapt module '1' \(ReLU\)"):
        inject_lora(model, ["1"], rank=2, alpha=4, dropout=0.0)
