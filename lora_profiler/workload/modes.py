"""Training modes: which parameters train, whether the adapters run, whether backward runs.

- ``full``    every base weight trainable (AdamW over all of them), adapters disabled.
- ``lora``    base frozen, adapters enabled and trainable (AdamW over the adapters).
- ``frozen``  every weight frozen, adapters disabled, but the input embedding's output requires
              grad, so backward still runs through the whole network computing activation
              gradients only: the floor LoRA cannot beat when it adapts the first layer.
- ``forward`` forward only, under ``torch.no_grad``, adapters disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .spec import Workload

MODES: tuple[str, ...] = ("full", "lora", "frozen", "forward")


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


def switch_mode(workload: Workload, mode: str, input_grad: InputGrad) -> ModeConfig:
    """Put the workload's model into ``mode`` (in place) and return what its step needs.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    model, adapters = workload.model, workload.adapters
    adapter_params = adapters.parameters()
    adapters.set_enabled(mode == "lora")  # PEFT toggles requires_grad here; we set it below
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    input_grad.active = False
    batch = workload.batch
    if mode == "full":
        trainable = _base_parameters(model, adapter_params)
    elif mode == "lora":
        trainable = adapter_params
    else:
        trainable = []
    for p in trainable:
        p.requires_grad_(True)
    if mode == "frozen":
        if input_grad.module is not None:
            input_grad.active = True
        else:
            batch = _with_grad_inputs(batch)
    model.train(True)  # the same ops in every mode; "forward" differs only by no_grad
    return ModeConfig(name=mode, trainable=trainable, backward=mode != "forward", batch=batch)
