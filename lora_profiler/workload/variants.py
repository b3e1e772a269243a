"""Variant modes: LoRA with one thing changed, timed interleaved with the base modes.

A variant is applied on top of the ``lora`` mode and undone when the run switches to another
mode, so every mode keeps sharing one model, one batch and one seed. The ablations that check the
attribution (``trace --validate``) are variants that each remove one cause:

- ``no-dropout``  every adapter's dropout replaced by ``nn.Identity`` (the dropout cause);
- ``fold-scale``  the adapter output is not multiplied by alpha/r (the scale cause; as if the
  scale were folded into B — only the time is measured, B is not rescaled);
- ``upper-half``  the adapters of the lower half of the blocks disabled, and the input
  embedding's output made to require grad as in the frozen floor, so backward still runs
  through every block (the lower half's adapter causes, less the floor's own input-gradient
  work that LoRA skips);
- ``rank-x4``     every adapter's A and B replaced by rank-4r ones (the matmuls and optimizer
  at 4x the rank).

Each variant says what it changed (``describe``: recorded in facts.json) so the analysis can
predict its saving from the base run's causes without torch.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Optional

import torch
from torch import nn

from .adapters import AdapterPart
from .spec import Workload

Undo = Callable[[], None]


def _slot(part: AdapterPart, which: str) -> Optional[tuple[object, object]]:
    """(container, key) holding the part's ``which`` module (dropout, lora_A, lora_B) in its layer,
    so it can be swapped: an attribute of the layer, or an entry of one of its ModuleDicts."""
    layer = part.layer
    current = getattr(part, which)
    if current is None:
        return None
    for name, child in layer.named_children():
        if child is current:
            return layer, name
        if isinstance(child, nn.ModuleDict):
            for key, sub in child.items():
                if sub is current:
                    return child, key
    return None


def _swap(container, key, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``container[key]`` (ModuleDict) or ``container.key``; return the old one."""
    if isinstance(container, nn.ModuleDict):
        old = container[key]
        container[key] = module
    else:
        old = getattr(container, key)
        setattr(container, key, module)
    return old


def _swapper(parts, which: str, make: Callable[[AdapterPart], nn.Module]) -> Undo:
    """Swap each part's ``which`` module for ``make(part)``; returns the undo."""
    done = []
    for part in parts:
        slot = _slot(part, which)
        if slot is None:
            continue
        old = _swap(*slot, make(part))
        done.append((slot, old))

    def undo():
        for slot, old in reversed(done):
            _swap(*slot, old)
    return undo


def block_index(path: str) -> Optional[int]:
    """The transformer block of a module path: its first purely numeric component, else None."""
    for piece in path.split("."):
        if piece.isdigit():
            return int(piece)
    return None


def lower_half(paths: list[str]) -> list[str]:
    """The adapted layers in the lower half of the blocks (by block index; by module order when
    the paths carry no block index)."""
    blocks = [block_index(p) for p in paths]
    if all(b is not None for b in blocks):
        order = sorted(set(blocks))
        low = set(order[: len(order) // 2])
        return [p for p, b in zip(paths, blocks) if b in low]
    return paths[: len(paths) // 2]


class Variant:
    """A change to the LoRA mode. Subclasses set ``name``/``summary`` and override ``apply``."""

    name = ""
    summary = ""
    input_grad = False  # the input embedding's output requires grad (as in the frozen floor)
    profiled = False  # strategies are profiled and attributed like LoRA; ablations are only timed

    def not_applicable(self, workload: Workload) -> Optional[str]:
        """Why this variant cannot run on the workload (None when it can)."""
        return None if workload.adapters.layers else "the model has no adapters"

    def apply(self, workload: Workload) -> Undo:
        """Change the model in place; return the function that undoes it (default: nothing to
        change, e.g. a strategy that only trains other parameters)."""
        return lambda: None

    def trainable(self, workload: Workload) -> list[nn.Parameter]:
        """The parameters the variant trains (default: the lora mode's, less the adapters of the
        layers it disabled)."""
        return _trainable_without(workload, [p for p in workload.adapters.layers if not _enabled(workload, p)])

    def describe(self, workload: Workload) -> dict:
        """What the variant changed, for facts.json (the analysis predicts its saving from it)."""
        return {"name": self.name, "summary": self.summary, "input_grad": self.input_grad}


def _trainable_without(workload: Workload, parts) -> list[nn.Parameter]:
    """The lora mode's trainable set without the parameters of ``parts``."""
    skip = {id(p) for part in parts for p in part.parameters()}
    return [p for p in workload.adapters.trainable_parameters() if id(p) not in skip]


def _enabled(workload: Workload, part: AdapterPart) -> bool:
    return part.path not in workload.mode_state.get("disabled_layers", ())


class NoDropout(Variant):
    name = "no-dropout"
    summary = "every adapter's dropout replaced by nn.Identity"

    def not_applicable(self, workload):
        parts = workload.adapters.layers
        if not parts:
            return "the model has no adapters"
        if not any(_slot(p, "dropout") and float(getattr(p.dropout, "p", 0.0)) > 0 for p in parts):
            return "the adapters have no dropout (p = 0)"
        return None

    def apply(self, workload):
        return _swapper(workload.adapters.layers, "dropout", lambda part: nn.Identity())


class _PeftNoScale:
    """A PEFT LoRA variant computing ``result + B(A(dropout(x)))``: vanilla LoRA without the
    multiply by the scale (PEFT calls ``forward(module, active_adapter, x, result, **kwargs)``)."""

    @staticmethod
    def forward(module, active_adapter, x, result, **kwargs):
        lora_A = module.lora_A[active_adapter]
        lora_B = module.lora_B[active_adapter]
        dropout = module.lora_dropout[active_adapter]
        return result + lora_B(lora_A(dropout(x)))


class FoldScale(Variant):
    name = "fold-scale"
    summary = "the adapter output not multiplied by alpha/r (scale folded into B)"

    def not_applicable(self, workload):
        ad = workload.adapters
        if not ad.layers:
            return "the model has no adapters"
        if ad.source == "builtin":
            return None
        if ad.source == "peft":
            first = ad.layers[0].layer
            if not isinstance(getattr(first, "lora_variant", None), dict):
                return "this PEFT version has no lora_variant hook to run LoRA without its scale"
            if any(getattr(p.layer, "lora_variant", {}) for p in ad.layers):
                return "the PEFT adapters are already a LoRA variant (DoRA, ...)"
            return None
        return f"{ad.source} adapters multiply by the scale inside their own forward"

    def apply(self, workload):
        ad = workload.adapters
        undo = []
        for part in ad.layers:
            layer = part.layer
            if ad.source == "builtin":
                layer.fold_scale = True
                undo.append(lambda layer=layer: setattr(layer, "fold_scale", False))
            else:
                names = [k for k, v in layer.lora_A.items() if v is part.lora_A]
                for name in names:
                    layer.lora_variant[name] = _PeftNoScale()
                    undo.append(lambda layer=layer, name=name: layer.lora_variant.pop(name, None))

        def run():
            for u in reversed(undo):
                u()
        return run


class UpperHalf(Variant):
    name = "upper-half"
    summary = ("adapters on the upper half of the blocks only; the input embedding's output "
               "requires grad so backward still runs through every block")
    input_grad = True

    def not_applicable(self, workload):
        paths = workload.adapters.paths
        if len(paths) < 2 or not lower_half(paths):
            return "fewer than two blocks carry adapters"
        return None

    def apply(self, workload):
        low = set(lower_half(workload.adapters.paths))
        parts = [p for p in workload.adapters.layers if p.path in low]
        workload.mode_state["disabled_layers"] = low
        _set_layers_enabled(workload, parts, False)

        def undo():
            _set_layers_enabled(workload, parts, True)
            workload.mode_state.pop("disabled_layers", None)
        return undo

    def describe(self, workload):
        out = super().describe(workload)
        out["removed_layers"] = lower_half(workload.adapters.paths)
        out["optimizer"] = optimizer_times(workload.adapters.trainable_parameters(), self.trainable_after(workload))
        return out

    def trainable_after(self, workload) -> list[nn.Parameter]:
        low = set(lower_half(workload.adapters.paths))
        return _trainable_without(workload, [p for p in workload.adapters.layers if p.path in low])


def _set_layers_enabled(workload: Workload, parts, enabled: bool) -> None:
    for part in parts:
        if workload.adapters.source == "peft":
            part.layer.enable_adapters(enabled)
        else:
            part.layer.disabled = not enabled


class RankX(Variant):
    """Every adapter's A and B replaced by rank ``factor * r`` ones (new modules, made once)."""

    def __init__(self, factor: int = 4):
        self.factor = factor
        self.name = f"rank-x{factor}"
        self.summary = f"adapters of {factor}x the rank (A and B replaced)"
        self._made: dict[int, tuple[nn.Module, nn.Module]] = {}

    def not_applicable(self, workload):
        parts = workload.adapters.layers
        if not parts:
            return "the model has no adapters"
        if not all(isinstance(getattr(p.lora_A, "weight", None), torch.Tensor) and p.lora_A.weight.dim() == 2
                   and isinstance(p.lora_A, nn.Linear) and isinstance(p.lora_B, nn.Linear) for p in parts):
            return "only linear adapters (lora_A/lora_B nn.Linear) can change rank"
        return None

    def _modules(self, part: AdapterPart) -> tuple[nn.Module, nn.Module]:
        if id(part.lora_A) not in self._made:
            a, b = part.lora_A, part.lora_B
            r = a.out_features * self.factor
            w = a.weight
            new_a = nn.Linear(a.in_features, r, bias=a.bias is not None, device=w.device, dtype=w.dtype)
            new_b = nn.Linear(r, b.out_features, bias=b.bias is not None, device=w.device, dtype=w.dtype)
            nn.init.zeros_(new_b.weight)
            self._made[id(part.lora_A)] = (new_a, new_b)
        return self._made[id(part.lora_A)]

    def apply(self, workload):
        parts = workload.adapters.layers
        undo_a = _swapper(parts, "lora_A", lambda p: self._modules(p)[0])
        undo_b = _swapper(parts, "lora_B", lambda p: self._modules(p)[1])

        def undo():
            undo_b()
            undo_a()
        return undo

    def trainable(self, workload):
        """The new A and B, and whatever else the lora mode trains (DoRA magnitudes, biases)."""
        replaced = {id(p) for part in workload.adapters.layers for m in (part.lora_A, part.lora_B)
                    for p in m.parameters()}
        new = [p for part in workload.adapters.layers for m in self._modules(part) for p in m.parameters()]
        return new + [p for p in workload.adapters.trainable_parameters() if id(p) not in replaced]

    def describe(self, workload):
        out = super().describe(workload)
        parts = workload.adapters.layers
        out["factor"] = self.factor
        out["rank"] = [int(p.lora_A.out_features) for p in parts]
        out["matmuls"] = adapter_matmul_times(workload, self.factor)
        out["optimizer"] = optimizer_times(workload.adapters.trainable_parameters(), self.trainable(workload))
        return out


VALIDATION_VARIANTS: tuple[str, ...] = ("no-dropout", "fold-scale", "upper-half", "rank-x4")
_RANK = re.compile(r"rank-x(\d+)$")


def make_variant(name: str) -> Optional[Variant]:
    """A fresh variant or strategy for ``name`` (None when ``name`` is neither)."""
    fixed = {"no-dropout": NoDropout, "fold-scale": FoldScale, "upper-half": UpperHalf}
    if name in fixed:
        return fixed[name]()
    m = _RANK.match(name)
    if m and int(m.group(1)) >= 2:
        return RankX(int(m.group(1)))
    from .strategies import make_strategy

    return make_strategy(name)


def is_strategy(name: str) -> bool:
    """A mode that is a strategy (profiled and attributed like LoRA, or timed like lora-compiled)."""
    v = make_variant(name)
    return v is not None and name not in VALIDATION_VARIANTS and not _RANK.match(name)


def is_variant(name: str) -> bool:
    return make_variant(name) is not None


# --- microbenchmarks the predictions scale by (in the run's process, on its device) --------------

def _median_time(fn: Callable[[], None], device: torch.device, repeats: int = 7) -> float:
    """Median seconds of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(sorted(times)[len(times) // 2])


def optimizer_times(before: list[nn.Parameter], after: list[nn.Parameter]) -> dict:
    """Median AdamW step time (s) over fresh tensors shaped like ``before`` and like ``after``:
    the optimizer's time scales by their ratio in the prediction."""
    def step_time(params):
        if not params:
            return 0.0
        ts = [torch.zeros_like(p, requires_grad=True) for p in params]
        for t in ts:
            t.grad = torch.randn_like(t)
        opt = torch.optim.AdamW(ts, lr=1e-5)
        return _median_time(opt.step, params[0].device)

    return {"before_s": step_time(before), "after_s": step_time(after)}


def _adapter_inputs(workload: Workload) -> dict[str, int]:
    """Rows (tokens) each adapted layer's input has in one forward of the batch."""
    rows: dict[str, int] = {}
    handles = []
    for part in workload.adapters.layers:
        def hook(module, args, path=part.path):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.dim() >= 1:
                rows[path] = int(x.numel() // max(x.shape[-1], 1))
        handles.append(part.lora_A.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            workload.loss_fn(workload.model, workload.batch)
    finally:
        for h in handles:
            h.remove()
    return rows


def adapter_matmul_times(workload: Workload, factor: int) -> list[dict]:
    """Per adapted layer shape: median time of the adapter's matmuls (forward x·Aᵀ, h·Bᵀ; backward
    the weight and input gradients) at rank r and factor·r, forward and backward apart."""
    rows = _adapter_inputs(workload)
    seen: dict[tuple, dict] = {}
    out = []
    for part in workload.adapters.layers:
        a, b = part.lora_A, part.lora_B
        t = rows.get(part.path)
        if t is None:
            continue
        key = (t, a.in_features, a.out_features, b.out_features)
        if key not in seen:
            w = a.weight
            seen[key] = {"rows": t, "in": a.in_features, "rank": a.out_features, "out": b.out_features,
                         **_matmul_pair(t, a.in_features, a.out_features, b.out_features, factor, w)}
        out.append({"path": part.path, **seen[key]})
    return out


def _matmul_pair(t: int, d_in: int, r: int, d_out: int, factor: int, like: torch.Tensor) -> dict:
    """Forward and backward seconds of the adapter matmuls at rank r and factor*r."""
    opts = {"device": like.device, "dtype": like.dtype}
    x = torch.randn(t, d_in, **opts)
    g = torch.randn(t, d_out, **opts)
    res = {}
    for label, rank in (("r", r), ("x", r * factor)):
        a = torch.randn(rank, d_in, **opts)
        b = torch.randn(d_out, rank, **opts)
        h = x @ a.t()

        def fwd():
            (x @ a.t()) @ b.t()

        def bwd():
            gh = g @ b           # grad of h
            g.t() @ h            # grad of B
            gh.t() @ x           # grad of A
            gh @ a               # grad of x

        res[f"fwd_{label}_s"] = _median_time(fwd, like.device)
        res[f"bwd_{label}_s"] = _median_time(bwd, like.device)
    return res
