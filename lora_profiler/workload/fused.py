"""One autograd Function for an adapted linear layer: base GEMM and adapter path together.

``y = base(x) + c · ((x ⊙ m) Aᵀ) Bᵀ`` with ``c = scale / (1 − p)`` and ``m`` the dropout mask.
Against the module-by-module LoRA path (dropout module, lora_A, lora_B, a multiply, an add, and
a backward node for each), it:

- draws the dropout mask as random bits (two random bytes per element, compared with a
  threshold: several times cheaper than ``bernoulli_`` on a CPU) and keeps it as one byte per
  element; the dropped input is recomputed in the backward, never saved;
- computes ``x ⊙ m · Aᵀ`` once, and folds the scale (and the dropout's 1/(1 − p)) into the B
  GEMM, which also adds into the base output (``addmm_``): no separate multiply or add;
- saves only what backward needs: the input (shared by every adapter reading the same tensor),
  the mask, and ``h = (x ⊙ m) Aᵀ`` (rank-sized);
- runs one backward node: the base's input gradient, the adapters' weight gradients and input
  gradient in a handful of GEMMs.

Gradients equal LoRA's given the same mask (tests: ``gradcheck`` in float64 and PEFT's layer).
The mask's keep probability is 1 − round(p · 65536) / 65536 (within 1e-5 of 1 − p).

While a profiler runs, the Function's parts open the same scopes the capture hooks give a LoRA
layer's modules (``lp/adapter/<path>#base``, ``#dropout``, ``#lora_A``, ``#lora_B``, ``#add``),
forward and backward, so the attribution splits it like LoRA.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from ..names import adapter_scope


def dropout_mask(shape, p: float, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A bool keep-mask: each element kept with probability 1 − round(p · 65536) / 65536."""
    n = 1
    for s in shape:
        n *= int(s)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2 ** 63), None, generator=generator)  # every bit uniform
    bits = words.view(torch.int16)[:n].view(shape)  # (…,) uniform in [-32768, 32767]
    return bits >= (-32768 + round(p * 65536))


def _scope(path: Optional[str], part: str):
    if path is not None and torch.autograd._profiler_enabled():
        return torch.profiler.record_function(adapter_scope(path, part))
    return contextlib.nullcontext()


class FusedLoRA(torch.autograd.Function):
    """``apply(x, weight, bias, A, B, c, p, weight_in_out, path)`` -> base(x) + c·((x⊙m)Aᵀ)Bᵀ.

    ``weight`` is ``[out, in]`` (nn.Linear) or ``[in, out]`` with ``weight_in_out`` (GPT-2's
    Conv1D); ``A`` is ``[r, in]``, ``B`` ``[out, r]``; ``p`` the dropout probability (0: none);
    ``path`` names the profiler scopes (None: none).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, c, p, weight_in_out, path):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        w = weight if weight_in_out else weight.t()  # (in, out)
        with _scope(path, "base"):
            y = torch.addmm(bias, x2, w) if bias is not None else x2 @ w
        mask = None
        with _scope(path, "dropout"):
            if p > 0:
                mask = dropout_mask(x2.shape, p, x2.device)
                xd = x2 * mask
            else:
                xd = x2
        with _scope(path, "lora_A"):
            h = xd @ a.t()  # (T, r)
        with _scope(path, "lora_B"):
            y.addmm_(h, b.t(), alpha=c)  # the scale, and the add into the base output, in the GEMM
        ctx.save_for_backward(x2, weight, a, b, mask, h)
        ctx.c, ctx.weight_in_out, ctx.path, ctx.shape = c, weight_in_out, path, shape
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, weight, a, b, mask, h = ctx.saved_tensors
        c, path = ctx.c, ctx.path
        g = grad.reshape(-1, grad.shape[-1])  # (T, out)
        need_x, need_w, _, need_a, need_b = ctx.needs_input_grad[:5]
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        with _scope(path, "lora_B"):
            gh = (g @ b).mul_(c)  # (T, r): the gradient of h
            if need_b:
                grad_b = (g.t() @ h).mul_(c)
        if need_a:
            with _scope(path, "dropout"):
                xd = x2 * mask if mask is not None else x2
            with _scope(path, "lora_A"):
                grad_a = gh.t() @ xd
        if need_x:
            with _scope(path, "base"):
                grad_x = g @ (weight.t() if ctx.weight_in_out else weight)  # (T, in)
            with _scope(path, "lora_A"):
                gx = gh @ a
            with _scope(path, "dropout"):
                if mask is not None:
                    gx = gx.mul_(mask)
            with _scope(path, "add"):
                grad_x = grad_x.add_(gx).view(ctx.shape)
        if need_w:  # not in the LoRA modes (the base is frozen); for completeness
            gw = g.t() @ x2  # (out, in)
            grad_w = gw.t() if ctx.weight_in_out else gw
        if ctx.needs_input_grad[2]:
            grad_bias = g.sum(0)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None, None, None


def fused_lora(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], a: torch.Tensor,
               b: torch.Tensor, scale: float, p: float, training: bool = True, weight_in_out: bool = False,
               path: Optional[str] = None) -> torch.Tensor:
    """base(x) + scale · B(A(dropout_p(x))) in one autograd node (dropout only when training)."""
    p = float(p) if training else 0.0
    c = float(scale) / (1.0 - p)
    return FusedLoRA.apply(x, weight, bias, a, b, c, p, weight_in_out, path)
