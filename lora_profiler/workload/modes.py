"""Training modes: which parameters train, whether the adapters run, whether backward runs.

- ``full``    every base weight trainable (AdamW over all of them), adapters disabled. For a PEFT
              model "base weight" is every parameter that is not an adapter's (LoRA A/B, DoRA
              magnitude, other tuner weights, prompt encoders); a ``modules_to_save`` copy is
              the module that runs in every mode, so it trains here, while the frozen original
              PEFT keeps beside it never runs and trains in no mode.
- ``lora``    adapters enabled; exactly what the adapter library trains is trainable (PEFT:
              what it marked ``requires_grad`` when the model was built — A/B, DoRA
              magnitudes, ``lora_only`` biases, ``modules_to_save`` copies; torchtune: its
              adapter params; ours: A and B), AdamW over those.
- ``frozen``  every weight frozen, adapters disabled, but the floor (``floor.py``: the outputs
              of the input embeddings that run, or the float inputs) requires grad, so backward
              still runs through the whole network computing activation gradients only.
- ``forward`` forward only, under ``torch.no_grad``, adapters disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .floor import InputGrad
from .spec import Workload

MODES: tuple[str, ...] = ("full", "lora", "frozen", "forward")

__all__ = ["MODES", "ModeConfig", "InputGrad", "switch_mode", "full_parameters"]


@dataclass
class ModeConfig:
    """The result of switching a workload into a mode."""

    name: str
    trainable: list[nn.Parameter]
    backward: bool  # does the step run backward?
    batch: Any  # the batch this mode feeds (frozen mode may mark float inputs as needing grad)


def full_parameters(workload: Workload) -> list[nn.Parameter]:
    """What the full mode trains: every parameter but the adapters' and those that never run."""
    adapters = workload.adapters
    skip = {id(p) for p in adapters.parameters()} | {id(p) for p in adapters.inactive}
    return [p for p in workload.model.parameters() if id(p) not in skip]


def switch_mode(workload: Workload, mode: str, input_grad: InputGrad) -> ModeConfig:
    """Put the workload's model into ``mode`` (in place) and return what its step needs.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    model, adapters = workload.model, workload.adapters
    adapters.set_enabled(mode == "lora")  # PEFT toggles requires_grad here; we set it below
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    input_grad.active = False
    batch = workload.batch
    if mode == "full":
        trainable = full_parameters(workload)
    elif mode == "lora":
        trainable = adapters.trainable_parameters()
    else:
        trainable = []
    for p in trainable:
        p.requires_grad_(True)
    if mode == "frozen":
        input_grad.active = bool(input_grad.modules)
        if input_grad.float_inputs or not input_grad.modules:
            batch = input_grad.grad_batch(batch)
    model.train(True)  # the same ops in every mode; "forward" differs only by no_grad
    return ModeConfig(name=mode, trainable=trainable, backward=mode != "forward", batch=batch)
