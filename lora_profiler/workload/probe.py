"""A dry forward of the step's loss under ``torch.no_grad``, watching every module.

Run once when a workload is built. It tells what the model's structure alone cannot:

- which modules actually run, in call order (a module whose parent reads its ``.weight``
  directly — ``nn.MultiheadAttention.out_proj`` — never runs, so LoRA must not wrap it; T5's
  ``shared`` embedding never runs, its encoder and decoder ``embed_tokens`` do);
- which ``nn.Embedding`` modules read a tensor of the batch (the input embeddings the frozen
  floor starts from);
- which modules produce the model's output (the output layer ``all-linear`` leaves alone);
- and, when the forward fails, in which module and for which loss.

The global RNG is left as it was (dropout in the dry forward draws from a forked generator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from .batch import iter_tensors


def storage_of(t: torch.Tensor) -> Optional[int]:
    """The data pointer of a tensor's storage (views share it), or None."""
    try:
        return t.untyped_storage().data_ptr() if t.numel() else None
    except (RuntimeError, NotImplementedError):
        return None


@dataclass(frozen=True)
class Probe:
    """What one dry forward saw.

    Attributes:
        order: paths of the modules that ran, in first-call order ("" is the model itself).
        embeddings_fed: path of every ``nn.Embedding`` that ran -> True when its input was (a
            view of) a tensor of the batch.
        output_modules: paths of the modules whose output is (a view of) a tensor the model
            returned (its logits), innermost last.
        loss_shape: shape of what the loss function returned.
    """

    order: tuple[str, ...]
    embeddings_fed: dict[str, bool] = field(default_factory=dict)
    output_modules: tuple[str, ...] = ()
    loss_shape: Optional[tuple[int, ...]] = None

    def __post_init__(self):
        object.__setattr__(self, "_ran", frozenset(self.order))

    def ran(self, path: str) -> bool:
        """Did the module at ``path`` run?"""
        return path in self._ran


class ProbeError(RuntimeError):
    """The dry forward raised. ``module`` is the innermost module that was running (None when
    the error came from the loss function's own code)."""

    def __init__(self, exc: BaseException, module: Optional[str]):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        super().__init__(f"{type(exc).__name__}: {first}")
        self.exc = exc
        self.module = module


def probe_forward(model: nn.Module, batch: Any, loss_fn: Callable[[nn.Module, Any], Any],
                  device: Optional[torch.device] = None) -> Probe:
    """Run ``loss_fn(model, batch)`` once under ``torch.no_grad`` (train mode, as the steps run)
    with hooks on every module.

    Raises:
        ProbeError: the forward or the loss raised; names the innermost running module.
    """
    names: dict[int, str] = {}
    for path, module in model.named_modules():
        names.setdefault(id(module), path)
    batch_storages = {s for _, t in iter_tensors(batch) if (s := storage_of(t)) is not None}
    order: list[str] = []
    seen: set[int] = set()
    stack: list[str] = []
    fed: dict[str, bool] = {}
    outputs: dict[str, list[torch.Tensor]] = {}  # path -> its last output tensors (kept alive)
    root_out: list[Any] = []

    def pre(module, args):
        path = names[id(module)]
        stack.append(path)
        if id(module) not in seen:
            seen.add(id(module))
            order.append(path)
        if isinstance(module, nn.Embedding):
            hit = any(storage_of(t) in batch_storages for _, t in iter_tensors(list(args)))
            fed[path] = fed.get(path, False) or hit

    def post(module, args, output):
        if stack:
            stack.pop()
        if module is model:
            root_out.append(output)
        elif isinstance(output, torch.Tensor):
            outputs[names[id(module)]] = [output]

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    was_training = model.training
    devices = [device] if device is not None and device.type == "cuda" else []
    try:
        model.train(True)
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            loss = loss_fn(model, batch)
    except Exception as exc:
        raise ProbeError(exc, stack[-1] if stack else None) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    returned = {s for out in root_out for _, t in iter_tensors(out, "out") if (s := storage_of(t)) is not None}
    produced = [p for p in order if any(storage_of(t) in returned for t in outputs.get(p, []))]
    return Probe(order=tuple(order), embeddings_fed=fed, output_modules=tuple(produced),
                 loss_shape=tuple(loss.shape) if isinstance(loss, torch.Tensor) else None)
