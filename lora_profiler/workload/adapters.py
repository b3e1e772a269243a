"""Find LoRA adapters in a model by protocol, and switch them on and off.

A module is an adapter because of what it has, not what it subclasses:

- ``builtin``  — our ``LoRALinear``.
- ``peft``     — ``base_layer`` plus ``lora_A``/``lora_B`` ``ModuleDict``s (PEFT's ``LoraLayer``).
- ``torchtune``— ``lora_a``/``lora_b`` submodules and a ``disabled`` flag (torchtune's
  ``LoRALinear``; the base weight is a parameter of the layer itself, not a submodule).

Adapters are disabled (never merged or deleted) for the modes that must not run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from .lora import LoRALinear


@dataclass(frozen=True)
class AdapterPart:
    """One adapted layer and its parts (any part may be None when the layer has no such module)."""

    path: str
    layer: nn.Module
    base: Optional[nn.Module]
    dropout: Optional[nn.Module]
    lora_A: nn.Module
    lora_B: nn.Module


@dataclass
class Adapters:
    """The adapters of a model: where they came from, and the adapted layers."""

    source: str  # builtin | peft | torchtune
    layers: list[AdapterPart] = field(default_factory=list)
    rank: Optional[int] = None
    alpha: Optional[float] = None
    dropout: Optional[float] = None
    targets: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.layers]

    def parameters(self) -> list[nn.Parameter]:
        """The trainable adapter parameters (lora_A and lora_B of every layer), each once."""
        seen: dict[int, nn.Parameter] = {}
        for part in self.layers:
            for mod in (part.lora_A, part.lora_B):
                for p in mod.parameters():
                    seen.setdefault(id(p), p)
        return list(seen.values())

    def set_enabled(self, enabled: bool) -> None:
        """Run (True) or skip (False) the adapter path in every adapted layer."""
        for part in self.layers:
            layer = part.layer
            if self.source == "peft":
                layer.enable_adapters(enabled)
            else:
                layer.disabled = not enabled


def _active(mapping: nn.Module, layer: nn.Module) -> Optional[nn.Module]:
    """The module of PEFT's first active adapter in a ModuleDict (None when absent)."""
    if not isinstance(mapping, nn.ModuleDict) or len(mapping) == 0:
        return None
    names = getattr(layer, "active_adapters", None) or list(mapping.keys())
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


def _as_part(path: str, module: nn.Module) -> Optional[tuple[str, AdapterPart]]:
    if isinstance(module, LoRALinear):
        return "builtin", AdapterPart(path, module, module.base_layer, module.lora_dropout,
                                      module.lora_A, module.lora_B)
    if hasattr(module, "base_layer") and isinstance(getattr(module, "lora_A", None), nn.ModuleDict):
        lora_a = _active(module.lora_A, module)
        lora_b = _active(getattr(module, "lora_B", None), module)
        if lora_a is None or lora_b is None:
            return None
        drop = _active(getattr(module, "lora_dropout", None), module)
        return "peft", AdapterPart(path, module, module.base_layer, drop, lora_a, lora_b)
    lora_a, lora_b = getattr(module, "lora_a", None), getattr(module, "lora_b", None)
    if isinstance(lora_a, nn.Module) and isinstance(lora_b, nn.Module) and hasattr(module, "disabled"):
        drop = getattr(module, "dropout", None)
        return "torchtune", AdapterPart(path, module, None,
                                        drop if isinstance(drop, nn.Module) else None, lora_a, lora_b)
    return None


def _rank_of(part: AdapterPart) -> Optional[int]:
    w = getattr(part.lora_A, "weight", None)
    return int(w.shape[0]) if w is not None and w.dim() == 2 else None


def find_adapters(model: nn.Module) -> Optional[Adapters]:
    """Adapters already in ``model``, or None when it has none.

    Raises:
        ValueError: when one model mixes adapter kinds (builtin, PEFT, torchtune).
    """
    found: list[tuple[str, AdapterPart]] = []
    for path, module in model.named_modules():
        hit = _as_part(path, module)
        if hit is not None:
            found.append(hit)
    if not found:
        return None
    sources = sorted({s for s, _ in found})
    if len(sources) > 1:
        raise ValueError(f"the model mixes adapter kinds {sources}; use one")
    parts = [p for _, p in found]
    adapters = Adapters(source=sources[0], layers=parts, rank=_rank_of(parts[0]))
    first = parts[0].layer
    if adapters.source == "builtin":
        adapters.alpha = first.alpha
        adapters.dropout = getattr(first.lora_dropout, "p", 0.0)
    elif adapters.source == "peft":
        name = next(iter(first.lora_A.keys()))
        adapters.alpha = float(getattr(first, "lora_alpha", {}).get(name, float("nan")))
        adapters.dropout = float(getattr(parts[0].dropout, "p", 0.0))
    else:
        adapters.alpha = float(getattr(first, "alpha", float("nan")))
        adapters.dropout = float(getattr(parts[0].dropout, "p", 0.0))
    return adapters
