"""Leave a training run as it was: snapshot what a measurement beside the loop could change and
put it back exactly.

A replay of the loop's batches (the frozen floor, an accounting forward) runs the model outside
the Trainer. It draws random numbers (dropout), flips ``requires_grad``, the adapters' switches
and module train/eval flags, may update buffers (batch-norm statistics) and, through a trainer's
``compute_loss``, may append to its logged metrics (TRL's ``_metrics``). ``RunState`` records all
of that before and restores it after, so the training run continues as if it had not been
observed. Parameters and gradients are never copied (memory): a replay must not write them, and
``restore`` reports any whose version counter moved.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..workload.adapters import Adapters

_MISSING = object()


def rng_state() -> dict:
    """Every global random state a step draws from: Python, numpy, torch CPU and CUDA."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None}


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def _adapter_switches(adapters: Optional[Adapters]) -> list:
    """(layer, kind, state) of every adapter switch: PEFT's ``_disable_adapters``, torchtune's and
    ours ``disabled``, a PEFT prompt-learning model's swapped ``forward``."""
    if adapters is None:
        return []
    out = []
    for layer in [p.layer for p in adapters.layers] + list(adapters.other_layers):
        if hasattr(layer, "_disable_adapters"):
            out.append((layer, "peft", bool(layer._disable_adapters)))
        elif hasattr(layer, "disabled"):
            out.append((layer, "flag", bool(layer.disabled)))
    if adapters.prompt_model is not None:
        out.append((adapters.prompt_model, "forward", adapters.prompt_model.__dict__.get("forward", _MISSING)))
    return out


class RunState:
    """A snapshot of a model (and its trainer) that ``restore`` puts back.

    Args:
        model: the model the replay runs (every parameter, buffer and submodule).
        adapters: its adapters (their on/off switches), or None.
        trainer: the trainer whose ``compute_loss`` the replay calls, or None: its attributes
            (rebound or added ones are put back) and logged metrics (``_metrics``, deep-copied).
    """

    def __init__(self, model: nn.Module, adapters: Optional[Adapters] = None, trainer: Any = None):
        self.rng = rng_state()
        params = list(dict.fromkeys(model.parameters()))
        self.flags = [(p, p.requires_grad) for p in params]
        self.grads = [(p, p.grad, p.grad._version if p.grad is not None else None) for p in params]
        self.versions = [(p, p._version) for p in params]
        self.modes = [(m, m.training) for m in model.modules()]
        self.buffers = [(b, b.detach().clone(), b._version) for b in dict.fromkeys(model.buffers())]
        self.switches = _adapter_switches(adapters)
        self.trainer = trainer
        if trainer is not None:
            self.attrs = dict(vars(trainer))
            self.trainer_state = dict(vars(trainer.state)) if hasattr(trainer, "state") else None
            metrics = getattr(trainer, "_metrics", None)
            self.metrics = copy.deepcopy(metrics) if metrics is not None else None

    def restore(self) -> list[str]:
        """Put everything back.

        Returns:
            What could not be restored, one line each (empty: everything is as it was).
        """
        problems = []
        for layer, kind, state in self.switches:
            if kind == "peft" and bool(layer._disable_adapters) != state:
                layer.enable_adapters(not state)
            elif kind == "flag":
                layer.disabled = state
            elif kind == "forward":
                if state is _MISSING:
                    layer.__dict__.pop("forward", None)
                else:
                    layer.forward = state
        for p, flag in self.flags:  # after the switches: PEFT's enable_adapters sets requires_grad
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for p, grad, version in self.grads:
            p.grad = grad
            if grad is not None and grad._version != version:
                problems.append(f"a gradient of shape {list(p.shape)} was written during the replay")
        for m, flag in self.modes:
            m.training = flag
        for b, saved, version in self.buffers:
            if b._version != version:
                with torch.no_grad():
                    b.copy_(saved)
        moved = sum(p._version != v for p, v in self.versions)
        if moved:
            problems.append(f"{moved} parameter(s) were written in place during the replay")
        if self.trainer is not None:
            attrs = vars(self.trainer)
            for key in [k for k in attrs if k not in self.attrs]:
                del attrs[key]
            for key, value in self.attrs.items():
                if attrs.get(key, _MISSING) is not value:
                    attrs[key] = value
            if self.trainer_state is not None:
                vars(self.trainer.state).update(self.trainer_state)
            if self.metrics is not None:
                self.trainer._metrics = self.metrics
                self.metrics = copy.deepcopy(self.metrics)  # restore() may run again
        set_rng_state(self.rng)
        return problems
