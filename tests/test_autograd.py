"""The custom backward of lowered convolutions: gradcheck-clean in float64, equal to autograd through the lowering."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import convnd
from convnd import autograd

# (id, transposed, kwargs, input spatial size, kernel)
CASES = [
    ("strided-grouped", False, {"stride": 2, "padding": 1, "groups": 2}, (4, 3, 5, 4), (3, 2, 3, 2)),
    ("dilated-asymmetric", False, {"dilation": 2, "padding": ((1, 0), 2, 0, 1)}, (5, 4, 5, 5), (2, 2, 2, 2)),
    ("reflect", False, {"padding": 1, "padding_mode": "reflect"}, (3, 4, 4, 3), (3, 2, 2, 3)),
    ("transposed", True, {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}, (3, 2, 3, 3), (3, 2, 2, 3)),
    ("transposed-dilated", True, {"dilation": 3, "padding": 1, "output_padding": 2}, (2, 3, 2, 3), (2, 2, 2, 2)),
    ("5d", False, {"stride": (1, 2, 1, 1, 2), "padding": 1}, (3, 4, 3, 2, 4), (2, 3, 2, 2, 3)),
]


def _operands(transposed, kw, size, kernel):
    gen = torch.Generator().manual_seed(len(size))
    groups = kw.get("groups", 1)
    shape = (4, 2 // groups if groups == 2 else 3) if transposed else (3 if groups == 1 else 4, 4 // groups)
    x = torch.randn((2, 4, *size), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn((*shape, *kernel), generator=gen, dtype=torch.float64, requires_grad=True)
    out_channels = shape[1] * groups if transposed else shape[0]
    b = torch.randn(out_channels, generator=gen, dtype=torch.float64, requires_grad=True)
    return x, w, b


def _fn(transposed, kw, name, custom=True):
    call = convnd.conv_transpose if transposed else convnd.conv

    def f(x, w, b):
        with convnd.strategy(name, custom_backward=custom):
            return call(x, w, b, **kw)

    return f


@pytest.mark.parametrize("name", ["tapsum", "fold"])
@pytest.mark.parametrize(("case", "transposed", "kw", "size", "kernel"), CASES, ids=[c[0] for c in CASES])
def test_custom_backward_passes_gradcheck(name, case, transposed, kw, size, kernel):
    inputs = _operands(transposed, kw, size, kernel)
    assert gradcheck(_fn(transposed, kw, name), inputs, fast_mode=True)


@pytest.mark.parametrize("name", ["tapsum", "fold", "unfold", "fft"])
@pytest.mark.parametrize(("case", "transposed", "kw", "size", "kernel"), CASES, ids=[c[0] for c in CASES])
def test_autograd_through_every_strategy_passes_gradcheck(name, case, transposed, kw, size, kernel):
    inputs = _operands(transposed, kw, size, kernel)
    assert gradcheck(_fn(transposed, kw, name, custom=False), inputs, fast_mode=True)


def test_custom_backward_is_twice_differentiable():
    transposed, kw, _, kernel = CASES[0][1:]
    x, w, b = _operands(transposed, kw, (3, 2, 3, 3), kernel)
    assert gradgradcheck(_fn(transposed, kw, "tapsum"), (x, w, b), fast_mode=True)


@pytest.mark.parametrize(("case", "transposed", "kw", "size", "kernel"), CASES, ids=[c[0] for c in CASES])
def test_custom_backward_equals_autograd_through_the_lowering(case, transposed, kw, size, kernel):
    grads = []
    for custom in (True, False):
        x, w, b = _operands(transposed, kw, size, kernel)
        y = _fn(transposed, kw, "tapsum", custom)(x, w, b)
        y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))
        grads.append((x.grad, w.grad, b.grad))
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_the_function_runs_when_a_gradient_is_needed_and_the_rule_or_the_user_asks(monkeypatch):
    applied = []
    real = autograd.LoweredConv.apply
    monkeypatch.setattr(autograd.LoweredConv, "apply", lambda *a: applied.append(1) or real(*a))
    x, w, b = _operands(False, {}, (5, 3, 3, 3), (4, 2, 2, 2))  # 4 wide in the lowered dim: custom by default
    with torch.no_grad():
        convnd.conv(x, w, b)
    assert applied == []
    convnd.conv(x, w, b).sum().backward()
    assert applied == [1]
    with convnd.strategy(custom_backward=False):
        convnd.conv(x, w, b).sum().backward()
    assert applied == [1]
    narrow = w[:, :, :3].detach().requires_grad_()  # 3 wide: autograd through the lowering by default
    convnd.conv(x, narrow, b).sum().backward()
    assert applied == [1]
    with convnd.strategy(custom_backward=True):
        convnd.conv(x, narrow, b).sum().backward()
    assert applied == [1, 1]
