"""A workload: one model, one batch, one loss, and its LoRA adapters — what every mode runs.

Building one (``build_preset_workload``, ``build_file_workload``):

1. the model (a preset, a model file or a model object), cast to ``dtype`` when given; adapters already in it are found (PEFT's trainable
   set is read now, before any mode changes ``requires_grad``);
2. the batch (``make_batch`` or the default, ``batch.py``), moved to the device, its floating
   tensors cast to ``dtype``; the loss (``loss_fn`` or the default);
3. a dry forward with the adapters off (``probe.py``): it checks that the loss runs on the batch
   (one-line ``WorkloadError`` naming the loss, the batch and the module otherwise), and finds
   the modules that run, the input embeddings and the output layer;
4. LoRA injected when the model has none (skipping modules the step never calls), the frozen
   floor (``floor.py``), and notes: options that were not applied, adapters that do not reach
   the input side, an adapter forward that fails in a named module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .adapters import Adapters, find_adapters
from .batch import (check_batch, default_batch, describe_batch, is_hf_model, next_token_loss,
                    structure, to_device, token_batch, vocab_size_of)
from .errors import WorkloadError
from .floor import Floor, floor_with_notes
from .lora import inject_lora, resolve_targets, runnable_targets
from .probe import Probe, ProbeError, probe_forward
from .user import load_model_file

__all__ = ["LoraOptions", "Workload", "build_preset_workload", "build_file_workload", "build_workload",
           "is_hf_model", "vocab_size_of", "token_batch", "next_token_loss"]


@dataclass(frozen=True)
class LoraOptions:
    """LoRA settings for injection (not applied when the model already has adapters).

    ``given`` names the settings the user chose (``{"rank", "targets"}``); None: those that
    differ from the defaults. A model with its own adapters gets a note naming them.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: Optional[tuple[str, ...]] = None  # None: the architecture's default
    given: Optional[frozenset] = None

    def chosen(self) -> list[str]:
        """The settings the user chose."""
        if self.given is not None:
            return sorted(self.given)
        default = LoraOptions()
        return [f.name for f in fields(self) if f.name != "given"
                and getattr(self, f.name) != getattr(default, f.name)]


@dataclass
class Workload:
    """Everything a mode needs; built once, shared by all modes."""

    name: str
    source: str  # preset | file | model
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
    floor: Optional[Floor] = None  # None: every nn.Embedding (see floor.InputGrad)
    batch_info: dict = field(default_factory=dict)  # describe_batch(batch)
    probe: Optional[Probe] = None
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
            "batch": self.batch_info or describe_batch(self.batch),
            "floor": self.floor.facts() if self.floor is not None else None,
            "notes": self.notes,
        }


def _loss_name(loss_fn: Callable) -> str:
    if loss_fn is next_token_loss:
        return "the default loss (model(**batch).loss for Hugging Face models, else cross-entropy)"
    name = getattr(loss_fn, "__qualname__", None) or type(loss_fn).__name__
    return "loss_fn(model, batch)" if name == "loss_fn" else f"loss_fn {name}(model, batch)"


def _probe(model: nn.Module, batch: Any, loss_fn: Callable, adapters: Optional[Adapters],
           enabled: bool, device: torch.device) -> Probe:
    """A dry forward with the adapters switched as asked; requires_grad is left as it was."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if adapters is not None:
            adapters.set_enabled(enabled)
        return probe_forward(model, batch, loss_fn, device)
    finally:
        if adapters is not None:
            adapters.set_enabled(True)
        for p, flag in flags:
            p.requires_grad_(flag)


def _find(model: nn.Module, where: str) -> Optional[Adapters]:
    try:
        return find_adapters(model)
    except ValueError as exc:
        raise WorkloadError(f"{where}: {exc}") from exc


def _inject(model: nn.Module, batch: Any, loss_fn: Callable, lora: LoraOptions,
            targets: Optional[list[str]], where: str, device: torch.device) -> tuple[Adapters, list[str]]:
    """Our LoRA into the chosen targets the step calls (a dry forward of the plain model tells
    which run and which is the output layer; when it fails — a loss_fn that expects the adapters
    — module structure alone decides)."""
    try:
        resolve_targets(model, targets)  # nothing to adapt is the first thing to say
        try:
            probe = _probe(model, batch, loss_fn, None, False, device)
        except ProbeError:
            probe = None
        used, names = resolve_targets(model, targets, probe)
        names, notes = runnable_targets(model, names, probe)
        if not names:
            raise WorkloadError(f"no LoRA target can be adapted: {'; '.join(notes)}")
        inject_lora(model, names, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout)
    except WorkloadError as exc:
        raise WorkloadError(f"{where}: {exc}") from exc
    adapters = find_adapters(model)
    assert adapters is not None and adapters.source == "builtin"
    adapters.targets = used
    return adapters, notes


def _assemble(model: nn.Module, batch: Any, loss_fn: Callable, lora: LoraOptions,
              file_targets: Optional[list[str]], where: str,
              device: torch.device) -> tuple[Adapters, Floor, Probe, list[str]]:
    """Steps 1 (adapters found), 3 and 4 of building a workload (see the module docstring)."""
    found = _find(model, where)
    if found is not None:
        adapters, notes = found, list(found.notes)
        chosen = lora.chosen() + (["LORA_TARGETS"] if file_targets else [])
        if chosen:
            notes.append(f"{', '.join(chosen)} not applied: the model has its own {adapters.source} "
                         "adapters and they run as built")
    else:
        targets = list(lora.targets) if lora.targets else file_targets
        adapters, notes = _inject(model, batch, loss_fn, lora, targets, where, device)
    try:  # the modes' forward with the adapters off: full, frozen, forward
        probe = _probe(model, batch, loss_fn, adapters, False, device)
    except ProbeError as exc:
        inside = f" in module {exc.module!r}" if exc.module else ""
        raise WorkloadError(f"{where}: {_loss_name(loss_fn)} failed on the batch {structure(batch)}"
                            f"{inside}: {exc}; make_batch() and loss_fn(model, batch) must agree") from exc
    if probe.loss_shape is None or torch.Size(probe.loss_shape).numel() != 1:
        got = "not a tensor" if probe.loss_shape is None else f"a tensor of shape {list(probe.loss_shape)}"
        raise WorkloadError(f"{where}: {_loss_name(loss_fn)} returned {got}; it must return the scalar loss")
    floor, floor_notes = floor_with_notes(model, probe, batch, adapters.paths)
    notes += floor_notes
    if adapters.layers or adapters.unsupported:
        try:  # the lora mode's forward: a failure there is the lora mode's, named here
            _probe(model, batch, loss_fn, adapters, True, device)
        except ProbeError as exc:
            inside = f" in module {exc.module!r}" if exc.module else ""
            notes.append(f"the forward with adapters on fails{inside}: {exc} (the lora mode will fail)")
    return adapters, floor, probe, notes


def build_preset_workload(preset, device: torch.device, lora: LoraOptions, seed: int = 0,
                          dtype: Optional[torch.dtype] = None) -> Workload:
    """A built-in preset's workload (see ``presets.PRESETS``), in ``dtype`` when given."""
    from .models import build_model

    torch.manual_seed(seed)
    model = build_model(preset.config).to(device=device, dtype=dtype)
    batch = token_batch(preset.config.vocab_size, preset.batch_size, preset.seq_len, device, seed)
    adapters, floor, probe, notes = _assemble(model, batch, next_token_loss, lora, None,
                                              f"preset {preset.name!r}", device)
    return Workload(
        name=preset.name, source="preset", path=None, arch=preset.config.arch,
        config=asdict(preset.config), model=model, batch=batch, loss_fn=next_token_loss,
        adapters=adapters, batch_size=preset.batch_size, seq_len=preset.seq_len, device=device,
        notes=notes, floor=floor, batch_info=describe_batch(batch), probe=probe,
    )


def build_workload(model: nn.Module, device: torch.device, lora: LoraOptions, batch_size: int,
                   seq_len: int, seed: int = 0, dtype: Optional[torch.dtype] = None,
                   make_batch: Optional[Callable[..., Any]] = None,
                   loss_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
                   lora_targets: Optional[list[str]] = None, name: str = "model",
                   where: Optional[str] = None) -> Workload:
    """The workload of a model object (what a model file's ``build_model`` returns).

    Args:
        model: the model; moved to ``device`` and, with ``dtype``, cast.
        device, lora, batch_size, seq_len, seed: as the command line's flags.
        dtype: cast the model and the batch's floating-point tensors (None keeps them).
        make_batch: ``make_batch(batch_size, seq_len, device)``; None: the default batch.
        loss_fn: ``loss_fn(model, batch)``; None: the default loss.
        lora_targets: the model's own LoRA target patterns (``--targets`` wins).
        name: the workload's name; ``where``: what error messages name (default: ``name``).

    Raises:
        WorkloadError: one line naming ``where`` and the problem.
    """
    where = where or name
    torch.manual_seed(seed)
    model = model.to(device=device, dtype=dtype)
    if make_batch is not None:
        try:
            batch = make_batch(batch_size, seq_len, device)
        except Exception as exc:
            raise WorkloadError(f"{where}: make_batch() raised {type(exc).__name__}: {exc}") from exc
        batch = check_batch(to_device(batch, device, dtype), where, loss_fn is not None)
    else:
        vocab = vocab_size_of(model)
        if vocab is None:
            raise WorkloadError(
                f"{where}: cannot make a default batch (no config.vocab_size and no nn.Embedding); "
                "define make_batch(batch_size, seq_len, device) and loss_fn(model, batch)"
            )
        batch = default_batch(model, vocab, batch_size, seq_len, device, seed)
    loss_fn = loss_fn or next_token_loss
    adapters, floor, probe, notes = _assemble(model, batch, loss_fn, lora, lora_targets, where, device)
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
    arch = str(config_dict.get("model_type", "custom")) if config_dict else "custom"
    return Workload(
        name=name, source="model", path=None, arch=arch,
        config={k: v for k, v in config_dict.items() if isinstance(v, (int, float, str, bool))},
        model=model, batch=batch, loss_fn=loss_fn, adapters=adapters,
        batch_size=batch_size, seq_len=seq_len, device=device,
        notes=notes, floor=floor, batch_info=describe_batch(batch), probe=probe,
    )


def build_file_workload(path: str | Path, device: torch.device, lora: LoraOptions, batch_size: int,
                        seq_len: int, seed: int = 0, dtype: Optional[torch.dtype] = None) -> Workload:
    """A user's model file's workload (see ``user.load_model_file`` for what the file defines);
    ``dtype`` casts the model and the batch's floating-point tensors (None keeps the file's)."""
    torch.manual_seed(seed)
    user = load_model_file(path)
    workload = build_workload(user.model, device, lora, batch_size, seq_len, seed=seed, dtype=dtype,
                              make_batch=user.make_batch, loss_fn=user.loss_fn,
                              lora_targets=user.lora_targets, name=user.path.stem, where=str(user.path))
    workload.source, workload.path = "file", str(user.path)
    return workload
