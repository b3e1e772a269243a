"""Built-in decoder-only transformers, in plain torch, for profiling a training step.

Two architectures, random-initialised (no weights are downloaded, no ``transformers`` import):

- ``GPT2Model``: learned positions, LayerNorm, one fused ``c_attn`` projection for q, k and v,
  GELU MLP, tied embeddings. Module paths mirror Hugging Face's ``GPT2LMHeadModel``
  (``transformer.h.0.attn.c_attn``), but the projections are ``nn.Linear`` rather than HF's
  ``Conv1D`` so any LoRA implementation can wrap them.
- ``LlamaModel``: rotary positions, RMSNorm, separate bias-free ``q/k/v/o_proj`` with grouped-query
  attention when ``n_kv_head < n_head``, SwiGLU MLP. Module paths mirror HF's
  ``LlamaForCausalLM`` (``model.layers.0.self_attn.q_proj``).

Both map ``input_ids`` (B, T) to ``logits`` (B, T, vocab_size), use causal
``scaled_dot_product_attention``, carry their ``ModelConfig`` as ``.config``, and name the layers
PEFT adapts by default in ``default_lora_targets``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("gpt2", "llama")
INIT_STD = 0.02  # GPT-2's initializer_range


def _llama_ffn_hidden(n_embd: int, multiple_of: int = 64) -> int:
    """SwiGLU width: 8/3 of n_embd (same parameter count as a 4x GELU MLP), rounded up."""
    hidden = round(8 * n_embd / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a built-in model. Omitted fields get the architecture's default.

    Args:
        arch: "gpt2" or "llama".
        vocab_size: tokens in the vocabulary.
        n_layer: transformer blocks.
        n_embd: residual width; must be divisible by ``n_head``.
        n_head: attention (query) heads.
        n_kv_head: key/value heads (llama only; grouped-query attention when < n_head).
            Default: n_head. Must divide n_head. For gpt2 it is always n_head.
        ffn_hidden: MLP width. Default: 4 * n_embd (gpt2); 8/3 * n_embd rounded up to a
            multiple of 64 (llama).
        max_seq_len: longest sequence (gpt2's position table size; llama's rotary table size).
        dropout: dropout probability on attention weights and residual branches (0 = none).
        tie_embeddings: share the token embedding with ``lm_head``. Default: True (gpt2),
            False (llama).
        rope_theta: rotary base (llama only).
        norm_eps: LayerNorm / RMSNorm epsilon. Default: 1e-5 (gpt2), 1e-6 (llama).

    Raises:
        ValueError: an unknown arch, a non-positive size, or heads that do not divide.
    """

    arch: str
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: Optional[int] = None
    ffn_hidden: Optional[int] = None
    max_seq_len: int = 1024
    dropout: float = 0.0
    tie_embeddings: Optional[bool] = None
    rope_theta: float = 10000.0
    norm_eps: Optional[float] = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        gpt2 = self.arch == "gpt2"
        n_kv_head = self.n_head if self.n_kv_head is None else self.n_kv_head
        if gpt2 and n_kv_head != self.n_head:
            raise ValueError("gpt2 has no grouped-query attention: leave n_kv_head unset")
        if n_kv_head <= 0 or self.n_head % n_kv_head:
            raise ValueError(
                f"n_kv_head {n_kv_head} must be positive and divide n_head {self.n_head}"
            )
        ffn = self.ffn_hidden
        if ffn is None:
            ffn = 4 * self.n_embd if gpt2 else _llama_ffn_hidden(self.n_embd)
        if ffn <= 0:
            raise ValueError(f"ffn_hidden must be positive, got {ffn}")
        # Frozen dataclass: resolve the defaults in place so every consumer sees concrete values.
        object.__setattr__(self, "n_kv_head", n_kv_head)
        object.__setattr__(self, "ffn_hidden", ffn)
        if self.tie_embeddings is None:
            object.__setattr__(self, "tie_embeddings", gpt2)
        if self.norm_eps is None:
            object.__setattr__(self, "norm_eps", 1e-5 if gpt2 else 1e-6)

    # No ``to_dict`` on purpose: ``workload.spec.is_hf_model`` takes a config with ``to_dict`` for a
    # Hugging Face one. Use ``dataclasses.asdict(config)``.

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def estimate_params(config: ModelConfig) -> int:
    """Parameter count of ``build_model(config)`` from its shape alone (tied weights once)."""
    d, v, f, L = config.n_embd, config.vocab_size, config.ffn_hidden, config.n_layer
    head = 0 if config.tie_embeddings else v * d
    if config.arch == "gpt2":
        per_layer = (
            2 * 2 * d  # ln_1, ln_2: weight + bias
            + d * 3 * d + 3 * d  # c_attn
            + d * d + d  # attn.c_proj
            + d * f + f  # c_fc
            + f * d + d  # mlp.c_proj
        )
        return v * d + config.max_seq_len * d + L * per_layer + 2 * d + head
    kv = config.n_kv_head * config.head_dim
    per_layer = 2 * d + 2 * d * d + 2 * d * kv + 3 * d * f  # 2 norms, q+o, k+v, gate+up+down
    return v * d + L * per_layer + d + head


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters in ``model``; shared (tied) tensors count once.

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout that launches nothing when p == 0, so a profile shows no empty dropout ops."""
    return F.dropout(x, p, training) if p > 0 and training else x


def _init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2 init: normal(0, 0.02) weights, zero biases, residual outputs scaled by 1/sqrt(2L)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            std = INIT_STD
            if name.endswith(("attn.c_proj", "mlp.c_proj", "o_proj", "down_proj")):
                std = INIT_STD / math.sqrt(2 * n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)


# ----------------------------------------------------------------------------- GPT-2


class GPT2Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # fused q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return _dropout(self.c_proj(y), self.dropout, self.training)


class GPT2MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dropout = config.dropout
        self.c_fc = nn.Linear(config.n_embd, config.ffn_hidden)
        self.act = nn.GELU(approximate="tanh")  # GPT-2's gelu_new
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dropout(self.c_proj(self.act(self.c_fc(x))), self.dropout, self.training)


class GPT2Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = GPT2MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    """GPT-2 language model: ``forward(input_ids (B, T)) -> logits (B, T, vocab_size)``."""

    default_lora_targets = ("c_attn",)  # PEFT's default target_modules for GPT-2

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch != "gpt2":
            raise ValueError(f"GPT2Model needs arch 'gpt2', got {config.arch!r}")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.max_seq_len, config.n_embd),
                h=nn.ModuleList(GPT2Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.norm_eps),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        _init_weights(self, config.n_layer)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.config.max_seq_len}")
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(pos)  # (B, T, C)
        x = _dropout(x, self.config.dropout, self.training)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)


# ----------------------------------------------------------------------------- Llama


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (``torch.nn.RMSNorm`` needs torch >= 2.4)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position tables, HF layout (the two halves of a head are rotated together)."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (S, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (S, hd)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = q.shape[-2]
        cos, sin = self.cos[:T].to(q.dtype), self.sin[:T].to(q.dtype)  # (T, hd)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hd = config.head_dim
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, hd
        self.dropout = config.dropout
        self.q_proj = nn.Linear(config.n_embd, config.n_head * hd, bias=False)
        self.k_proj = nn.Linear(config.n_embd, config.n_kv_head * hd, bias=False)
        self.v_proj = nn.Linear(config.n_embd, config.n_kv_head * hd, bias=False)
        self.o_proj = nn.Linear(config.n_head * hd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        # k, v: (B, Hkv, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = rope(q, k)
        if self.n_kv_head != self.n_head:  # GQA: each kv head serves n_head / n_kv_head queries
            rep = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, T, hd)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim)
        return _dropout(self.o_proj(y), self.dropout, self.training)


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dropout = config.dropout
        self.input_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope)
        return x + _dropout(self.mlp(self.post_attention_layernorm(x)), self.dropout, self.training)


class LlamaBackbone(nn.Module):
    """The ``model.`` part of a Llama: embeddings, decoder layers, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_theta)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, self.rotary_emb)
        return self.norm(x)


class LlamaModel(nn.Module):
    """Llama language model: ``forward(input_ids (B, T)) -> logits (B, T, vocab_size)``."""

    default_lora_targets = ("q_proj", "v_proj")  # PEFT's default target_modules for Llama

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch != "llama":
            raise ValueError(f"LlamaModel needs arch 'llama', got {config.arch!r}")
        self.config = config
        self.model = LlamaBackbone(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        _init_weights(self, config.n_layer)
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.config.max_seq_len}")
        return self.lm_head(self.model(input_ids))  # (B, T, V)


# ----------------------------------------------------------------------------- building

MODEL_CLASSES = {"gpt2": GPT2Model, "llama": LlamaModel}


def build_model(config: ModelConfig, seed: Optional[int] = None) -> nn.Module:
    """Build a random-initialised model for ``config``.

    Weights come from torch's global generator, so the result is deterministic after
    ``torch.manual_seed``. With ``seed`` the model is built under that seed without touching the
    global generator's state. Build under ``with torch.device("meta"):`` to count parameters of a
    large model without allocating it.

    Args:
        config: the model's shape; ``config.arch`` picks the class.
        seed: optional seed for the initialisation.

    Returns:
        a ``GPT2Model`` or ``LlamaModel`` in training mode, on the default device, float32.
    """
    cls = MODEL_CLASSES[config.arch]
    if seed is None:
        return cls(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


def example_batch(
    config: ModelConfig,
    batch_size: int,
    seq_len: int,
    seed: int = 0,
    device: "torch.device | str" = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and next-token targets, each (batch_size, seq_len) int64.

    Uses its own generator, so it neither reads nor changes torch's global random state.
    """
    if seq_len > config.max_seq_len:
        raise ValueError(f"seq_len {seq_len} exceeds max_seq_len {config.max_seq_len}")
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, config.vocab_size, (batch_size, seq_len + 1), generator=g)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)
