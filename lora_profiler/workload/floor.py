"""The frozen floor: what requires grad when every weight is frozen, so backward still runs.

The floor is made of the outputs of every input embedding that runs in the step: each
``nn.Embedding`` that reads a tensor of the batch, and every other ``nn.Embedding`` that runs
and shares its weight (T5's decoder ``embed_tokens``, fed the shifted labels, shares ``shared``'s
weight; ``shared`` itself never runs). Position and relative-position embeddings, fed indices the
model makes itself, are not input embeddings: backward need not reach them. A model with no
embedding reading the batch gets the floor on its floating-point inputs instead (labels
excepted). Both are found by the dry forward (``probe.py``), not by module order.

The floor is what LoRA cannot beat when its adapters reach the input side; when they adapt only
layers further in, LoRA's backward stops at the first adapted layer and can beat it
(``input_side_note``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from .batch import is_label, iter_tensors, with_grad_inputs
from .lora import linear_features
from .probe import Probe, storage_of


@dataclass
class Floor:
    """What the frozen mode makes require grad.

    Attributes:
        kind: ``embedding_outputs`` | ``float_inputs`` | ``none``.
        paths: the embedding modules whose output requires grad (call order).
        modules: the same modules.
        inputs: batch locations of the floating-point inputs that require grad.
    """

    kind: str
    paths: list[str] = field(default_factory=list)
    modules: list[nn.Module] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def facts(self) -> dict:
        return {"kind": self.kind, "modules": list(self.paths), "inputs": list(self.inputs)}


def _float_inputs(batch: Any) -> list[str]:
    return [w for w, t in iter_tensors(batch) if t.is_floating_point() and not is_label(w)]


def find_floor(model: nn.Module, probe: Probe, batch: Any) -> Floor:
    """The floor of ``model`` on ``batch``, from what its dry forward ran (see the module
    docstring)."""
    embeddings = {p: m for p, m in model.named_modules() if isinstance(m, nn.Embedding)}
    ran = [p for p in probe.order if p in embeddings]
    fed = [p for p in ran if probe.embeddings_fed.get(p)]
    weights = {id(embeddings[p].weight) for p in fed}
    storages = {storage_of(embeddings[p].weight) for p in fed}
    chosen = [p for p in ran if p in fed or id(embeddings[p].weight) in weights
              or storage_of(embeddings[p].weight) in storages]
    if chosen:
        return Floor("embedding_outputs", chosen, [embeddings[p] for p in chosen])
    inputs = _float_inputs(batch)
    if inputs:
        return Floor("float_inputs", inputs=inputs)
    if ran:  # embeddings fed by indices the model computes from the batch
        return Floor("embedding_outputs", ran, [embeddings[p] for p in ran])
    return Floor("none")


def every_embedding(model: nn.Module) -> Floor:
    """The floor without a dry forward: every ``nn.Embedding`` (those that run require grad),
    else every floating-point input."""
    found = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if found:
        return Floor("embedding_outputs", [p for p, _ in found], [m for _, m in found])
    return Floor("float_inputs")


def _is_compute(module: nn.Module) -> bool:
    """A layer with weights that backward must pass through: linear, conv, attention."""
    return (linear_features(module) is not None or isinstance(module, nn.modules.conv._ConvNd)
            or isinstance(module, nn.MultiheadAttention))


def input_side_note(model: nn.Module, probe: Probe, adapter_paths: list[str], floor: Floor) -> Optional[str]:
    """A note when layers with weights run before the first adapted layer: LoRA's backward
    stops there, the floor's reaches the input, so LoRA can beat the floor. None otherwise."""
    if not adapter_paths or floor.kind == "none":
        return None
    adapted = set(adapter_paths)
    first = next((i for i, p in enumerate(probe.order) if p in adapted), None)
    if first is None:
        return None
    modules = dict(model.named_modules())
    inside = tuple(p + "." for p in adapter_paths)
    before = [p for p in probe.order[:first]
              if p in modules and _is_compute(modules[p]) and not p.startswith(inside)]
    # keep the outermost of nested compute layers (MHA and its out_proj): one name per layer
    before = [p for p in before if not any(p.startswith(q + ".") for q in before if q != p)]
    if not before:
        return None
    shown = ", ".join(before[:4]) + (f" and {len(before) - 4} more" if len(before) > 4 else "")
    return (f"adapters do not cover the input side: {len(before)} layer(s) with weights run before "
            f"the first adapted layer {probe.order[first]!r} ({shown}); LoRA's backward stops there "
            "while the frozen floor's reaches the input, so LoRA can beat the floor")


def floor_with_notes(model: nn.Module, probe: Probe, batch: Any, adapter_paths: list[str]) -> tuple[Floor, list[str]]:
    """The floor (``find_floor``) and what a reader should know about it: that it has nothing
    to start from, or that LoRA can beat it (``input_side_note``)."""
    floor = find_floor(model, probe, batch)
    notes = []
    if floor.kind == "none":
        notes.append("the frozen floor has nothing to start from (no input embedding runs and the "
                     "batch has no floating-point input): the frozen mode's backward cannot run")
    side = input_side_note(model, probe, adapter_paths, floor)
    if side:
        notes.append(side)
    return floor, notes


class InputGrad:
    """Makes the floor require grad while ``active`` (the frozen mode).

    Args:
        model: the model.
        floor: what to make require grad (``Workload.floor``); None: every ``nn.Embedding``
            that runs, else the batch's floating-point inputs.

    Attributes:
        modules: the embeddings whose outputs require grad when active.
        module: the first of them (None when there is none).
        float_inputs: does the frozen mode mark the batch's float inputs as requiring grad?
    """

    def __init__(self, model: nn.Module, floor: Optional[Floor] = None):
        self.active = False
        self.floor = floor if floor is not None else every_embedding(model)
        self.modules: list[nn.Module] = list(self.floor.modules)
        self.module: Optional[nn.Module] = self.modules[0] if self.modules else None
        self.float_inputs = self.floor.kind == "float_inputs"
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]

    def _hook(self, module, args, output):
        if self.active and torch.is_grad_enabled() and isinstance(output, torch.Tensor) \
                and output.is_floating_point() and not output.requires_grad:
            return output.requires_grad_(True)
        return None

    def grad_batch(self, batch: Any) -> Any:
        """A copy of the batch whose floor inputs require grad."""
        return with_grad_inputs(batch, set(self.floor.inputs) if self.floor.inputs else None)

    def remove(self) -> None:
        """Uninstall the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
