"""Complex input and weights for any N: against the reference, torch, and autograd; real/complex mixing errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convnd
from convnd import reference

COMPLEX = [torch.complex64, torch.complex128]
MODES = ["zeros", "reflect", "replicate", "circular"]


def _tolerance(dtype: torch.dtype, device: torch.device) -> dict[str, float]:
    if dtype == torch.complex128:
        return {"rtol": 1e-10, "atol": 1e-10}
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return {"rtol": 1e-2, "atol": 1e-2}  # cuDNN's default TF32 keeps 10 mantissa bits
    return {"rtol": 1e-4, "atol": 1e-4}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_complex_conv_matches_the_reference(n, dtype, mode, device):
    torch.manual_seed(n)
    x = torch.randn(2, 2, *(4, 3, 4, 3, 3)[:n], dtype=dtype, device=device)
    w = torch.randn(3, 2, *(2, 3, 2, 2, 2)[:n], dtype=dtype, device=device)
    b = torch.randn(3, dtype=dtype, device=device)
    pairs = ((1, 0), (1, 1), (0, 1), (1, 1), (1, 0))[:n]  # asymmetric: the pad-then-convolve path
    y = convnd.conv(x, w, b, padding=pairs, padding_mode=mode)
    expected = reference.conv(x, w, b, padding=pairs, padding_mode=mode)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.cpu().numpy(), expected, **_tolerance(dtype, device))


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_complex_conv_transpose_matches_the_reference(n, dtype, device):
    torch.manual_seed(n)
    x = torch.randn(2, 4, *(3, 2, 3, 2, 2)[:n], dtype=dtype, device=device)
    w = torch.randn(4, 1, *(2, 3, 2, 2, 2)[:n], dtype=dtype, device=device)
    b = torch.randn(2, dtype=dtype, device=device)
    args = {"stride": (2, 1, 2, 1, 2)[:n], "padding": (0, 1, 1, 0, 0)[:n], "output_padding": (1, 0, 0, 0, 1)[:n]}
    y = convnd.conv_transpose(x, w, b, groups=2, **args)
    expected = reference.conv_transpose(x, w, b, groups=2, **args)
    np.testing.assert_allclose(y.cpu().numpy(), expected, **_tolerance(dtype, device))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_complex_modules_are_torch_for_native_ranks(n):
    """Same seed, same complex weights; same input, the same bits (one call of torch's own kernel)."""
    torch.manual_seed(0)
    ours = convnd.ConvNd(2, 3, (3,) * n, padding=1, dtype=torch.complex64)
    torch.manual_seed(0)
    theirs = getattr(torch.nn, f"Conv{n}d")(2, 3, 3, padding=1, dtype=torch.complex64)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    x = torch.randn(2, 2, *(5,) * n, dtype=torch.complex64)
    assert torch.equal(ours(x), theirs(x))
    up = convnd.ConvTransposeNd(2, 3, (2,) * n, stride=2, dtype=torch.complex64)
    native = getattr(F, f"conv_transpose{n}d")(x, up.weight, up.bias, stride=2)
    assert torch.equal(up(x), native)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("n", [2, 4])
def test_complex_gradcheck_with_a_layout_and_a_flipped_kernel(n, transposed):
    """Wirtinger gradients in complex128 through the axis moves, the flip and (N = 4) the tap sum."""
    torch.manual_seed(n)
    x = torch.randn(2, *(3,) * n, 2, dtype=torch.complex128, requires_grad=True)  # (B, *spatial, C)
    shape = (2, 2, *(2,) * n)
    w = torch.randn(shape, dtype=torch.complex128, requires_grad=True)
    b = torch.randn(2, dtype=torch.complex128, requires_grad=True)
    op = convnd.conv_transpose if transposed else convnd.conv
    keywords = {"stride": 2} if transposed else {"padding": 1, "padding_mode": "reflect"}

    def f(x, w, b):
        return op(x, w, b, channel_dim=-1, convolution=True, **keywords)

    assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)


MIXING = [
    (
        torch.float32,
        torch.complex64,
        "weight",
        "weight must be a tensor of the input's dtype torch.float32, got a tensor of shape (3, 2, 3, 3) and dtype "
        "torch.complex64 (torch's convolutions do not mix real and complex; convert with input.to(torch.complex64))",
    ),
    (
        torch.complex128,
        torch.float64,
        "weight",
        "weight must be a tensor of the input's dtype torch.complex128, got a tensor of shape (3, 2, 3, 3) and dtype "
        "torch.float64 (torch's convolutions do not mix real and complex; convert with weight.to(torch.complex128))",
    ),
    (
        torch.complex64,
        torch.float32,
        "bias",
        "bias must be a tensor of the input's dtype torch.complex64, got a tensor of shape (3,) and dtype "
        "torch.float32 (torch's convolutions do not mix real and complex; convert with bias.to(torch.complex64))",
    ),
]


@pytest.mark.parametrize("input_dtype, other_dtype, which, message", MIXING)
def test_real_and_complex_do_not_mix(input_dtype, other_dtype, which, message):
    """torch's own kernels reject the mix (checked below), so convnd says which side to convert."""
    x = torch.randn(1, 2, 5, 5, dtype=input_dtype)
    w = torch.randn(3, 2, 3, 3, dtype=other_dtype if which == "weight" else input_dtype)
    b = torch.randn(3, dtype=other_dtype if which == "bias" else input_dtype)
    with pytest.raises(RuntimeError):
        F.conv2d(x, w, b)
    with pytest.raises(convnd.ConvndValueError) as info:
        convnd.conv(x, w, b)
    assert str(info.value) == message
    x4 = torch.randn(1, 2, 5, 5, 3, 3, dtype=input_dtype)  # past the native ranks: the same check
    with pytest.raises(convnd.ConvndValueError, match="do not mix real and complex"):
        convnd.conv(x4, w.reshape(3, 2, 3, 3, 1, 1), b)
