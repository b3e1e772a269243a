"""Replays of the loop's batches beside the Trainer: the frozen floor and full fine-tuning.

The floor is the ``frozen`` mode of ``trace`` (``workload.modes.switch_mode``): the adapters
disabled (``find_adapters(...).set_enabled(False)``: PEFT's layers, torchtune's, ours), every
weight frozen, the outputs of the input embeddings that read the batch requiring grad
(``workload.floor``, found by a dry forward on the loop's own batch), so backward still runs
through the whole network — and no optimizer. It runs the micro-batches of the loop's step
through the trainer's own ``compute_loss`` (its autocast, label smoothing, ``num_items_in_batch``)
on the model the loop ran (compiled or not) with ``capture.step.StepRunner``: the same phases,
scopes and page-fault counts as ``trace``. The caller snapshots and restores the run around it
(``state.RunState``).

Full fine-tuning runs on a deep copy of the model (adapters disabled, every other weight
trainable) with an optimizer of the trainer's optimizer's class and settings, when the memory it
needs is free (``full_memory``).
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import nn

from ..capture.step import StepRunner
from ..workload.adapters import Adapters, find_adapters
from ..workload.batch import describe_batch, main_input
from ..workload.floor import Floor, InputGrad, floor_with_notes
from ..workload.modes import switch_mode
from ..workload.probe import probe_forward
from ..workload.spec import Workload
from .loop import Micro, _shallow_copy


class TrainerLoss:
    """``loss_fn(model, micro)`` of a replay: the trainer's ``compute_loss`` (the original, not
    the clock's wrapper) under its ``compute_loss_context_manager`` on one micro-batch. The
    workload's own model runs as the loop ran it (``micro.model``: compiled, wrapped); another
    model (the full fine-tuning copy) runs itself."""

    def __init__(self, trainer: Any, compute_loss: Any):
        self.trainer = trainer
        self.compute_loss = compute_loss

    def __call__(self, model: nn.Module, micro: Micro) -> torch.Tensor:
        run = micro.model if model is self.trainer.model and micro.model is not None else model
        with self.trainer.compute_loss_context_manager():
            return self.compute_loss(run, _shallow_copy(micro.inputs), num_items_in_batch=micro.items)


def prepared(trainer: Any, micros: list[Micro]) -> list[Micro]:
    """The micro-batches as ``training_step`` feeds them (moved to the device, ...)."""
    return [Micro(trainer._prepare_inputs(_shallow_copy(m.inputs)), m.items, m.model) for m in micros]


def _jsonable_config(model: nn.Module) -> tuple[str, dict]:
    config = getattr(model, "config", None)
    d = config.to_dict() if hasattr(config, "to_dict") else {}
    arch = str(d.get("model_type", "custom")) if d else "custom"
    return arch, {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}


def trainer_workload(trainer: Any, adapters: Adapters, micro: Micro, loss: TrainerLoss) -> Workload:
    """The workload of the loop: the trainer's model, one of its micro-batches and its loss; the
    floor found by a dry forward on that batch (RNG kept, ``probe.probe_forward``)."""
    model = trainer.model
    device = torch.device(trainer.args.device)
    notes = list(adapters.notes)
    probe = probe_forward(model, micro.inputs, lambda m, b: loss(m, Micro(b, micro.items, None)), device)
    floor, floor_notes = floor_with_notes(model, probe, micro.inputs, adapters.paths)
    notes += floor_notes
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    arch, config = _jsonable_config(base)
    found = main_input(micro.inputs)
    shape = list(found[1].shape) if found else []
    return Workload(
        name=type(base).__name__, source="trainer", path=None, arch=arch, config=config, model=model,
        batch=micro.inputs, loss_fn=loss, adapters=adapters,
        batch_size=int(shape[0]) if shape else 1, seq_len=int(shape[1]) if len(shape) > 1 else 1,
        device=device, notes=notes, floor=floor, batch_info=describe_batch(micro.inputs), probe=probe)


class FloorReplay:
    """The frozen floor on the loop's micro-batches (see the module doc).

    Args:
        workload: ``trainer_workload``'s.
        input_grad: the floor's hooks (installed on the workload's model).
    """

    def __init__(self, workload: Workload, input_grad: InputGrad):
        self.workload = workload
        self.input_grad = input_grad
        self.runner: Optional[StepRunner] = None

    def step(self, micros: list[Micro]) -> tuple[float, dict, dict]:
        """One floor step over ``micros`` (already ``prepared``).

        Returns:
            (loss, seconds per phase, page faults per phase).

        Raises:
            ModeFailure: the floor's forward or backward failed.
        """
        cfg = switch_mode(self.workload, "frozen", self.input_grad)
        if self.input_grad.float_inputs or not self.input_grad.modules:
            micros = [Micro(self.input_grad.grad_batch(m.inputs), m.items, m.model) for m in micros]
        if self.runner is None:
            self.runner = StepRunner(self.workload, cfg)
        self.runner.config = cfg
        try:
            loss, times = self.runner.step(batches=micros)
        finally:
            self.input_grad.active = False
        return loss, times, dict(self.runner.last_faults)


def _state_per_param(optimizer: Any) -> int:
    """Tensors of optimizer state per parameter (AdamW: 2), from its state or its class."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for state in getattr(inner, "state", {}).values():
        return sum(isinstance(v, torch.Tensor) and v.dim() > 0 for v in state.values())
    return 2


def available_bytes(device: torch.device) -> Optional[int]:
    """Free memory on ``device`` (CUDA: the driver's; CPU: MemAvailable), None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def full_memory(model: nn.Module, adapters: Optional[Adapters], optimizer: Any,
                device: torch.device, activation_bytes: int = 0) -> dict:
    """What full fine-tuning on a copy needs and what is free: ``{"need_bytes", "available_bytes",
    "fits"}``. Need: the copy's parameters, gradients and optimizer state of every weight that is
    not an adapter's, plus the step's saved activations (``activation_bytes``), with 20% spare."""
    skip = {id(p) for p in adapters.parameters()} if adapters is not None else set()
    params = list(dict.fromkeys(model.parameters()))
    total = sum(p.numel() * p.element_size() for p in params)
    trained = sum(p.numel() * p.element_size() for p in params if id(p) not in skip)
    need = int(1.2 * (total + trained * (1 + _state_per_param(optimizer)) + activation_bytes))
    free = available_bytes(device)
    return {"need_bytes": need, "available_bytes": free, "fits": free is None or need <= free}


def _like(optimizer: Any, params: list) -> torch.optim.Optimizer:
    """An optimizer of ``optimizer``'s class and settings over ``params`` (AdamW when the class
    cannot be built that way)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    try:
        return type(inner)(params, **dict(inner.defaults))
    except Exception:
        lr = inner.defaults.get("lr", 1e-5) if hasattr(inner, "defaults") else 1e-5
        return torch.optim.AdamW(params, lr=lr)


class FullReplay:
    """Full fine-tuning steps on a deep copy of the trainer's model (see the module doc)."""

    def __init__(self, workload: Workload, optimizer: Any):
        model = copy.deepcopy(workload.model)
        adapters = find_adapters(model)
        self.workload = Workload(
            name=workload.name, source=workload.source, path=None, arch=workload.arch, config=workload.config,
            model=model, batch=workload.batch, loss_fn=workload.loss_fn, adapters=adapters,
            batch_size=workload.batch_size, seq_len=workload.seq_len, device=workload.device,
            floor=Floor("none"), batch_info=workload.batch_info)
        self.input_grad = InputGrad(model, Floor("none"))
        cfg = switch_mode(self.workload, "full", self.input_grad)
        self.runner = StepRunner(self.workload, cfg)
        self.runner.optimizer = _like(optimizer, cfg.trainable)
        self.optimizer_class = type(self.runner.optimizer).__name__

    @property
    def model(self) -> nn.Module:
        return self.workload.model

    def step(self, micros: list[Micro]) -> tuple[float, dict, dict]:
        """One full fine-tuning step over ``micros`` (zero_grad, forward and backward per
        micro-batch, the optimizer): (loss, seconds per phase, page faults per phase)."""
        loss, times = self.runner.step(batches=[Micro(m.inputs, m.items, None) for m in micros])
        return loss, times, dict(self.runner.last_faults)

    def release(self) -> None:
        """Free the copy, its gradients and optimizer state."""
        self.runner.release()
        self.input_grad.remove()
        self.workload.model = None
