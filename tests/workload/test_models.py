"""Built-in models and presets: shapes, determinism, causality, names, sizes, validation."""

import pytest
import torch
import torch.nn.functional as F

from lora_profiler.workload.models import (
    GPT2Model,
    LlamaModel,
    ModelConfig,
    build_model,
    count_params,
    estimate_params,
    example_batch,
)
from lora_profiler.workload.presets import (
    PRESETS,
    UnknownPresetError,
    get_preset,
    with_overrides,
)

GPT2_SMALL_PUBLISHED = 124_439_808  # GPT-2 small with tied embeddings (Radford et al. / HF "gpt2")

TINY = {"tiny": "llama", "tiny-gpt2": "gpt2"}


@pytest.fixture(params=sorted(TINY))
def tiny(request):
    preset = get_preset(request.param)
    return preset, build_model(preset.config, seed=0)


def test_tiny_presets_have_the_named_arch():
    for name, arch in TINY.items():
        assert get_preset(name).config.arch == arch
    assert isinstance(build_model(get_preset("tiny").config), LlamaModel)
    assert isinstance(build_model(get_preset("tiny-gpt2").config), GPT2Model)


def test_logits_shape_and_config(tiny):
    preset, model = tiny
    x, _ = example_batch(preset.config, preset.batch_size, preset.seq_len)
    logits = model(x)
    assert logits.shape == (preset.batch_size, preset.seq_len, model.config.vocab_size)
    assert model.config is preset.config


def test_same_seed_same_weights_and_global_rng_untouched():
    config = get_preset("tiny").config
    state = torch.random.get_rng_state()
    a, b = build_model(config, seed=3), build_model(config, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    c = build_model(config, seed=4)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    torch.manual_seed(7)
    d = build_model(config)
    torch.manual_seed(7)
    assert torch.equal(d.lm_head.weight, build_model(config).lm_head.weight)


def test_causal_a_future_token_does_not_change_earlier_logits(tiny):
    preset, model = tiny
    x, _ = example_batch(preset.config, 1, 12)
    t = 7
    y = x.clone()
    y[0, t] = (x[0, t] + 1) % preset.config.vocab_size
    with torch.no_grad():
        lx, ly = model(x), model(y)
    torch.testing.assert_close(lx[:, :t], ly[:, :t])
    assert not torch.allclose(lx[:, t:], ly[:, t:])


def test_backward_reaches_every_parameter_and_the_loss_falls(tiny):
    preset, model = tiny
    x, y = example_batch(preset.config, preset.batch_size, preset.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        if not losses:
            for name, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_tiny_presets_stay_tiny():
    # A step of these takes a few ms on a 2-core CPU; a size guard, not a flaky wall-clock one.
    for name in TINY:
        preset = get_preset(name)
        assert preset.n_params < 200_000 and preset.tokens_per_step <= 64


def test_gpt2_module_names_and_tied_head():
    config = get_preset("tiny-gpt2").config
    model = build_model(config)
    names = dict(model.named_modules())
    for i in range(config.n_layer):
        for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            assert f"transformer.h.{i}.{part}" in names
    for name in ("transformer.wte", "transformer.wpe", "transformer.ln_f", "lm_head"):
        assert name in names
    assert isinstance(names["transformer.h.0.attn.c_attn"], torch.nn.Linear)
    assert names["transformer.h.0.attn.c_attn"].out_features == 3 * config.n_embd
    assert model.lm_head.weight is model.transformer.wte.weight
    assert GPT2Model.default_lora_targets == ("c_attn",)


def test_llama_module_names_and_gqa_shapes():
    config = ModelConfig(arch="llama", vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                         max_seq_len=16)
    model = build_model(config, seed=0)
    names = dict(model.named_modules())
    parts = ["input_layernorm", "post_attention_layernorm"]
    parts += [f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    parts += [f"mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    for i in range(config.n_layer):
        for part in parts:
            assert f"model.layers.{i}.{part}" in names
    for name in ("model.embed_tokens", "model.norm", "lm_head"):
        assert name in names
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.out_features == 32 and attn.k_proj.out_features == 16
    assert all(names[f"model.layers.0.{p}"].bias is None for p in parts[2:])
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert LlamaModel.default_lora_targets == ("q_proj", "v_proj")
    x, _ = example_batch(config, 2, 16)
    assert model(x).shape == (2, 16, 64)


def test_default_widths():
    assert ModelConfig(arch="gpt2", vocab_size=8, n_layer=1, n_embd=64, n_head=4).ffn_hidden == 256
    llama = ModelConfig(arch="llama", vocab_size=8, n_layer=1, n_embd=64, n_head=4)
    assert llama.ffn_hidden == 192 and llama.ffn_hidden % 64 == 0  # 8/3 * 64 = 170.7, rounded up
    assert llama.n_kv_head == 4 and llama.tie_embeddings is False


def test_gpt2_small_size_matches_the_published_count():
    config = get_preset("gpt2-small").config
    d, v, L, S = config.n_embd, config.vocab_size, config.n_layer, config.max_seq_len
    per_block = 12 * d * d + 13 * d  # c_attn, c_proj, c_fc, c_proj weights+biases; ln_1, ln_2
    formula = v * d + S * d + L * per_block + 2 * d  # tied lm_head counts once
    with torch.device("meta"):  # count without allocating 500 MB
        model = build_model(config)
    assert count_params(model) == estimate_params(config) == formula
    assert abs(count_params(model) - GPT2_SMALL_PUBLISHED) <= 0.01 * GPT2_SMALL_PUBLISHED


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_estimate_matches_built_model_and_names_its_size(name):
    preset = PRESETS[name]
    with torch.device("meta"):
        model = build_model(preset.config)
    assert count_params(model) == preset.n_params
    assert f"{preset.n_params:,}" in preset.description
    assert preset.seq_len <= preset.config.max_seq_len
    assert preset.name == name


def test_llama_58m_is_58m():
    assert 57.5e6 < get_preset("llama-58m").n_params < 58.5e6


def test_count_params_trainable_only():
    model = build_model(get_preset("tiny").config)
    model.lm_head.weight.requires_grad_(False)
    frozen = model.lm_head.weight.numel()
    assert count_params(model, trainable_only=True) == count_params(model) - frozen


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        get_preset("huge")
    message = str(info.value)
    assert "'huge'" in message and "default" in message and "\n" not in message
    with pytest.raises(KeyError):
        get_preset("huge")
    assert isinstance(info.value, UnknownPresetError)


def test_overrides_make_a_new_consistent_preset():
    base = get_preset("default")
    small = with_overrides(
        base, n_layer=2, n_embd=128, n_head=4, batch_size=2, seq_len=32, vocab_size=512
    )
    assert (small.config.n_layer, small.config.n_embd, small.config.n_head) == (2, 128, 4)
    assert small.config.ffn_hidden == 384  # recomputed from the new width
    assert small.config.n_kv_head == 4
    assert (small.batch_size, small.seq_len, small.config.vocab_size) == (2, 32, 512)
    assert f"{small.n_params:,}" in small.description
    assert base.config.n_layer == 5  # the original is untouched
    assert with_overrides(base) is base
    longer = with_overrides(base, seq_len=1024)  # rotary tables grow with the sequence
    assert longer.config.max_seq_len == 1024


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(n_embd=100, n_head=12), "--n-embd 100 is not divisible by --n-head 12"),
        (dict(n_head=7), "--n-embd 384 is not divisible by --n-head 7"),
        (dict(n_layer=0), "--n-layer 0 must be a positive integer"),
        (dict(batch_size=-1), "--batch-size -1 must be a positive integer"),
        (dict(seq_len=2.5), "--seq-len 2.5 must be a positive integer"),
    ],
)
def test_override_errors_name_the_flag(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        with_overrides(get_preset("default"), **kwargs)


def test_gpt2_seq_len_cannot_exceed_its_position_table():
    with pytest.raises(ValueError, match="--seq-len 2048 exceeds .*max_seq_len 1024"):
        with_overrides(get_preset("gpt2-small"), seq_len=2048)
    model = build_model(get_preset("tiny-gpt2").config)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="not divisible"):
        ModelConfig(arch="llama", vocab_size=8, n_layer=1, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(arch="bert", vocab_size=8, n_layer=1, n_embd=32, n_head=4)
    with pytest.raises(ValueError, match="n_kv_head"):
        ModelConfig(arch="llama", vocab_size=8, n_layer=1, n_embd=32, n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="grouped-query"):
        ModelConfig(arch="gpt2", vocab_size=8, n_layer=1, n_embd=32, n_head=4, n_kv_head=2)


def test_matches_hugging_face_names_and_numbers():
    """Same parameter names as HF's models, and the same logits from the same weights."""
    transformers = pytest.importorskip("transformers")
    x = torch.randint(0, 64, (2, 8))

    ours = build_model(ModelConfig(arch="llama", vocab_size=64, n_layer=1, n_embd=32, n_head=4,
                                   n_kv_head=2, max_seq_len=16), seed=0).eval()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=ours.config.ffn_hidden,
        num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)).eval()
    assert set(dict(hf.named_parameters())) == set(dict(ours.named_parameters()))
    ours.load_state_dict(hf.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits)

    ours = build_model(ModelConfig(arch="gpt2", vocab_size=64, n_layer=1, n_embd=32, n_head=4,
                                   max_seq_len=16), seed=0).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=4, bos_token_id=0,
        eos_token_id=0)).eval()
    assert set(dict(hf.named_parameters())) == set(dict(ours.named_parameters()))
    conv1d = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # HF Conv1D stores weight transposed
    state = {k: v.t() if k.endswith(conv1d) else v for k, v in hf.state_dict().items()}
    ours.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits)
