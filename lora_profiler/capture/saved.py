"""Account the bytes autograd saves for backward, per module and per category.

Uses ``torch.autograd.graph.saved_tensors_hooks``: every tensor saved during the forward passes
through the pack hook, where the innermost running module (from ``ModuleHooks.stack``) is its
saver. Each storage counts once, for the first module that saved it: the q, k and v adapters
saving the same ``x`` as the base layers add nothing. Parameters (and views of them) are not
activations and are skipped. Saved storages stay alive until backward, so their addresses are
unique for the whole forward.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torch import nn

from .hooks import ModuleHooks

CATEGORIES = ("base", "adapter", "other")


def measure_saved(model: nn.Module, hooks: ModuleHooks, forward: Callable[[], object]) -> dict:
    """Run ``forward`` (which must build the autograd graph) and count what it saves.

    Args:
        model: the model (its parameters are excluded from the count).
        hooks: the installed module hooks; tracking is switched on for the call.
        forward: runs the forward and returns anything (e.g. the loss).

    Returns:
        ``{"total_bytes", "by_category": {base, adapter, other}, "by_module": {path: bytes},
        "tensors": n}`` — bytes of distinct storages saved for backward.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[tuple[int, str], tuple[str, str, int]] = {}  # storage -> (module, category, bytes)

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # e.g. sparse or wrapper tensors
            return t
        ptr = storage.data_ptr()
        key = (ptr, str(t.device))
        if ptr and ptr not in params and key not in seen:
            path, cat = hooks.stack[-1] if hooks.stack else ("", "other")
            seen[key] = (path, cat, storage.nbytes())
        return t

    hooks.track = True
    hooks.stack.clear()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = forward()
    finally:
        hooks.track = False
        hooks.stack.clear()
    del result
    by_cat = dict.fromkeys(CATEGORIES, 0)
    by_module: dict[str, int] = defaultdict(int)
    for path, cat, nbytes in seen.values():
        by_cat[cat] += nbytes
        by_module[path or "<top>"] += nbytes
    return {
        "total_bytes": sum(by_cat.values()),
        "by_category": by_cat,
        "by_module": dict(sorted(by_module.items(), key=lambda kv: -kv[1])),
        "tensors": len(seen),
    }
