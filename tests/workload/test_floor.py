"""The dry forward and the frozen floor: the embeddings that run and read the batch, tied
embeddings, float inputs, the input-side note; errors name the module."""

import pytest
import torch
from torch import nn

from lora_profiler.workload.errors import WorkloadError
from lora_profiler.workload.floor import InputGrad, find_floor, input_side_note
from lora_profiler.workload.modes import switch_mode
from lora_profiler.workload.presets import get_preset
from lora_profiler.workload.probe import ProbeError, probe_forward
from lora_profiler.workload.spec import LoraOptions, build_preset_workload, build_workload


class EncoderDecoder(nn.Module):
    """T5's layout: ``shared`` is never called; both sides' embed_tokens share its weight; the
    decoder is fed ids the model makes from the labels; a position table is fed arange."""

    def __init__(self, vocab=16, d=8):
        super().__init__()
        self.shared = nn.Embedding(vocab, d)
        self.enc_embed = nn.Embedding(vocab, d)
        self.dec_embed = nn.Embedding(vocab, d)
        self.enc_embed.weight = self.dec_embed.weight = self.shared.weight
        self.positions = nn.Embedding(32, d)
        self.enc = nn.Linear(d, d)
        self.dec = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab)

    def forward(self, input_ids, labels):
        pos = self.positions(torch.arange(input_ids.shape[1]))
        memory = self.enc(self.enc_embed(input_ids) + pos).mean(1, keepdim=True)
        dec_in = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], dim=1)  # shifted
        return self.lm_head(self.dec(self.dec_embed(dec_in)) + memory)


def seq2seq_batch(b, t, device):
    return {"input_ids": torch.randint(0, 16, (b, t)), "labels": torch.randint(0, 16, (b, t // 2))}


def seq2seq_loss(model, batch):
    logits = model(batch["input_ids"], batch["labels"])
    return nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())


def test_encoder_decoder_floor_frozen_mode_runs():
    wl = build_workload(EncoderDecoder(), torch.device("cpu"), LoraOptions(targets=("enc", "dec")), 2, 8,
                        make_batch=seq2seq_batch, loss_fn=seq2seq_loss)
    assert wl.floor.kind == "embedding_outputs" and wl.floor.paths == ["enc_embed", "dec_embed"]
    assert "shared" not in wl.probe.order and wl.probe.embeddings_fed == {
        "positions": False, "enc_embed": True, "dec_embed": False}
    ig = InputGrad(wl.model, wl.floor)
    cfg = switch_mode(wl, "frozen", ig)
    loss = wl.loss_fn(wl.model, cfg.batch)
    assert loss.requires_grad  # the old floor (the first nn.Embedding, `shared`) never ran
    loss.backward()
    assert all(p.grad is None for p in wl.model.parameters())
    ig.remove()


class TwoInputs(nn.Module):
    """Tokens and a categorical feature, each with its own embedding, and a float feature."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(10, 8)
        self.cat = nn.Embedding(4, 8)
        self.num = nn.Linear(3, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens, cats, nums):
        return self.head(self.tok(tokens).mean(1) + self.cat(cats) + self.num(nums))


def test_multi_embedding_floor_and_float_inputs_floor():
    model = TwoInputs()
    batch = {"tokens": torch.randint(0, 10, (2, 5)), "cats": torch.randint(0, 4, (2,)),
             "nums": torch.randn(2, 3), "labels": torch.randint(0, 2, (2,))}

    def loss(m, b):
        return nn.functional.cross_entropy(m(b["tokens"], b["cats"], b["nums"]), b["labels"])

    probe = probe_forward(model, batch, loss)
    floor = find_floor(model, probe, batch)
    assert floor.paths == ["tok", "cat"]
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    batch = {"x": torch.randn(2, 3), "y": torch.randn(2, 1)}
    probe = probe_forward(mlp, batch, lambda m, b: nn.functional.mse_loss(m(b["x"]), b["y"]))
    floor = find_floor(mlp, probe, batch)
    assert floor.facts() == {"kind": "float_inputs", "modules": [], "inputs": ["batch['x']"]}  # not labels


def test_probe_error_names_the_module_and_keeps_rng():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(5, 2)))
    x = torch.randn(2, 4)
    state = torch.random.get_rng_state()
    with pytest.raises(ProbeError) as err:
        probe_forward(model, x, lambda m, b: m(b).sum())
    assert err.value.module == "1.1" and "RuntimeError" in str(err.value)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_loss_fn_error_is_one_line_naming_loss_batch_and_module():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 2))
    with pytest.raises(WorkloadError) as err:
        build_workload(model, torch.device("cpu"), LoraOptions(), 2, 4, name="net.py",
                       make_batch=lambda b, t, d: (torch.randn(b, 4), torch.zeros(b)),
                       loss_fn=lambda m, b: m(b[0]).sum())
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("net.py: loss_fn ")
    assert "tuple(float32[2, 4], float32[2])" in msg and "in module '1'" in msg


def test_top_layers_only_note():
    wl = build_preset_workload(get_preset("tiny"), torch.device("cpu"),
                               LoraOptions(targets=(r"model\.layers\.1\.self_attn\.(q|v)_proj",)))
    note = input_side_note(wl.model, wl.probe, wl.adapters.paths, wl.floor)
    assert note is not None and "model.layers.0.self_attn.q_proj" in note and note in wl.notes
    full = build_preset_workload(get_preset("tiny"), torch.device("cpu"), LoraOptions())
    assert input_side_note(full.model, full.probe, full.adapters.paths, full.floor) is None
    assert full.floor.paths == ["model.embed_tokens"]
