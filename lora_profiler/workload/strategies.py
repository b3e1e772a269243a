"""Strategies: faster ways to fine-tune, run as modes beside full, LoRA and the frozen floor.

Each is a ``Variant`` (applied on entry, undone on exit, sharing the model and batch) that is
also profiled and attributed like LoRA:

- ``fused-lora``   every adapted layer's forward as one autograd Function (``fused``): the mask
  drawn as random bits, x·A computed once, the scale folded into the B GEMM that also adds into
  the base output, only the input, a byte mask and x·A saved, one backward node;
- ``lora-top:K``   adapters on the top K blocks only: backward stops below them;
- ``partial-top:K`` full fine-tuning of the top K blocks, everything else frozen, no adapters;
- ``lora-fa``      LoRA with A frozen (LoRA-FA): only B trains, A's gradient is never computed;
- ``partial-connections:F`` a random fraction F of each adapted layer's weight columns trained in
  place (PaCA-style, no adapters): backward saves only those columns of the input;
- ``lora-compiled`` the LoRA model under ``torch.compile`` (Inductor); the first steps compile,
  their time is reported apart (``describe``: ``compile_s``); where it cannot compile, the mode
  fails with the compiler's reason.
"""

from __future__ import annotations

import re
from typing import Optional

import torch
from torch import nn

from .fused import fused_lora
from .lora import LoRALinear, linear_features
from .variants import Undo, Variant, _set_layers_enabled, _trainable_without, block_index

STRATEGY_HELP = {
    "fused-lora": "LoRA with each adapted layer as one fused autograd Function",
    "lora-top:K": "adapters on the top K blocks only",
    "partial-top:K": "full fine-tuning of the top K blocks only",
    "lora-fa": "LoRA with A frozen (only B trains)",
    "partial-connections:F": "a random fraction F of each adapted layer's weight columns trained in place",
    "lora-compiled": "the LoRA model under torch.compile",
}


def _blocks(paths) -> list[int]:
    return sorted({b for b in (block_index(p) for p in paths) if b is not None})


class FusedLoRAStrategy(Variant):
    name = "fused-lora"
    summary = STRATEGY_HELP["fused-lora"]
    profiled = True

    def not_applicable(self, workload):
        ad = workload.adapters
        if not ad.layers:
            return "the model has no adapters"
        if ad.source == "torchtune":
            return "torchtune layers keep their own forward"
        for part in ad.layers:
            if getattr(part, "kind", "lora") != "lora":
                return f"{part.path} is a {part.kind} adapter: only plain LoRA layers are fused"
            if part.base is None or linear_features(part.base) is None:
                return f"{part.path}: only linear (or GPT-2 Conv1D) base layers are fused"
            if not isinstance(getattr(part.lora_A, "weight", None), torch.Tensor):
                return f"{part.path}: its adapter is not a pair of linear layers"
        return None

    def apply(self, workload) -> Undo:
        undo = []
        for part in workload.adapters.layers:
            layer = part.layer
            if isinstance(layer, LoRALinear):
                layer.fused = True
                undo.append(lambda layer=layer: setattr(layer, "fused", False))
            else:  # PEFT: the instance's forward, our fused path over PEFT's own weights
                layer.forward = _peft_fused_forward(layer, part)
                undo.append(lambda layer=layer: layer.__dict__.pop("forward", None))

        def run():
            for u in reversed(undo):
                u()
        return run


def _peft_fused_forward(layer: nn.Module, part):
    """A forward for a PEFT LoRA Linear computing its active adapter with ``fused_lora``."""
    names = [k for k, v in layer.lora_A.items() if v is part.lora_A]
    name = names[0]
    base = layer.base_layer
    in_out = type(base).__name__ == "Conv1D"  # GPT-2: weight stored (in, out)

    def forward(x, *args, **kwargs):
        drop = layer.lora_dropout[name]
        p = float(getattr(drop, "p", 0.0)) if isinstance(drop, nn.Dropout) else 0.0
        return fused_lora(x, base.weight, base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight,
                          layer.scaling[name], p, training=layer.training, weight_in_out=in_out, path=part.path)
    return forward


class LoraTop(Variant):
    profiled = True

    def __init__(self, k: int):
        self.k = k
        self.name = f"lora-top:{k}"
        self.summary = f"adapters on the top {k} blocks only"

    def _low(self, workload) -> list:
        blocks = _blocks(workload.adapters.paths)
        keep = set(blocks[-self.k:])
        return [p for p in workload.adapters.layers if block_index(p.path) not in keep]

    def not_applicable(self, workload):
        blocks = _blocks(workload.adapters.paths)
        if not blocks:
            return "the adapted layers' paths carry no block index"
        if self.k >= len(blocks):
            return f"only {len(blocks)} blocks carry adapters: top {self.k} is all of them"
        return None

    def apply(self, workload):
        low = self._low(workload)
        workload.mode_state["disabled_layers"] = {p.path for p in low}
        _set_layers_enabled(workload, low, False)

        def undo():
            _set_layers_enabled(workload, low, True)
            workload.mode_state.pop("disabled_layers", None)
        return undo

    def describe(self, workload):
        out = super().describe(workload)
        out["removed_layers"] = [p.path for p in self._low(workload)]
        return out


def _model_blocks(model: nn.Module) -> list[tuple[int, list[nn.Parameter]]]:
    """(block index, its parameters) of the model's repeated blocks: modules named ``…<i>``
    directly inside a ModuleList."""
    out: dict[int, list] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            for child_name, child in module.named_children():
                if child_name.isdigit():
                    out.setdefault(int(child_name), []).extend(child.parameters())
            if out:
                break  # the first list of blocks: the transformer's layers
    return sorted(out.items())


class PartialTop(Variant):
    profiled = True

    def __init__(self, k: int):
        self.k = k
        self.name = f"partial-top:{k}"
        self.summary = f"full fine-tuning of the top {k} blocks only, no adapters"

    def not_applicable(self, workload):
        blocks = _model_blocks(workload.model)
        if not blocks:
            return "the model has no list of blocks (nn.ModuleList of numbered modules)"
        if self.k > len(blocks):
            return f"the model has {len(blocks)} blocks"
        return None

    def apply(self, workload):
        workload.adapters.set_enabled(False)
        return lambda: None

    def trainable(self, workload):
        adapter = {id(p) for p in workload.adapters.parameters()}
        return [p for _, ps in _model_blocks(workload.model)[-self.k:] for p in ps if id(p) not in adapter]


class LoraFA(Variant):
    name = "lora-fa"
    summary = STRATEGY_HELP["lora-fa"]
    profiled = True

    def trainable(self, workload):
        frozen_a = {id(p) for part in workload.adapters.layers for p in part.lora_A.parameters()}
        return [p for p in workload.adapters.trainable_parameters() if id(p) not in frozen_a]


class _PartialColumns(torch.autograd.Function):
    """y = x Wᵀ + b where W's columns ``idx`` are the trainable ``cols`` (written into W before
    the forward); backward saves only ``x[..., idx]``."""

    @staticmethod
    def forward(ctx, x, weight, bias, cols, idx, in_out):
        with torch.no_grad():
            if in_out:
                weight[idx, :] = cols.t()
            else:
                weight[:, idx] = cols
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        w = weight if in_out else weight.t()
        y = torch.addmm(bias, x2, w) if bias is not None else x2 @ w
        ctx.save_for_backward(x2.index_select(1, idx), weight)
        ctx.in_out, ctx.shape = in_out, shape
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x_idx, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ (weight.t() if ctx.in_out else weight)).view(ctx.shape)
        grad_cols = g.t() @ x_idx  # (out, k)
        return grad_x, None, None, grad_cols, None, None


class PartialConnections(Variant):
    profiled = True

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.name = f"partial-connections:{fraction:g}"
        self.summary = f"a random {fraction:g} of each adapted layer's weight columns trained in place"
        self._cols: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}

    def not_applicable(self, workload):
        for part in workload.adapters.layers:
            if part.base is None or linear_features(part.base) is None:
                return f"{part.path}: only linear base layers can train partial connections"
        return None if workload.adapters.layers else "the model has no adapted layers to choose from"

    def _state(self, part):
        base = part.base
        if id(base) not in self._cols:
            in_f, _ = linear_features(base)
            k = max(1, int(round(self.fraction * in_f)))
            gen = torch.Generator().manual_seed(len(self._cols))
            idx = torch.randperm(in_f, generator=gen)[:k].sort().values.to(base.weight.device)
            in_out = type(base).__name__ == "Conv1D"
            w = base.weight
            cols = (w.detach()[idx, :].t() if in_out else w.detach()[:, idx]).clone()
            self._cols[id(base)] = (nn.Parameter(cols), idx)
        return self._cols[id(base)]

    def apply(self, workload):
        workload.adapters.set_enabled(False)
        undo = []
        for part in workload.adapters.layers:
            base = part.base
            cols, idx = self._state(part)
            in_out = type(base).__name__ == "Conv1D"
            keep = (base.weight.detach()[idx, :] if in_out else base.weight.detach()[:, idx]).clone()

            def restore(base=base, idx=idx, keep=keep, in_out=in_out):  # the base as it was
                with torch.no_grad():
                    if in_out:
                        base.weight[idx, :] = keep
                    else:
                        base.weight[:, idx] = keep
            undo.append(restore)

            def forward(x, *args, base=base, cols=cols, idx=idx, in_out=in_out, **kwargs):
                return _PartialColumns.apply(x, base.weight, base.bias, cols, idx, in_out)
            base.forward = forward
            undo.append(lambda base=base: base.__dict__.pop("forward", None))

        def run():
            for u in reversed(undo):
                u()
        return run

    def trainable(self, workload):
        return [self._state(part)[0] for part in workload.adapters.layers]


class LoraCompiled(Variant):
    """Timed only: Inductor fuses the graph, so there are no module scopes to attribute by; the
    first step's time (it compiles) is reported apart as ``first_step_s``."""

    name = "lora-compiled"
    summary = STRATEGY_HELP["lora-compiled"] + " (timed; compiled code has no module scopes)"
    profiled = False

    def __init__(self):
        self.compiled: Optional[nn.Module] = None

    def apply(self, workload):
        if self.compiled is None:
            self.compiled = torch.compile(workload.model)
        original = workload.model
        workload.model = self.compiled

        def undo():
            workload.model = original
        return undo


_STRATEGY = re.compile(r"^(lora-top|partial-top):(\d+)$|^partial-connections:([0-9.]+)$")


def make_strategy(name: str) -> Optional[Variant]:
    """A fresh strategy for ``name`` (None when it is not one)."""
    if name == "fused-lora":
        return FusedLoRAStrategy()
    if name == "lora-fa":
        return LoraFA()
    if name == "lora-compiled":
        return LoraCompiled()
    m = _STRATEGY.match(name)
    if not m:
        return None
    if m.group(1):
        k = int(m.group(2))
        if k < 1:
            return None
        return LoraTop(k) if m.group(1) == "lora-top" else PartialTop(k)
    try:
        f = float(m.group(3))
    except ValueError:
        return None
    return PartialConnections(f) if 0 < f <= 1 else None


__all__ = ["STRATEGY_HELP", "make_strategy", "FusedLoRAStrategy", "LoraTop", "PartialTop", "LoraFA",
           "PartialConnections", "LoraCompiled", "_trainable_without"]
