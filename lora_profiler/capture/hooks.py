"""Module hooks: profiler scopes named after module paths, and the current module for accounting.

Every module's forward opens a ``torch.profiler.record_function`` scope (names in
docs/FORMAT.md) — but only while a profiler is running. The hooks are installed after the timed
steps (timed steps run without them) for the saved-tensor accounting and the profiled runs; the
profiler calibration measures what a hooked scope costs. The same hooks keep a stack of
(module path, category) that saved-tensor accounting reads to know who saved a tensor.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..names import adapter_scope, module_scope, phase_scope  # noqa: F401  (phase_scope re-exported)
from ..workload.adapters import Adapters
from ..workload.lora import LoRALinear


class ModuleHooks:
    """Installs forward pre/post hooks on every module of a model (containers and modules nested
    inside an adapter's part excepted: their work belongs to the part).

    Args:
        model: the model.
        adapters: its adapters; adapted layers and their parts get ``lp/adapter/...`` scopes.

    Attributes:
        track: when True the hooks maintain ``stack`` (saved-tensor accounting on).
        stack: innermost-last list of (module path, category) while a forward runs.
    """

    def __init__(self, model: nn.Module, adapters: Optional[Adapters]):
        self.track = False
        self.stack: list[tuple[str, str]] = []
        self._open: list[tuple[int, object]] = []  # (id(module), record_function) innermost last
        self._handles = []
        roles: dict[int, tuple[str, str]] = {}  # id(module) -> (scope name, category)
        inside_part: set[int] = set()  # modules nested inside an adapter part: no scope of their own
        for part in adapters.layers if adapters else []:
            layer_cat = "adapter" if part.base is not None else "base"  # torchtune: base ops sit in the layer
            roles[id(part.layer)] = (adapter_scope(part.path), layer_cat)
            if isinstance(part.layer, LoRALinear):
                part.layer.lp_scope = adapter_scope(part.path)
            for suffix, sub, cat in (("base", part.base, "base"), ("dropout", part.dropout, "adapter"),
                                     ("lora_A", part.lora_A, "adapter"), ("lora_B", part.lora_B, "adapter"),
                                     ("dora", part.magnitude, "adapter")):
                if sub is not None:
                    roles[id(sub)] = (adapter_scope(part.path, suffix), cat)
                    inside_part.update(id(m) for m in sub.modules() if m is not sub)
        self._lora_layers = [p.layer for p in (adapters.layers if adapters else [])
                             if isinstance(p.layer, LoRALinear)]
        for path, module in model.named_modules():
            if module is model or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
                continue
            if id(module) in inside_part and id(module) not in roles:
                continue  # its work (and saved tensors) belong to the part around it
            if id(module) in roles:
                name, cat = roles[id(module)]
            else:
                name, cat = module_scope(path), None
            self._handles.append(module.register_forward_pre_hook(self._pre(path, name, cat)))
            self._handles.append(module.register_forward_hook(self._post()))

    def _pre(self, path: str, name: Optional[str], category: Optional[str]) -> Callable:
        def hook(module, args):
            if name is not None and torch.autograd._profiler_enabled():
                rf = torch.profiler.record_function(name)
                rf.__enter__()
                self._open.append((id(module), rf))
            if self.track:
                parent = self.stack[-1][1] if self.stack else "other"
                cat = category or (parent if parent != "other" else "other")
                self.stack.append((path, cat))
        return hook

    def _post(self) -> Callable:
        def hook(module, args, output):
            if self._open and self._open[-1][0] == id(module):
                self._open.pop()[1].__exit__(None, None, None)
            if self.track and self.stack:
                self.stack.pop()
        return hook

    def reset(self) -> None:
        """Forget scopes a failed forward left open (its post hooks never ran)."""
        self._open.clear()
        self.stack.clear()

    def remove(self) -> None:
        """Uninstall every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for layer in self._lora_layers:
            layer.lp_scope = None
