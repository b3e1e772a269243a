"""Named workloads: a built-in model's shape plus the batch it trains on.

``get_preset("default")`` is what ``python -m lora_profiler.trace`` runs when given no model;
``with_overrides`` applies the command line's ``--n-layer``/``--n-embd``/... flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from .models import ModelConfig, count_params, estimate_params

__all__ = [
    "Preset",
    "PRESETS",
    "UnknownPresetError",
    "get_preset",
    "with_overrides",
    "count_params",
]


@dataclass(frozen=True)
class Preset:
    """A built-in workload.

    Attributes:
        name: the preset's name (``--preset NAME``).
        description: one line for ``--help`` and reports, with the real parameter count.
        config: the model's shape.
        batch_size: sequences per training step.
        seq_len: tokens per sequence (<= ``config.max_seq_len``).
    """

    name: str
    description: str
    config: ModelConfig
    batch_size: int
    seq_len: int

    @property
    def n_params(self) -> int:
        """Parameters of the model this preset builds (tied weights once)."""
        return estimate_params(self.config)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def _params_text(config: ModelConfig) -> str:
    n = estimate_params(config)
    from ..units import fmt_params

    return f"{fmt_params(n)} params ({n:,})"


def _preset(name: str, what: str, config: ModelConfig, batch_size: int, seq_len: int) -> Preset:
    c = config
    shape = f"{c.arch}, {c.n_layer} layers x {c.n_embd} wide, {c.n_head} heads"
    shape += f", vocab {c.vocab_size}"
    description = f"{what}: {shape}; {_params_text(c)}; batch {batch_size} x seq {seq_len}"
    return Preset(name, description, config, batch_size, seq_len)


_TINY = dict(vocab_size=256, n_layer=2, n_embd=64, n_head=4, max_seq_len=64)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "tiny",
            "for tests, a step takes milliseconds",
            ModelConfig(arch="llama", **_TINY),
            batch_size=2,
            seq_len=16,
        ),
        _preset(
            "tiny-gpt2",
            "for tests, GPT-2 layout",
            ModelConfig(arch="gpt2", **_TINY),
            batch_size=2,
            seq_len=16,
        ),
        _preset(
            # Sized so one full fine-tuning step (AdamW) takes ~0.3 s on a 2-core CPU, and so the
            # blocks' linear layers dominate: vocab 4096 keeps lm_head at ~15% of the matmul FLOPs.
            "default",
            "the default run, a small Llama",
            ModelConfig(
                arch="llama", vocab_size=4096, n_layer=5, n_embd=384, n_head=6, max_seq_len=512
            ),
            batch_size=8,
            seq_len=128,
        ),
        _preset(
            "gpt2-small",
            "GPT-2 small (124M)",
            ModelConfig(
                arch="gpt2", vocab_size=50257, n_layer=12, n_embd=768, n_head=12, max_seq_len=1024
            ),
            batch_size=8,
            seq_len=128,
        ),
        _preset(
            # The LLaMA-60M shape of the GaLore paper (Zhao et al., 2024): intermediate size 1376.
            "llama-58m",
            "a 58M Llama-style model",
            ModelConfig(
                arch="llama", vocab_size=32000, n_layer=8, n_embd=512, n_head=8, ffn_hidden=1376,
                max_seq_len=1024,
            ),
            batch_size=16,
            seq_len=128,
        ),
        _preset(
            # The LLaMA-130M shape of the GaLore paper: 12 x 768, intermediate size 2048.
            "llama-134m",
            "a 134M Llama-style model",
            ModelConfig(
                arch="llama", vocab_size=32000, n_layer=12, n_embd=768, n_head=12, ffn_hidden=2048,
                max_seq_len=1024,
            ),
            batch_size=8,
            seq_len=128,
        ),
    )
}


class UnknownPresetError(KeyError, ValueError):
    """No preset has that name. Both a ``KeyError`` and a ``ValueError``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        UnknownPresetError: (a ``ValueError`` and ``KeyError``) naming the valid presets.
    """
    try:
        return PRESETS[name]
    except KeyError:
        valid = ", ".join(PRESETS)
        raise UnknownPresetError(f"unknown preset {name!r}; valid presets: {valid}") from None


def _check_positive(flag: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{flag} {value!r} must be a positive integer")


def with_overrides(
    preset: Preset,
    n_layer: Optional[int] = None,
    n_embd: Optional[int] = None,
    n_head: Optional[int] = None,
    batch_size: Optional[int] = None,
    seq_len: Optional[int] = None,
    vocab_size: Optional[int] = None,
) -> Preset:
    """A copy of ``preset`` with the given sizes changed (``None`` keeps the preset's value).

    Widths derived from ``n_embd`` (the MLP width) are recomputed when ``n_embd`` changes; a
    grouped-query preset keeps its ``n_kv_head`` when it still divides the new ``n_head``.
    ``max_seq_len`` grows to ``seq_len`` when needed only for llama (rotary tables have no fixed
    size); gpt2's learned position table does not grow.

    Raises:
        ValueError: a one-line message naming the command-line flag, e.g.
            ``--n-embd 100 is not divisible by --n-head 12``.
    """
    given = dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, batch_size=batch_size,
                 seq_len=seq_len, vocab_size=vocab_size)
    given = {k: v for k, v in given.items() if v is not None}
    for key, value in given.items():
        _check_positive("--" + key.replace("_", "-"), value)
    if not given:
        return preset

    c = preset.config
    embd, head = given.get("n_embd", c.n_embd), given.get("n_head", c.n_head)
    if embd % head:
        raise ValueError(f"--n-embd {embd} is not divisible by --n-head {head}")
    model_keys = ("n_layer", "n_embd", "n_head", "vocab_size")
    changes: dict = {k: given[k] for k in model_keys if k in given}
    if "n_embd" in given and given["n_embd"] != c.n_embd:
        changes["ffn_hidden"] = None  # recompute from the new width
    if "n_head" in given:
        if c.n_kv_head == c.n_head:
            changes["n_kv_head"] = None  # plain multi-head attention stays plain
        elif head % c.n_kv_head:
            raise ValueError(
                f"--n-head {head} is not a multiple of preset {preset.name!r}'s "
                f"n_kv_head {c.n_kv_head}"
            )
    seq = given.get("seq_len", preset.seq_len)
    if seq > c.max_seq_len:
        if c.arch != "llama":
            raise ValueError(
                f"--seq-len {seq} exceeds preset {preset.name!r}'s max_seq_len {c.max_seq_len}"
            )
        changes["max_seq_len"] = seq
    config = dataclasses.replace(c, **changes)

    shown = ", ".join(f"{k}={v}" for k, v in given.items())
    description = f"{preset.name} with {shown}; {_params_text(config)}"
    return Preset(
        name=preset.name,
        description=description,
        config=config,
        batch_size=given.get("batch_size", preset.batch_size),
        seq_len=seq,
    )
