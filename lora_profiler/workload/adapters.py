"""Find LoRA adapters in a model by protocol, what the adapter library trains, and switch them.

A module is an adapter because of what it has, not what it subclasses:

- ``builtin``  — our ``LoRALinear``.
- ``peft``     — ``base_layer`` plus ``lora_A``/``lora_B`` ``ModuleDict``s (PEFT's ``LoraLayer``:
  linear, GPT-2 ``Conv1D``, conv and, through ``lora_embedding_A``/``_B``, embedding layers;
  DoRA adds a ``lora_magnitude_vector`` module).
- ``torchtune``— ``lora_a``/``lora_b`` submodules and a ``disabled`` flag (torchtune's
  ``LoRALinear``; ``DoRALinear`` adds a ``magnitude`` parameter; the base weight is a parameter
  of the layer itself, not a submodule).

The lora mode trains what the library trains: for PEFT every parameter that requires grad when
the model is found (captured here, once, before any mode touches ``requires_grad``): LoRA A/B,
DoRA magnitudes, ``bias="lora_only"``/``"all"`` biases, ``modules_to_save`` copies; for
torchtune its ``adapter_params()`` protocol; for ours A and B. PEFT adapter types other than LoRA
(IA3, LoHa, LoKr, AdaLoRA, prompt and prefix tuning, ...) are recorded as unsupported: their
layers are switched with the others and their trainable set is kept, but no layer is broken down.

Adapters are disabled (never merged or deleted) for the modes that must not run them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from .lora import LoRALinear


@dataclass(frozen=True)
class AdapterPart:
    """One adapted layer and its parts (any part may be None when the layer has no such module).

    ``lora_A``/``lora_B`` are modules; for PEFT's LoRA on an embedding they are the
    ``lora_embedding_A``/``_B`` ``ParameterDict``s (never called as modules). ``params`` are the
    layer's own adapter parameters (A, B and DoRA's magnitude) of its active adapter.
    """

    path: str
    layer: nn.Module
    base: Optional[nn.Module]
    dropout: Optional[nn.Module]
    lora_A: nn.Module
    lora_B: nn.Module
    kind: str = "lora"  # lora | dora
    rank: Optional[int] = None
    alpha: Optional[float] = None
    scaling: Optional[float] = None
    base_type: str = ""  # the adapted layer's type: Linear, Conv1D, Embedding, Conv2d, ...
    magnitude: Optional[nn.Module] = None  # PEFT's DoRA magnitude module (torchtune: in params)
    params: tuple = ()

    def parameters(self) -> list[nn.Parameter]:
        """This layer's adapter parameters (A, B, DoRA magnitude)."""
        if self.params:
            return list(self.params)
        return [p for mod in (self.lora_A, self.lora_B) for p in mod.parameters()]

    def facts(self) -> dict:
        return {"path": self.path, "kind": self.kind, "rank": self.rank, "alpha": self.alpha,
                "scaling": self.scaling, "base_type": self.base_type}


@dataclass
class Adapters:
    """The adapters of a model: where they came from, the adapted layers, what trains.

    Attributes:
        source: builtin | peft | torchtune.
        layers: the adapted layers.
        rank, alpha, dropout: the layers' common value (None when the layers differ).
        targets: the patterns our injection used (empty for a library's adapters).
        adapter_params: parameters that exist only because of the adapters (every PEFT adapter's
            A/B/magnitude, other tuner layers' weights, prompt encoders); None: the layers' own.
        trainable: what the library trains in the lora mode; None: ``adapter_params``.
        inactive: parameters that never run (the frozen originals PEFT keeps beside its
            ``modules_to_save`` copies): trainable in no mode.
        extra_trainable: parameters of ``trainable`` that are not adapter parameters (biases,
            ``modules_to_save`` copies), ``{module path: count}``.
        other_layers: tuner layers of unsupported kinds (switched on and off with the rest).
        unsupported: adapter kinds found that are not broken down (e.g. ``["ia3"]``).
        config: the library's adapter settings (PEFT's LoraConfig fields that matter here).
        notes: what a reader should know about these adapters.
    """

    source: str  # builtin | peft | torchtune
    layers: list[AdapterPart] = field(default_factory=list)
    rank: Optional[int] = None
    alpha: Optional[float] = None
    dropout: Optional[float] = None
    targets: list[str] = field(default_factory=list)
    adapter_params: Optional[list[nn.Parameter]] = None
    trainable: Optional[list[nn.Parameter]] = None
    inactive: list[nn.Parameter] = field(default_factory=list)
    extra_trainable: dict[str, int] = field(default_factory=dict)
    other_layers: list[nn.Module] = field(default_factory=list)
    prompt_model: Optional[nn.Module] = None  # PEFT prompt-learning model: its forward is switched
    unsupported: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.layers]

    def parameters(self) -> list[nn.Parameter]:
        """The adapter parameters (A, B, DoRA magnitudes, ...), each once: never trained by the
        full mode."""
        if self.adapter_params is not None:
            return list(self.adapter_params)
        return _unique(p for part in self.layers for p in part.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the lora mode trains: the adapter library's own trainable set."""
        return list(self.trainable) if self.trainable is not None else self.parameters()

    def set_enabled(self, enabled: bool) -> None:
        """Run (True) or skip (False) the adapter path in every adapted layer."""
        for part in self.layers:
            layer = part.layer
            if self.source == "peft":
                layer.enable_adapters(enabled)
            else:
                layer.disabled = not enabled
        for layer in self.other_layers:
            layer.enable_adapters(enabled)
        if self.prompt_model is not None:  # what PEFT's disable_adapter() does for prompt learning
            if enabled:
                self.prompt_model.__dict__.pop("forward", None)
            else:
                self.prompt_model.forward = self.prompt_model.base_model.forward

    def facts(self) -> dict:
        """The ``adapters`` part of facts.json."""
        return {
            "source": self.source, "modules": self.paths, "count": len(self.layers),
            "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
            "targets": self.targets,
            "trainable_params": int(sum(p.numel() for p in self.trainable_parameters())),
            "adapter_params": int(sum(p.numel() for p in self.parameters())),
            "extra_trainable": dict(self.extra_trainable),
            "inactive_params": int(sum(p.numel() for p in self.inactive)),
            "kinds": dict(Counter(p.kind for p in self.layers)),
            "base_types": dict(Counter(p.base_type for p in self.layers)),
            "rank_summary": _summary([p.rank for p in self.layers]),
            "alpha_summary": _summary([p.alpha for p in self.layers]),
            "scaling_summary": _summary([p.scaling for p in self.layers]),
            "layers": [p.facts() for p in self.layers],
            "unsupported": list(self.unsupported),
            "config": self.config,
        }


def _unique(params) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def _summary(values: list) -> Optional[dict]:
    """min/max/distinct counts of per-layer values (None when there are none)."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    counts = Counter(vals)
    return {"min": min(vals), "max": max(vals), "uniform": len(counts) == 1,
            "counts": {f"{v:g}": n for v, n in sorted(counts.items())}}


def _mro_names(module: nn.Module) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


def _active_name(layer: nn.Module, *mappings: Any) -> Optional[str]:
    """Name of PEFT's first active adapter present in one of ``mappings``."""
    present = [k for m in mappings if isinstance(m, (nn.ModuleDict, nn.ParameterDict)) for k in m.keys()]
    if not present:
        return None
    for name in list(getattr(layer, "active_adapters", None) or []) + present:
        if name in present:
            return name
    return None


def _float_or_none(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _peft_part(path: str, module: nn.Module) -> Optional[AdapterPart]:
    emb_a, emb_b = getattr(module, "lora_embedding_A", None), getattr(module, "lora_embedding_B", None)
    name = _active_name(module, module.lora_A, emb_a)
    if name is None:
        return None
    base = module.base_layer
    while hasattr(base, "base_layer"):  # nested PEFT wrappers: the innermost module is the base
        base = base.base_layer
    drop = getattr(module, "lora_dropout", None)
    drop = drop[name] if isinstance(drop, nn.ModuleDict) and name in drop else None
    if name in module.lora_A:
        lora_a, lora_b = module.lora_A[name], module.lora_B[name]
        params = [*lora_a.parameters(), *lora_b.parameters()]
    else:  # LoRA on an embedding: raw parameters, used by F.embedding and a matmul
        lora_a, lora_b = emb_a, emb_b
        params = [emb_a[name], emb_b[name]]
    magnitude = None
    dora = bool(getattr(module, "use_dora", {}).get(name, False))
    mags = getattr(module, "lora_magnitude_vector", None)
    if dora and isinstance(mags, nn.ModuleDict) and name in mags:
        magnitude = mags[name]
        params += list(magnitude.parameters())
    rank = getattr(module, "r", {}).get(name)
    return AdapterPart(
        path, module, module.base_layer, drop, lora_a, lora_b, kind="dora" if dora else "lora",
        rank=int(rank) if rank is not None else None,
        alpha=_float_or_none(getattr(module, "lora_alpha", {}).get(name)),
        scaling=_float_or_none(getattr(module, "scaling", {}).get(name)),
        base_type=type(base).__name__, magnitude=magnitude, params=tuple(_unique(params)))


def _as_part(path: str, module: nn.Module) -> Optional[tuple[str, AdapterPart]]:
    if isinstance(module, LoRALinear):
        return "builtin", AdapterPart(
            path, module, module.base_layer, module.lora_dropout, module.lora_A, module.lora_B,
            rank=module.rank, alpha=module.alpha, scaling=module.scaling,
            base_type=type(module.base_layer).__name__)
    if hasattr(module, "base_layer") and isinstance(getattr(module, "lora_A", None), nn.ModuleDict):
        part = _peft_part(path, module)
        return ("peft", part) if part is not None else None
    lora_a, lora_b = getattr(module, "lora_a", None), getattr(module, "lora_b", None)
    if isinstance(lora_a, nn.Module) and isinstance(lora_b, nn.Module) and hasattr(module, "disabled"):
        drop = getattr(module, "dropout", None)
        mag = getattr(module, "magnitude", None)
        params = [*lora_a.parameters(), *lora_b.parameters()]
        if isinstance(mag, nn.Parameter):
            params.append(mag)
        rank = getattr(module, "rank", None)
        alpha = _float_or_none(getattr(module, "alpha", None))
        rank = int(rank) if rank is not None else _rank_of_weight(lora_a)
        return "torchtune", AdapterPart(
            path, module, None, drop if isinstance(drop, nn.Module) else None, lora_a, lora_b,
            kind="dora" if isinstance(mag, nn.Parameter) else "lora", rank=rank, alpha=alpha,
            scaling=alpha / rank if alpha is not None and rank else None, base_type="Linear",
            params=tuple(_unique(params)))
    return None


def _rank_of_weight(lora_a: nn.Module) -> Optional[int]:
    w = getattr(lora_a, "weight", None)
    return int(w.shape[0]) if w is not None and w.dim() == 2 else None


def _common(values: list):
    """The value every layer shares, else None."""
    distinct = set(values)
    return values[0] if len(distinct) == 1 else None


def _peft_model(model: nn.Module) -> Optional[nn.Module]:
    """The PeftModel (root or nested), found by its ``peft_config`` dict and ``base_model``."""
    for module in model.modules():
        if isinstance(getattr(module, "peft_config", None), dict) and hasattr(module, "base_model") \
                and "PeftModel" in _mro_names(module):
            return module
    return None


def _tuner_kind(module: nn.Module) -> str:
    parts = type(module).__module__.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["peft", "tuners"] else type(module).__name__


def _peft_config_facts(peft_model: Optional[nn.Module]) -> tuple[dict, Optional[Any]]:
    if peft_model is None:
        return {}, None
    name = getattr(peft_model, "active_adapter", None)
    configs = peft_model.peft_config
    cfg = configs.get(name) if isinstance(name, str) else next(iter(configs.values()), None)
    if cfg is None:
        return {}, None
    kind = getattr(getattr(cfg, "peft_type", None), "value", str(getattr(cfg, "peft_type", "")))
    out = {"peft_type": str(kind), "adapter_name": name}
    for key in ("r", "lora_alpha", "lora_dropout", "use_dora", "use_rslora", "bias",
                "modules_to_save", "rank_pattern", "alpha_pattern", "target_modules",
                "layers_to_transform", "num_virtual_tokens"):
        if hasattr(cfg, key):
            value = getattr(cfg, key)
            if isinstance(value, (set, frozenset, tuple)):
                value = sorted(value)
            if value is None or isinstance(value, (bool, int, float, str, list, dict)):
                out[key] = value
    return out, cfg


def _peft_extras(model: nn.Module, adapters: Adapters, part_modules: set[int]) -> None:
    """PEFT: the trainable set as built, the never-run originals, unsupported tuner layers."""
    peft_model = _peft_model(model)
    adapters.config, cfg = _peft_config_facts(peft_model)
    adapter_params: list[nn.Parameter] = []
    for part in adapters.layers:  # every adapter of the layer, active or not
        adapter_params += [p for n, p in part.layer.named_parameters() if not n.startswith("base_layer.")]
    kinds = []
    for module in model.modules():
        if "BaseTunerLayer" in _mro_names(module) and id(module) not in part_modules:
            adapters.other_layers.append(module)  # IA3, LoHa, LoKr, AdaLoRA, ...
            kinds.append(_tuner_kind(module))
            adapter_params += [p for n, p in module.named_parameters() if not n.startswith("base_layer.")]
    if cfg is not None and getattr(cfg, "is_prompt_learning", False):
        kinds.append(adapters.config.get("peft_type", "prompt learning").lower())
        adapters.prompt_model = peft_model
        adapter_params += list(getattr(peft_model, "prompt_encoder", nn.ModuleDict()).parameters())
    elif cfg is not None and adapters.config.get("peft_type", "LORA") != "LORA" and not kinds:
        kinds.append(adapters.config["peft_type"].lower())
    adapters.unsupported = sorted(set(kinds))
    if adapters.unsupported:
        adapters.notes.append(
            f"PEFT adapter type(s) {', '.join(adapters.unsupported)} are not broken down (only LoRA "
            "and DoRA layers are): the lora mode runs the PEFT model as built and trains what PEFT "
            "marked trainable; the other modes switch these adapters off where PEFT can")
    adapters.adapter_params = _unique(adapter_params)
    adapters.trainable = _unique(p for p in model.parameters() if p.requires_grad)

    # The frozen original PEFT keeps beside each modules_to_save copy never runs.
    inside: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        inside.setdefault(id(p), []).append(n)
    originals = []
    for path, module in model.named_modules():
        if hasattr(module, "modules_to_save") and isinstance(getattr(module, "original_module", None), nn.Module):
            prefix = f"{path}.original_module." if path else "original_module."
            for p in module.original_module.parameters():
                if all(n.startswith(prefix) for n in inside.get(id(p), [])):
                    originals.append(p)
    adapters.inactive = _unique(originals)
    if originals:
        adapters.notes.append(
            f"modules_to_save: {sum(p.numel() for p in adapters.inactive):,} parameters of the "
            "original modules never run (PEFT runs its trainable copies in every mode); no mode "
            "trains them")


def _torchtune_trainable(model: nn.Module, parts: list[AdapterPart]) -> list[nn.Parameter]:
    """torchtune's ``get_adapter_params`` protocol: each module's ``adapter_params()`` names."""
    found = []
    for module in model.modules():
        names = getattr(module, "adapter_params", None)
        if callable(names):
            wanted = set(names())
            found += [p for n, p in module.named_parameters() if n in wanted]
    return _unique(found) if found else _unique(p for part in parts for p in part.parameters())


def _extra_trainable(model: nn.Module, adapters: Adapters) -> dict[str, int]:
    adapter_ids = {id(p) for p in adapters.parameters()}
    trainable_ids = {id(p) for p in adapters.trainable_parameters()}
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        if id(p) in trainable_ids and id(p) not in adapter_ids:
            path = name.rpartition(".")[0]
            out[path] = out.get(path, 0) + p.numel()
    return out


def find_adapters(model: nn.Module) -> Optional[Adapters]:
    """Adapters already in ``model``, or None when it has none.

    Call it once when the model is built: PEFT's trainable set is read from ``requires_grad``.

    Raises:
        ValueError: when one model mixes adapter kinds (builtin, PEFT, torchtune).
    """
    found: list[tuple[str, AdapterPart]] = []
    for path, module in model.named_modules():
        hit = _as_part(path, module)
        if hit is not None:
            found.append(hit)
    peft_model = _peft_model(model)
    has_tuners = any("BaseTunerLayer" in _mro_names(m) for m in model.modules())
    if not found and peft_model is None and not has_tuners:
        return None
    sources = sorted({s for s, _ in found} | ({"peft"} if peft_model is not None or has_tuners else set()))
    if len(sources) > 1:
        raise ValueError(f"the model mixes adapter kinds {sources}; use one")
    parts = [p for _, p in found]
    adapters = Adapters(source=sources[0], layers=parts)
    if parts:
        adapters.rank = _common([p.rank for p in parts])
        adapters.alpha = _common([p.alpha for p in parts])
        adapters.dropout = _common([float(getattr(p.dropout, "p", 0.0)) for p in parts])
    if adapters.source == "peft":
        _peft_extras(model, adapters, {id(p.layer) for p in parts})
    elif adapters.source == "torchtune":
        adapters.trainable = _torchtune_trainable(model, parts)
    adapters.extra_trainable = _extra_trainable(model, adapters)
    return adapters
