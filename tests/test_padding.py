"""convnd.padding.pad_nd: every mode for any rank, against numpy.pad (any N) and F.pad (N <= 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convnd.padding import pad_nd, torch_pad_order

MODES = ["zeros", "reflect", "replicate", "circular"]
NUMPY_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def widest(mode: str, size: int) -> int:
    """The widest padding torch accepts for ``mode`` on a dim of ``size``."""
    return {"reflect": size - 1, "circular": size}.get(mode, 2 * size + 1)


@st.composite
def padded_inputs(draw, max_dims=5, max_lead=3):
    """(x, pairs, mode): a tensor with 1 to ``max_lead`` leading (batch/channel) dims and pads that fit each mode."""
    dims = draw(st.integers(1, max_dims))
    mode = draw(st.sampled_from(MODES))
    lead = draw(st.lists(st.integers(1, 2), min_size=1, max_size=max_lead))
    size = draw(st.lists(st.integers(1, 4), min_size=dims, max_size=dims))
    pairs = tuple((draw(st.integers(0, widest(mode, n))), draw(st.integers(0, widest(mode, n)))) for n in size)
    x = torch.arange(float(np.prod(lead + size))).reshape(*lead, *size)
    return x, pairs, mode


def numpy_pad(x: torch.Tensor, pairs, mode: str) -> np.ndarray:
    lead = ((0, 0),) * (x.dim() - len(pairs))
    return np.pad(x.numpy(), lead + pairs, mode=NUMPY_MODES[mode])


@given(padded_inputs())
def test_pad_nd_matches_numpy_pad(case):
    x, pairs, mode = case
    np.testing.assert_array_equal(pad_nd(x, pairs, mode).numpy(), numpy_pad(x, pairs, mode))


@pytest.mark.parametrize("dims", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mode", MODES)
def test_pad_nd_every_mode_and_rank(dims, mode):
    """A fixed widest-allowed asymmetric case per (rank, mode), so each cell is covered whatever hypothesis draws."""
    size = (3, 4, 2, 3, 2)[:dims]
    pairs = tuple((widest(mode, n), min(1, widest(mode, n))) for n in size)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    np.testing.assert_array_equal(pad_nd(x, pairs, mode).numpy(), numpy_pad(x, pairs, mode))
    unbatched = x[0]
    np.testing.assert_array_equal(pad_nd(unbatched, pairs, mode).numpy(), numpy_pad(unbatched, pairs, mode))


@given(padded_inputs(max_dims=3, max_lead=2))
def test_pad_nd_matches_torch_pad(case):
    x, pairs, mode = case
    expected = F.pad(x, torch_pad_order(pairs), mode={"zeros": "constant"}.get(mode, mode))
    assert torch.equal(pad_nd(x, pairs, mode), expected)


def test_torch_pad_order_is_last_dim_first():
    assert torch_pad_order(((1, 2), (3, 4), (5, 6))) == [5, 6, 3, 4, 1, 2]


def test_no_padding_returns_the_input_itself():
    x = torch.randn(1, 1, 3, 3, 3, 3)
    assert pad_nd(x, ((0, 0),) * 4, "reflect") is x


@pytest.mark.parametrize("mode", MODES)
def test_pad_nd_backward_sums_copies(mode):
    """Padding is pure copying, so its gradient adds up every copy's gradient into the source element."""
    x = torch.randn(1, 1, 3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    pairs = ((1, 2), (1, 0), (0, 2), (1, 1))
    pairs = tuple((min(lo, widest(mode, n)), min(hi, widest(mode, n))) for (lo, hi), n in zip(pairs, x.shape[2:]))
    assert torch.autograd.gradcheck(lambda t: pad_nd(t, pairs, mode), (x,))
