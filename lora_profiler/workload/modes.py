"""Training modes: which parameters train, whether the adapters run, whether backward runs.

- ``full``    every base weight trainable (AdamW over all of them), adapters disabled.
- ``lora``    base frozen, adapters enabled and trainable (AdamW over the adapters).
- ``frozen``  every weight frozen, adapters disabled, but the input embedding's output requires
              grad, so backward still runs through the whole network computing activation
              gradients only: the floor LoRA cannot beat when it adapts the first layer.
- ``forward`` forward only, under ``torch.no_grad``, adapters disabled.

Variant modes (``workload/variants.py``: ``no-dropout``, ``fold-scale``, ``upper-half``,
``rank-xN``) are the ``lora`` mode with one change, applied on entry and undone on exit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from ..names import BASE_MODES
from .spec import Workload
from .variants import Variant, make_variant

MODES: tuple[str, ...] = BASE_MODES


def mode_kind(mode: str) -> str:
    """The base mode a mode is built on ("lora" for variants); ValueError when unknown."""
    if mode in MODES:
        return mode
    if make_variant(mode) is not None:
        return "lora"
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)} or a variant "
                     "(no-dropout, fold-scale, upper-half, rank-xN)")


def variant_of(workload: Workload, mode: str) -> Optional[Variant]:
    """The workload's variant object for ``mode`` (made once, so what it builds is reused)."""
    if mode in MODES:
        return None
    cache = workload.mode_state.setdefault("_variants", {})
    if mode not in cache:
        cache[mode] = make_variant(mode)
    return cache[mode]


@dataclass
class ModeConfig:
    """The result of switching a workload into a mode."""

    name: str
    trainable: list[nn.Parameter]
    backward: bool  # does the step run backward?
    batch: Any  # the batch this mode feeds (frozen mode may mark float inputs as needing grad)


def _base_parameters(model: nn.Module, adapter_params: list[nn.Parameter]) -> list[nn.Parameter]:
    skip = {id(p) for p in adapter_params}
    return [p for p in model.parameters() if id(p) not in skip]


def _with_grad_inputs(batch: Any) -> Any:
    """A copy of batch whose floating-point tensors require grad (frozen mode without embedding)."""
    if isinstance(batch, torch.Tensor):
        return batch.detach().requires_grad_(True) if batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: _with_grad_inputs(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_with_grad_inputs(v) for v in batch)
    return batch


class InputGrad:
    """Makes the first ``nn.Embedding``'s output require grad while ``active`` (frozen mode)."""

    def __init__(self, model: nn.Module):
        self.active = False
        self.module: Optional[nn.Module] = next(
            (m for m in model.modules() if isinstance(m, nn.Embedding)), None
        )
        if self.module is not None:
            self.module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.active and torch.is_grad_enabled() and isinstance(output, torch.Tensor) \
                and output.is_floating_point() and not output.requires_grad:
            return output.requires_grad_(True)
        return None


def leave_variant(workload: Workload) -> None:
    """Undo what the current variant changed (nothing when the current mode is a base mode)."""
    undo = workload.mode_state.pop("_undo", None)
    if undo is not None:
        undo()


def switch_mode(workload: Workload, mode: str, input_grad: InputGrad) -> ModeConfig:
    """Put the workload's model into ``mode`` (in place) and return what its step needs.

    Raises:
        ValueError: unknown mode.
    """
    kind = mode_kind(mode)
    leave_variant(workload)
    model, adapters = workload.model, workload.adapters
    adapter_params = adapters.parameters()
    adapters.set_enabled(kind == "lora")  # PEFT toggles requires_grad here; we set it below
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    input_grad.active = False
    batch = workload.batch
    variant = variant_of(workload, mode)
    if variant is not None:
        workload.mode_state["_undo"] = variant.apply(workload)
        trainable = variant.trainable(workload)
    elif kind == "full":
        trainable = _base_parameters(model, adapter_params)
    elif kind == "lora":
        trainable = adapter_params
    else:
        trainable = []
    for p in trainable:
        p.requires_grad_(True)
    if kind == "frozen" or (variant is not None and variant.input_grad):
        if input_grad.module is not None:
            input_grad.active = True
        else:
            batch = _with_grad_inputs(batch)
    model.train(True)  # the same ops in every mode; "forward" differs only by no_grad
    return ModeConfig(name=mode, trainable=trainable, backward=kind != "forward", batch=batch)
