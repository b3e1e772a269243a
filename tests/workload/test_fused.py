"""The fused LoRA Function: gradients by gradcheck, equal to LoRA's (same mask) and to PEFT's layer."""

import pytest
import torch
from torch import nn

from lora_profiler.workload.fused import FusedLoRA, dropout_mask, fused_lora


def test_mask_keeps_the_right_fraction():
    torch.manual_seed(0)
    m = dropout_mask((400, 500), 0.1, "cpu")
    assert m.dtype == torch.bool and m.shape == (400, 500)
    assert abs(m.float().mean().item() - 0.9) < 0.003  # 200k draws: 3 sd ~ 0.002
    assert dropout_mask((10, 10), 0.0, "cpu").all()
    torch.manual_seed(1)
    a = dropout_mask((64,), 0.5, "cpu")
    torch.manual_seed(1)
    assert torch.equal(a, dropout_mask((64,), 0.5, "cpu"))  # seeded by torch's generator


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("in_out", [False, True])
def test_gradcheck(p, in_out):
    torch.manual_seed(0)
    d = dict(dtype=torch.float64)
    x = torch.randn(2, 3, 5, **d, requires_grad=True)
    w = torch.randn(*((5, 4) if in_out else (4, 5)), **d)  # frozen base
    bias = torch.randn(4, **d)
    a = torch.randn(2, 5, **d, requires_grad=True)
    b = torch.randn(4, 2, **d, requires_grad=True)

    def f(x, a, b):
        torch.manual_seed(123)  # the same mask at every call gradcheck makes
        return FusedLoRA.apply(x, w, bias, a, b, 1.7, p, in_out, None)
    assert torch.autograd.gradcheck(f, (x, a, b))


def test_equals_lora_with_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8, requires_grad=True)
    base = nn.Linear(8, 7)
    a, b = torch.randn(3, 8, requires_grad=True), torch.randn(7, 3, requires_grad=True)
    p, scale = 0.25, 2.0
    torch.manual_seed(9)
    y = fused_lora(x, base.weight, base.bias, a, b, scale, p)
    g = torch.randn_like(y)
    gx, ga, gb = torch.autograd.grad(y, (x, a, b), g)
    torch.manual_seed(9)
    mask = dropout_mask((24, 8), p, "cpu").view(4, 6, 8)
    ref = base(x) + ((x * mask / (1 - p)) @ a.t()) @ b.t() * scale  # PEFT's math, dropout by mask
    rx, ra, rb = torch.autograd.grad(ref, (x, a, b), g)
    assert torch.allclose(y, ref, atol=1e-5)
    for got, want in ((gx, rx), (ga, ra), (gb, rb)):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)


def test_equals_peft_layer_on_real_shapes():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(384, 384))
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["0"], lora_dropout=0.0))
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()  # B is zero-initialised: make the path count
    x = torch.randn(8, 128, 384, requires_grad=True)
    y_ref = layer(x)
    g = torch.randn_like(y_ref)
    params = (x, layer.lora_A["default"].weight, layer.lora_B["default"].weight)
    ref = torch.autograd.grad(y_ref, params, g)
    y = fused_lora(x, layer.base_layer.weight, layer.base_layer.bias, params[1], params[2],
                   layer.scaling["default"], 0.0)
    got = torch.autograd.grad(y, params, g)
    assert torch.allclose(y, y_ref, atol=1e-4)
    for a_, b_ in zip(got, ref):
        assert torch.allclose(a_, b_, rtol=1e-4, atol=1e-3)


def test_no_input_gradient_when_none_is_needed():
    x = torch.randn(4, 8)  # a first layer: its input needs no gradient
    a, b = torch.randn(3, 8, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    y = fused_lora(x, torch.randn(5, 8), None, a, b, 1.0, 0.1)
    y.sum().backward()
    assert a.grad is not None and b.grad is not None and x.grad is None
