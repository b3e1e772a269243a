"""Real models as users fine-tune them: Hugging Face models built from configs (nothing
downloaded) wrapped by real PEFT configs, and plain torch models. Every mode must run, and the
lora mode must train exactly what PEFT's own ``get_nb_trainable_parameters()`` counts."""

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from lora_profiler.capture.run import CaptureOptions, capture
from lora_profiler.workload.errors import WorkloadError
from lora_profiler.workload.modes import MODES, full_parameters
from lora_profiler.workload.spec import LoraOptions, build_file_workload, build_workload, next_token_loss

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


def run_modes(workload, tmp_path) -> dict:
    """Capture every mode (no profiler) and check each one ran."""
    facts = capture(workload, CaptureOptions(modes=MODES, warmup_steps=1, steps=2, profile=None),
                    tmp_path, progress=False)
    for mode, entry in facts["modes"].items():
        assert entry["status"] == "ok", f"{mode}: {entry['error']}"
    return facts


def build(model, **kw):
    kw.setdefault("batch_size", 2)
    kw.setdefault("seq_len", 8)
    return build_workload(model, CPU, kw.pop("lora", LoraOptions()), **kw)


def tiny_llama(**kw):
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    cfg.update(kw)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))


def peft_model(base, **lora):
    model = peft.get_peft_model(base, peft.LoraConfig(**lora))
    return model, model.get_nb_trainable_parameters()[0]  # PEFT's count, as built


def test_gpt2_conv1d(tmp_path):
    base = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0))
    model, expected = peft_model(base, r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"],
                                 fan_in_fan_out=True)
    wl = build(model)
    facts = run_modes(wl, tmp_path)
    assert facts["modes"]["lora"]["trainable_params"] == expected == facts["adapters"]["trainable_params"]
    assert facts["adapters"]["base_types"] == {"Conv1D": 6}  # 2 blocks x attn.c_attn, attn.c_proj, mlp.c_proj
    # the floor: the token embedding reads the batch; the position embedding does not
    assert [p.rsplit(".", 1)[-1] for p in facts["workload"]["floor"]["modules"]] == ["wte"]


def test_bert_classifier_modules_to_save_and_lora_only_bias(tmp_path):
    base = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=3))
    model, expected = peft_model(base, r=4, lora_alpha=8, target_modules=["query", "value"],
                                 bias="lora_only", modules_to_save=["classifier"])
    wl = build(model)  # the default batch: labels are one class per sequence
    assert wl.batch["labels"].shape == (2,)
    facts = run_modes(wl, tmp_path)
    ad = facts["adapters"]
    assert facts["modes"]["lora"]["trainable_params"] == expected
    extra = ad["extra_trainable"]
    copy = next(k for k in extra if k.endswith("classifier.modules_to_save.default"))
    assert extra[copy] == 32 * 3 + 3
    assert sum(1 for k in extra if k.endswith("base_layer")) == 4  # 2 layers x query, value biases
    assert ad["trainable_params"] == ad["adapter_params"] + sum(extra.values())
    # full: every weight that runs; the original classifier PEFT keeps beside its copy never runs
    original = {id(p) for p in model.base_model.model.classifier.original_module.parameters()}
    full = full_parameters(wl)
    assert not original & {id(p) for p in full}
    assert ad["inactive_params"] == 32 * 3 + 3
    total = facts["workload"]["total_params"]
    assert facts["modes"]["full"]["trainable_params"] == total - ad["adapter_params"] - ad["inactive_params"]


def test_t5_encoder_decoder_floor_and_labels(tmp_path):
    base = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2, dropout_rate=0.0,
        decoder_start_token_id=0))
    model, expected = peft_model(base, r=4, lora_alpha=8, target_modules=["q", "v"])

    def make_batch(batch_size, seq_len, device):
        return {"input_ids": torch.randint(2, 64, (batch_size, seq_len)),
                "labels": torch.randint(2, 64, (batch_size, seq_len // 2))}  # decoder: half length

    wl = build(model, make_batch=make_batch)
    facts = run_modes(wl, tmp_path)
    assert facts["modes"]["lora"]["trainable_params"] == expected
    floor = facts["workload"]["floor"]
    assert floor["kind"] == "embedding_outputs"
    assert [p.rsplit(".", 2)[-2] for p in floor["modules"]] == ["encoder", "decoder"]  # not `shared`
    # the default loss is T5's own loss on the batch's labels (decoder length 4, not 8)
    model.eval()
    with torch.no_grad():
        wl.adapters.set_enabled(False)
        torch.testing.assert_close(next_token_loss(model, wl.batch), model(**wl.batch).loss)
        assert model(**wl.batch).logits.shape[1] == 4


def test_llama_dora_trains_magnitudes(tmp_path):
    model, expected = peft_model(tiny_llama(), r=4, lora_alpha=8, use_dora=True,
                                 target_modules=["q_proj", "v_proj"])
    wl = build(model)
    facts = run_modes(wl, tmp_path)
    assert facts["modes"]["lora"]["trainable_params"] == expected
    assert facts["adapters"]["kinds"] == {"dora": 4}
    mags = {id(p) for part in wl.adapters.layers for p in part.magnitude.parameters()}
    assert len(mags) == 4 and mags <= {id(p) for p in wl.adapters.trainable_parameters()}
    assert facts["adapters"]["extra_trainable"] == {}


def test_rank_and_alpha_patterns_recorded_per_layer(tmp_path):
    model, expected = peft_model(
        tiny_llama(), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
        rank_pattern={"layers.0.self_attn.q_proj": 8, "layers.1.self_attn.v_proj": 16},
        alpha_pattern={"layers.1.self_attn.v_proj": 4})
    wl = build(model)
    facts = run_modes(wl, tmp_path)
    ad = facts["adapters"]
    assert facts["modes"]["lora"]["trainable_params"] == expected
    shapes = {p.path: p.lora_A.weight.shape[0] for p in wl.adapters.layers}  # (r, in) per layer
    assert {e["path"]: e["rank"] for e in ad["layers"]} == shapes
    assert ad["rank"] is None  # the layers differ: no single rank
    assert ad["rank_summary"]["counts"] == {f"{r}": n for r, n in sorted(Counter(shapes.values()).items())}
    for e in ad["layers"]:
        assert e["scaling"] == pytest.approx(e["alpha"] / e["rank"])
    assert [e["alpha"] for e in ad["layers"] if e["path"].endswith("layers.1.self_attn.v_proj")] == [4.0]


def test_rslora_scaling(tmp_path):
    model, expected = peft_model(tiny_llama(), r=4, lora_alpha=8, use_rslora=True,
                                 target_modules=["q_proj", "v_proj"])
    wl = build(model)
    facts = run_modes(wl, tmp_path)
    assert facts["modes"]["lora"]["trainable_params"] == expected
    assert facts["adapters"]["config"]["use_rslora"] is True
    assert all(e["scaling"] == pytest.approx(8 / math.sqrt(4)) for e in facts["adapters"]["layers"])


def test_lora_on_embedding(tmp_path):
    model, expected = peft_model(tiny_llama(), r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"])
    wl = build(model)
    facts = run_modes(wl, tmp_path)
    assert facts["modes"]["lora"]["trainable_params"] == expected
    assert facts["adapters"]["base_types"] == {"Embedding": 1, "Linear": 2}
    emb = next(p for p in wl.adapters.layers if p.base_type == "Embedding")
    assert sum(p.numel() for p in emb.parameters()) == 4 * 64 + 32 * 4  # A (r, vocab), B (hidden, r)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 16)
        self.out = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.out(torch.relu(self.fc(x.mean(dim=(2, 3)))))


def image_batch(batch_size, seq_len, device):
    return {"x": torch.randn(batch_size, 3, 8, 8), "labels": torch.randint(0, 5, (batch_size,))}


def image_loss(model, batch):
    return nn.functional.cross_entropy(model(batch["x"]).float(), batch["labels"])


def test_peft_lora_on_conv_of_a_plain_torch_model(tmp_path):
    model, expected = peft_model(SmallCNN(), r=2, lora_alpha=4, target_modules=["conv2", "fc"])
    wl = build(model, make_batch=image_batch, loss_fn=image_loss)
    facts = run_modes(wl, tmp_path)
    assert facts["modes"]["lora"]["trainable_params"] == expected
    assert facts["adapters"]["base_types"] == {"Conv2d": 1, "Linear": 1}
    assert facts["workload"]["batch"]["kind"] == "images"
    assert facts["workload"]["floor"] == {"kind": "float_inputs", "modules": [], "inputs": ["batch['x']"]}
    assert any("input side" in n and "conv1" in n for n in facts["workload"]["notes"])


def test_ia3_is_unsupported_but_runs(tmp_path):
    model = peft.get_peft_model(tiny_llama(), peft.IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    expected = model.get_nb_trainable_parameters()[0]
    wl = build(model, lora=LoraOptions(rank=4, targets=("q_proj",)))
    facts = run_modes(wl, tmp_path)
    ad = facts["adapters"]
    assert ad["source"] == "peft" and ad["unsupported"] == ["ia3"] and ad["count"] == 0
    assert facts["modes"]["lora"]["trainable_params"] == expected
    notes = " ".join(facts["workload"]["notes"])
    assert "ia3" in notes and "rank, targets not applied" in notes
    from lora_profiler.workload.modes import InputGrad, switch_mode

    switch_mode(wl, "full", InputGrad(wl.model, wl.floor))
    assert all(layer.disable_adapters for layer in wl.adapters.other_layers)


def test_prompt_tuning_is_unsupported_but_runs(tmp_path):
    model = peft.get_peft_model(tiny_llama(), peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                                      num_virtual_tokens=4))
    expected = model.get_nb_trainable_parameters()[0]
    wl = build(model)
    facts = run_modes(wl, tmp_path)
    assert facts["adapters"]["unsupported"] == ["prompt_tuning"]
    assert facts["modes"]["lora"]["trainable_params"] == expected


class ConvAttention(nn.Module):
    """A CNN whose feature map goes through nn.MultiheadAttention, then an MLP and a head."""

    def __init__(self, width=16):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.head = nn.Linear(width, 5)

    def forward(self, x):
        x = self.conv(x).flatten(2).transpose(1, 2)  # (B, HW/4, C)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.head((x + self.mlp(x)).mean(dim=1))


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_cnn_with_multihead_attention_all_linear(tmp_path, dtype):
    wl = build(ConvAttention(), lora=LoraOptions(rank=2, targets=("all-linear",)), dtype=dtype,
               make_batch=image_batch, loss_fn=image_loss)
    assert wl.adapters.paths == ["mlp.0", "mlp.2"]  # not attn.out_proj (MHA reads its weight), not head
    notes = " ".join(wl.notes)
    assert "attn.out_proj" in notes and "reads its out_proj.weight directly" in notes
    assert wl.batch["x"].dtype == (dtype or torch.float32) and wl.batch["labels"].dtype == torch.int64
    facts = run_modes(wl, tmp_path)
    assert facts["workload"]["dtype"] == str(dtype or torch.float32).replace("torch.", "")
    assert facts["workload"]["batch"]["description"] == "batch 2 x 3x8x8 images"
    assert facts["modes"]["lora"]["trainable_params"] == sum(p.numel() for p in wl.adapters.parameters())


def test_loss_fn_for_another_batch_is_one_line():
    def loss_fn(model, batch):
        images, labels = batch  # written for a tuple batch
        return nn.functional.cross_entropy(model(images), labels)

    with pytest.raises(WorkloadError) as err:
        build(SmallCNN(), make_batch=image_batch, loss_fn=loss_fn, name="cnn")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cnn: loss_fn ")
    assert "dict(x: float32[2, 3, 8, 8], labels: int64[2])" in msg


EXAMPLES = ["bert_classifier_peft.py", "t5_peft.py", "llama_dora.py", "cnn_mha.py"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_build_and_run(tmp_path, name):
    wl = build_file_workload(REPO / "examples" / name, CPU, LoraOptions(), batch_size=2, seq_len=16)
    facts = capture(wl, CaptureOptions(modes=MODES, warmup_steps=0, steps=1, profile=None), tmp_path,
                    progress=False)
    assert all(e["status"] == "ok" for e in facts["modes"].values()), facts["modes"]
    ad = facts["adapters"]
    if ad["source"] == "peft":
        counted = sum(p.numel() for p in wl.adapters.trainable_parameters())
        assert facts["modes"]["lora"]["trainable_params"] == counted == ad["trainable_params"]


def test_dora_norm_is_a_cause_of_its_own(tmp_path):
    """DoRA's weight norm runs in PEFT's DoRA module: its ops get the ``dora`` role (not 'other
    adapter ops' or dispatch) and the attribution reports it; plain LoRA has none."""
    import numpy as np

    from lora_profiler.analyses.lora_roles import ROLES, assign_roles
    from lora_profiler.capture.run import ProfileSchedule
    from lora_profiler.report.build import build_report
    from lora_profiler.run_folder import load_mode_traces

    model, _ = peft_model(tiny_llama(), r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"])
    wl = build(model)
    out = tmp_path / "run"
    facts = capture(wl, CaptureOptions(modes=("lora", "frozen"), warmup_steps=1, steps=2, block=1,
                                       profile=ProfileSchedule(wait=0, warmup=1, active=1), calibrate=False),
                    out, progress=False)
    trace = load_mode_traces(out, facts, modes=["lora"])["lora"]
    roles = assign_roles(trace)
    names = np.array(trace.names, dtype=object)[trace.ops.name]
    norm = np.isin(names, ["aten::linalg_vector_norm", "aten::norm", "aten::frobenius_norm"])
    fwd = roles.op_phase == 0
    assert (norm & fwd).sum() >= 4  # one weight norm per DoRA layer and step
    assert set(roles.op_role[norm & fwd]) == {ROLES.index("dora")}
    report = build_report(out, figures=False)
    assert report["attribution"]["causes"]["dora"]["seconds"] > 0
    assert report["attribution"]["causes"]["adapter_other"]["seconds"] < report["attribution"]["causes"]["dora"]["seconds"]
