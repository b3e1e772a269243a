"""Adapters are found by protocol: PEFT's layers, torchtune-style layers, our own."""

import pytest
import torch
from torch import nn

from lora_profiler.workload.adapters import find_adapters


class TorchtuneStyleLoRA(nn.Module):
    """Follows torchtune's LoRALinear protocol: weight on the layer, lora_a/lora_b, `disabled`."""

    def __init__(self, d_in, d_out, rank):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in))
        self.lora_a = nn.Linear(d_in, rank, bias=False)
        self.lora_b = nn.Linear(rank, d_out, bias=False)
        self.dropout = nn.Dropout(0.0)
        self.disabled = False

    def forward(self, x):
        out = nn.functional.linear(x, self.weight)
        if self.disabled:
            return out
        return out + 2.0 * self.lora_b(self.lora_a(self.dropout(x)))


def test_torchtune_protocol_found_and_toggled():
    model = nn.Sequential(TorchtuneStyleLoRA(8, 8, 2), nn.ReLU(), TorchtuneStyleLoRA(8, 4, 2))
    found = find_adapters(model)
    assert found.source == "torchtune" and found.paths == ["0", "2"] and found.rank == 2
    assert all(p.base is None for p in found.layers)
    found.set_enabled(False)
    assert model[0].disabled and model[2].disabled
    found.set_enabled(True)
    assert not model[0].disabled


def test_peft_adapters_found_not_injected():
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    model = peft.get_peft_model(transformers.LlamaForCausalLM(cfg),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    found = find_adapters(model)
    assert found.source == "peft" and found.rank == 4 and found.alpha == 8
    assert len(found.layers) == 2 and all(p.path.endswith(("q_proj", "v_proj")) for p in found.layers)
    n = sum(p.numel() for p in found.parameters())
    assert n == sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    ids = torch.randint(0, 64, (1, 5))
    layer = found.layers[0].layer
    with torch.no_grad():
        found.layers[0].lora_B.weight.fill_(1.0)
        on = model(input_ids=ids).logits
        found.set_enabled(False)
        assert layer.disable_adapters
        off = model(input_ids=ids).logits
    assert not torch.allclose(on, off)


def test_mixed_adapter_kinds_rejected():
    from lora_profiler.workload.lora import LoRALinear

    model = nn.Sequential(TorchtuneStyleLoRA(8, 8, 2), LoRALinear(nn.Linear(8, 8), 2, 4))
    with pytest.raises(ValueError, match="mixes adapter kinds"):
        find_adapters(model)


class TorchtuneStyleDoRA(TorchtuneStyleLoRA):
    """torchtune's DoRALinear protocol: a magnitude parameter and adapter_params()."""

    def __init__(self, d_in, d_out, rank):
        super().__init__(d_in, d_out, rank)
        self.rank, self.alpha = rank, 4.0
        self.magnitude = nn.Parameter(torch.ones(d_out))

    def adapter_params(self):
        return ["lora_a.weight", "lora_b.weight", "magnitude"]


def test_torchtune_dora_trainable_set_follows_adapter_params():
    model = nn.Sequential(TorchtuneStyleDoRA(8, 8, 2), nn.ReLU(), TorchtuneStyleDoRA(8, 4, 2))
    found = find_adapters(model)
    assert [p.kind for p in found.layers] == ["dora", "dora"]
    assert found.rank == 2 and found.layers[0].scaling == 2.0
    expected = sum(2 * 8 + d * 2 + d for d in (8, 4))  # A, B, magnitude
    assert sum(p.numel() for p in found.trainable_parameters()) == expected
    assert not any(p is model[0].weight for p in found.trainable_parameters())
    assert found.facts()["kinds"] == {"dora": 2}


def test_lora_options_chosen():
    from lora_profiler.workload.spec import LoraOptions

    assert LoraOptions().chosen() == []
    assert LoraOptions(rank=16, targets=("q",)).chosen() == ["rank", "targets"]
    assert LoraOptions(given=frozenset({"rank"})).chosen() == ["rank"]


def test_peft_model_given_lora_flags_gets_a_note():
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from lora_profiler.workload.spec import LoraOptions, build_workload

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    model = peft.get_peft_model(transformers.LlamaForCausalLM(cfg),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    wl = build_workload(model, torch.device("cpu"), LoraOptions(rank=16, targets=("all-linear",)), 2, 4)
    assert "rank, targets not applied: the model has its own peft adapters" in " ".join(wl.notes)
    assert wl.adapters.rank == 4 and len(wl.adapters.layers) == 1
