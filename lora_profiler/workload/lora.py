"""The built-in LoRA layer and its injection by module-name pattern.

The math and initialisation follow PEFT's ``lora.Linear``:
``y = base(x) + B(A(dropout(x))) * (alpha / r)``, with A Kaiming-uniform (a=sqrt(5)) and B zero,
so an injected model computes exactly what the base model computed until B is trained.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from .errors import WorkloadError

# Known architectures' attention projections, tried in order; the first set that matches any
# module of the model is the default target list.
DEFAULT_TARGET_SETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Mistral, Qwen, our llama preset
    ("attn.c_attn", "attn.c_proj"),  # GPT-2 (ours and Hugging Face's)
    ("query", "key", "value"),  # BERT-like
    ("query_key_value",),  # GPT-NeoX, Falcon
    ("Wqkv",),  # MPT
    ("qkv_proj",),  # Phi-3
)


def linear_features(module: nn.Module) -> Optional[tuple[int, int]]:
    """(in_features, out_features) of a linear-like module, or None.

    Handles ``nn.Linear`` and Hugging Face's GPT-2 ``Conv1D`` (weight stored (in, out)).
    """
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1])
    return None


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank adapter path.

    Attributes mirror PEFT's names (``base_layer``, ``lora_A``, ``lora_B``, ``lora_dropout``)
    so module paths in traces read the same whichever LoRA a user runs.

    Args:
        base_layer: the linear-like module to adapt (``nn.Linear`` or GPT-2 ``Conv1D``).
        rank: r, the adapter's inner width.
        alpha: scale numerator; the adapter output is multiplied by alpha / rank.
        dropout: dropout probability on the adapter's input (0 uses ``nn.Identity``, as PEFT).
    """

    def __init__(self, base_layer: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        features = linear_features(base_layer)
        if features is None:
            raise TypeError(f"cannot adapt {type(base_layer).__name__}: not a linear layer")
        in_features, out_features = features
        self.base_layer = base_layer
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.rank
        weight = next(base_layer.parameters())
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(in_features, self.rank, bias=False, **factory)
        self.lora_B = nn.Linear(self.rank, out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.disabled = False
        # Set by the fold-scale variant: the output is not multiplied by the scale (time only).
        self.fold_scale = False
        # Set by the fused-lora strategy: base and adapter path as one autograd Function.
        self.fused = False
        # Set by the capture hooks to "lp/adapter/<path>" so scale/add get their own scope.
        self.lp_scope: Optional[str] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and not self.disabled:
            from .fused import fused_lora

            base = self.base_layer
            p = self.lora_dropout.p if isinstance(self.lora_dropout, nn.Dropout) else 0.0
            path = self.lp_scope[len("lp/adapter/"):] if self.lp_scope else None
            return fused_lora(x, base.weight, base.bias, self.lora_A.weight, self.lora_B.weight, self.scaling,
                              p, training=self.training, weight_in_out=type(base).__name__ == "Conv1D",
                              path=path)
        result = self.base_layer(x)
        if self.disabled:
            return result
        delta = self.lora_B(self.lora_A(self.lora_dropout(x)))
        if self.lp_scope is not None and torch.autograd._profiler_enabled():
            with torch.profiler.record_function(self.lp_scope + "#scale_add"):
                return result + (delta if self.fold_scale else delta * self.scaling)
        return result + (delta if self.fold_scale else delta * self.scaling)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}"


def _matches(name: str, target: str) -> bool:
    if name == target or name.endswith("." + target):
        return True
    if any(c in target for c in "*[]()^$|+?\\"):
        try:
            return re.fullmatch(target, name) is not None
        except re.error as exc:
            raise WorkloadError(f"--targets: {target!r} is not a valid regular expression ({exc})")
    return False


def linear_module_names(model: nn.Module) -> list[str]:
    """Names of every linear-like module of ``model`` (in ``named_modules`` order)."""
    return [n for n, m in model.named_modules() if n and linear_features(m) is not None]


def output_layers(model: nn.Module, probe=None) -> list[str]:
    """The model's output layer(s), by what they are, never by name.

    - a linear-like layer whose weight is an ``nn.Embedding``'s weight (tied output embedding);
    - a Hugging Face model's ``get_output_embeddings()``;
    - with a dry forward (``probe``): the linear layers whose output the model returns (its
      logits), and the last linear to run whose ``out_features`` is the vocabulary size;
    - without one: the last linear layer (module order) whose ``out_features`` is the vocabulary
      size, else the last linear layer.
    """
    modules = dict(model.named_modules())
    linears = linear_module_names(model)
    embed = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    found = [n for n in linears if id(getattr(modules[n], "weight", None)) in embed]
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        try:
            out = get_out()
        except Exception:
            out = None
        found += [n for n in linears if out is not None and modules[n] is out]
    from .batch import vocab_size_of

    vocab = vocab_size_of(model)
    vocab_sized = [n for n in linears if vocab is not None and linear_features(modules[n])[1] == vocab]
    if probe is not None:
        found += [n for n in probe.output_modules if n in modules and linear_features(modules[n]) is not None]
        ran = [n for n in probe.order if n in set(vocab_sized)]
        found += ran[-1:]
    elif vocab_sized:
        found.append(vocab_sized[-1])
    elif not found and linears:
        found.append(linears[-1])
    return list(dict.fromkeys(found))


def resolve_targets(model: nn.Module, targets: Optional[Sequence[str]],
                    probe=None) -> tuple[list[str], list[str]]:
    """Decide which modules to adapt.

    Args:
        model: the model to search.
        targets: patterns (a name suffix at a dot boundary, or a full-match regex); ``None``
            means the default: the attention projections of known architectures, otherwise
            every linear layer; ``["all-linear"]`` means every linear layer except the output
            layer (``output_layers``).
        probe: the model's dry forward (``probe.probe_forward``), if one ran: it finds the
            output layer by what the model returns.

    Returns:
        (patterns actually used, names of the linear-like modules they select).

    Raises:
        WorkloadError: when nothing matches.
    """
    linears = linear_module_names(model)
    if targets is None:
        for candidate in DEFAULT_TARGET_SETS:
            chosen = [n for n in linears if any(_matches(n, t) for t in candidate)]
            if chosen:
                return list(candidate), chosen
        targets = ["all-linear"]
    if list(targets) == ["all-linear"]:
        skip = set(output_layers(model, probe))
        chosen = [n for n in linears if n not in skip]
    else:
        chosen = [n for n in linears if any(_matches(n, t) for t in targets)]
    if not chosen:
        shown = ", ".join(linears[:8]) + (" …" if len(linears) > 8 else "")
        what = f"no linear layer matches LoRA targets {list(targets)}"
        raise WorkloadError(
            what + (f" (linear layers: {shown}); pass --targets" if linears else
                    ": the model has no nn.Linear layer for LoRA to adapt")
        )
    return list(targets), chosen


def runnable_targets(model: nn.Module, names: Sequence[str], probe=None) -> tuple[list[str], list[str]]:
    """Split chosen targets into those LoRA can wrap and notes on those it must not.

    A module the step never calls — its parent reads its ``.weight`` directly, as
    ``nn.MultiheadAttention`` does with ``out_proj`` (``F.multi_head_attention_forward``), or it
    simply never runs — is skipped: wrapping it would break the parent or adapt nothing.

    Returns:
        (names to adapt, one note per skipped group).
    """
    modules = dict(model.named_modules())
    kept, by_parent, unused = [], [], []
    for name in names:
        if isinstance(modules.get(name.rpartition(".")[0]), nn.MultiheadAttention):
            by_parent.append(name)
        elif probe is not None and not probe.ran(name):
            unused.append(name)
        else:
            kept.append(name)
    notes = []
    if by_parent:
        notes.append(f"not adapted: {', '.join(by_parent)} — nn.MultiheadAttention reads its "
                     "out_proj.weight directly (F.multi_head_attention_forward) and never calls it; "
                     "a LoRA wrapper there would break the attention")
    if unused:
        notes.append(f"not adapted: {', '.join(unused)} — never called as a module in the step "
                     "(unused, or its parent reads its .weight directly)")
    return kept, notes


def inject_lora(model: nn.Module, names: Iterable[str], rank: int, alpha: float,
                dropout: float) -> list[str]:
    """Replace each named linear-like module by a ``LoRALinear`` wrapping it, in place.

    Returns:
        The adapted module paths (each now a ``LoRALinear``).

    Raises:
        WorkloadError: a module cannot be adapted (named in the message).
    """
    done = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        try:
            setattr(parent, child, LoRALinear(base, rank=rank, alpha=alpha, dropout=dropout))
        except Exception as exc:
            raise WorkloadError(f"cannot adapt module {name!r} ({type(base).__name__}): "
                                f"{type(exc).__name__}: {exc}") from exc
        done.append(name)
    return done
