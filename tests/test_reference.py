"""convnd.reference, the oracle, checked against torch for N = 1..3 so it can be trusted past 3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from configs import configs, per_dim
from convnd import reference
from convnd.padding import torch_pad_order

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def torch_conv(x, w, b, cfg):
    """torch's own answer, written independently of convnd: F.pad in the mode, then an unpadded conv."""
    mode = {"zeros": "constant"}.get(cfg.kwargs["padding_mode"], cfg.kwargs["padding_mode"])
    xp = F.pad(x, torch_pad_order(cfg.pairs), mode=mode)
    n = w.dim() - 2
    return TORCH_CONV[n](xp, w, b, cfg.kwargs["stride"], 0, cfg.kwargs["dilation"], cfg.kwargs["groups"])


@given(configs())
def test_reference_conv_matches_torch(cfg):
    x, w, b = cfg.tensors()
    if not cfg.batched:
        x = x.unsqueeze(0)  # the oracle takes batched input only
    expected = torch_conv(x, w, b, cfg).numpy()
    got = reference.conv(
        x, w, b, cfg.kwargs["stride"], cfg.pairs, cfg.kwargs["dilation"], cfg.kwargs["groups"],
        cfg.kwargs["padding_mode"],
    )  # fmt: skip
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@given(dims=st.integers(1, 3), data=st.data())
def test_reference_conv_transpose_matches_torch(dims, data):
    kernel, stride, dilation = (data.draw(per_dim(dims, 1, 3)) for _ in range(3))
    padding = [data.draw(st.integers(0, (d * (k - 1)) // 2)) for k, d in zip(kernel, dilation)]
    output_padding = [data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    groups = data.draw(st.integers(1, 2))
    size = data.draw(st.lists(st.integers(1, 4), min_size=dims, max_size=dims))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2 * groups, *size, generator=g, dtype=torch.float64)
    w = torch.randn(2 * groups, 3, *kernel, generator=g, dtype=torch.float64)
    b = torch.randn(3 * groups, generator=g, dtype=torch.float64)
    expected = TORCH_CONV_T[dims](x, w, b, stride, padding, output_padding, groups, dilation)
    got = reference.conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_reference_by_hand():
    """A 1-d case small enough to do on paper: [1, 2, 3, 4] * [1, -1] with one zero each side, stride 2."""
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, -1.0]]])
    # padded: [0, 1, 2, 3, 4, 0]; windows at 0, 2, 4: (0-1), (2-3), (4-0)
    np.testing.assert_array_equal(reference.conv(x, w, None, (2,), ((1, 1),)), [[[-1.0, -1.0, 4.0]]])


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_reference_padding_modes_by_hand(mode):
    x = np.array([[[1.0, 2.0, 3.0]]])
    w = np.array([[[1.0]]])  # the identity kernel shows the padded input itself
    expected = {"reflect": [2, 1, 2, 3, 2], "replicate": [1, 1, 2, 3, 3], "circular": [3, 1, 2, 3, 1]}[mode]
    np.testing.assert_array_equal(reference.conv(x, w, padding=((1, 1),), padding_mode=mode)[0, 0], expected)


def test_reference_does_not_call_torch_convolution(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the oracle must not use torch's convolution")

    for name in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        monkeypatch.setattr(F, name, forbidden)
        monkeypatch.setattr(torch, name, forbidden)
    x, w = torch.randn(1, 2, 4, 4, 4, 4), torch.randn(3, 2, 2, 2, 2, 2)
    assert reference.conv(x, w).shape == (1, 3, 3, 3, 3, 3)
    assert reference.conv_transpose(x, w.transpose(0, 1)).shape == (1, 3, 5, 5, 5, 5)
