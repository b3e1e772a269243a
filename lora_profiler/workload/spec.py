"""A workload: one model, one batch, one loss, and its LoRA adapters — what every mode runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import Adapters, find_adapters
from .errors import WorkloadError
from .lora import inject_lora, resolve_targets
from .user import load_model_file


@dataclass(frozen=True)
class LoraOptions:
    """LoRA settings for injection (ignored when the model already has adapters)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: Optional[tuple[str, ...]] = None  # None: the architecture's default


@dataclass
class Workload:
    """Everything a mode needs; built once, shared by all modes."""

    name: str
    source: str  # preset | file
    path: Optional[str]
    arch: str
    config: dict
    model: nn.Module
    batch: Any
    loss_fn: Callable[[nn.Module, Any], torch.Tensor]
    adapters: Adapters
    batch_size: int
    seq_len: int
    device: torch.device
    notes: list[str] = field(default_factory=list)
    # What the current mode changed (set by modes.switch_mode and variants; empty in base modes).
    mode_state: dict = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        """The dtype of the model's first floating-point parameter, e.g. "float32"."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return str(p.dtype).replace("torch.", "")
        return "none"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def facts(self) -> dict:
        """The workload part of facts.json."""
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "arch": self.arch,
            "config": self.config,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "tokens_per_step": self.tokens_per_step,
            "dtype": self.dtype,
            "total_params": sum(p.numel() for p in self.model.parameters()),
            "notes": self.notes,
        }


def is_hf_model(model: nn.Module) -> bool:
    """A Hugging Face ``PreTrainedModel`` or a PEFT ``PeftModel`` (by class name, no import)."""
    return any(c.__name__ in ("PreTrainedModel", "PeftModel") for c in type(model).__mro__)


def vocab_size_of(model: nn.Module) -> Optional[int]:
    """``config.vocab_size`` if present, else the first ``nn.Embedding``'s size, else None."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        return vocab
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module.num_embeddings
    return None


def token_batch(vocab: int, batch_size: int, seq_len: int, device: torch.device, seed: int) -> dict:
    """A fixed random token batch: ``{"input_ids": (batch_size, seq_len) int64}``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=gen)  # (B, T) tokens
    return {"input_ids": ids.to(device)}


def _logits_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)) and out:
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, not logits; define loss_fn(model, batch)")
    return logits


def next_token_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy on ``batch["input_ids"]`` (the HF ``.loss`` when labels are taken)."""
    ids = batch["input_ids"]
    if is_hf_model(model):
        out = model(input_ids=ids, labels=ids)
        if getattr(out, "loss", None) is not None:
            return out.loss
    else:
        out = model(ids)
    logits = _logits_of(out)  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def _attach_adapters(model: nn.Module, lora: LoraOptions, file_targets: Optional[list[str]],
                     where: str) -> Adapters:
    try:
        found = find_adapters(model)
    except ValueError as exc:
        raise WorkloadError(f"{where}: {exc}") from exc
    if found is not None:
        return found
    targets = list(lora.targets) if lora.targets else file_targets
    try:
        used, names = resolve_targets(model, targets)
    except WorkloadError as exc:
        raise WorkloadError(f"{where}: {exc}") from exc
    inject_lora(model, names, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout)
    adapters = find_adapters(model)
    assert adapters is not None and adapters.source == "builtin"
    adapters.targets = used
    return adapters


def build_preset_workload(preset, device: torch.device, lora: LoraOptions, seed: int = 0,
                          dtype: Optional[torch.dtype] = None) -> Workload:
    """A built-in preset's workload (see ``presets.PRESETS``), in ``dtype`` when given."""
    from .models import build_model

    torch.manual_seed(seed)
    model = build_model(preset.config).to(device=device, dtype=dtype)
    adapters = _attach_adapters(model, lora, None, f"preset {preset.name!r}")
    batch = token_batch(preset.config.vocab_size, preset.batch_size, preset.seq_len, device, seed)
    from dataclasses import asdict

    return Workload(
        name=preset.name, source="preset", path=None, arch=preset.config.arch,
        config=asdict(preset.config), model=model, batch=batch, loss_fn=next_token_loss,
        adapters=adapters, batch_size=preset.batch_size, seq_len=preset.seq_len, device=device,
    )


def build_file_workload(path: str | Path, device: torch.device, lora: LoraOptions, batch_size: int,
                        seq_len: int, seed: int = 0, dtype: Optional[torch.dtype] = None) -> Workload:
    """A user's model file's workload (see ``user.load_model_file`` for what the file defines);
    ``dtype`` casts the model (None keeps the file's)."""
    torch.manual_seed(seed)
    user = load_model_file(path)
    where = str(user.path)
    model = user.model.to(device=device, dtype=dtype)
    adapters = _attach_adapters(model, lora, user.lora_targets, where)

    if user.make_batch is not None:
        try:
            batch = user.make_batch(batch_size, seq_len, device)
        except Exception as exc:
            raise WorkloadError(f"{where}: make_batch() raised {type(exc).__name__}: {exc}") from exc
    else:
        vocab = vocab_size_of(model)
        if vocab is None:
            raise WorkloadError(
                f"{where}: cannot make a default batch (no config.vocab_size and no nn.Embedding); "
                "define make_batch(batch_size, seq_len, device) and loss_fn(model, batch)"
            )
        batch = token_batch(vocab, batch_size, seq_len, device, seed)

    loss_fn = user.loss_fn
    if loss_fn is None:
        ids = batch.get("input_ids") if isinstance(batch, dict) else None
        if not (isinstance(ids, torch.Tensor) and not ids.is_floating_point() and ids.dim() == 2):
            raise WorkloadError(
                f"{where}: make_batch() returned {type(batch).__name__} without 2-D integer "
                "'input_ids'; define loss_fn(model, batch) for it"
            )
        loss_fn = next_token_loss
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
    arch = str(config_dict.get("model_type", "custom")) if config_dict else "custom"
    return Workload(
        name=user.path.stem, source="file", path=where, arch=arch,
        config={k: v for k, v in config_dict.items() if isinstance(v, (int, float, str, bool))},
        model=model, batch=batch, loss_fn=loss_fn, adapters=adapters,
        batch_size=batch_size, seq_len=seq_len, device=device,
    )
