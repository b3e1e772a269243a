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

Variant modes (``workload/variants.py``: ``no-dropout``, ``fold-scale``, ``upper-half``,
``rank-xN``) are the ``lora`` mode with one change, applied on entry and undone on exit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from ..names import BASE_MODES
from .floor import InputGrad
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


__all__ = ["MODES", "ModeConfig", "InputGrad", "switch_mode", "full_parameters", "leave_variant", "mode_kind"]


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
        trainable = full_parameters(workload)
    elif kind == "lora":
        trainable = adapters.trainable_parameters()
    else:
        trainable = []
    for p in trainable:
        p.requires_grad_(True)
    if kind == "frozen" or (variant is not None and variant.input_grad):
        input_grad.active = bool(input_grad.modules)
        if input_grad.float_inputs or not input_grad.modules:
            batch = input_grad.grad_batch(batch)
    model.train(True)  # the same ops in every mode; "forward" differs only by no_grad
    return ModeConfig(name=mode, trainable=trainable, backward=kind != "forward", batch=batch)
