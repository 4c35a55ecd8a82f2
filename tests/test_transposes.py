"""transposes.permuted_copy: torch's permute + contiguous, bit for bit, in two passes where they pay."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convnd.transposes import TWO_PASS_MIN_NUMEL, permuted_copy, two_pass_order


def _in_memory_order(shape: tuple[int, ...], memory: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``shape`` whose memory holds its dims in the order ``memory`` (outermost first)."""
    dense = torch.randn(tuple(shape[d] for d in memory))
    return dense.permute(tuple(memory.index(d) for d in range(len(shape))))


# (id, shape, memory order, copy order, expected first-pass order or None for one pass)
CASES = [
    # x (B, C, D, H, W) to channels-last memory (the lowerings' input): rows first, then (C, W) -> (W, C)
    ("to-channels-last", (2, 32, 16, 16, 16), (0, 1, 2, 3, 4), (0, 2, 3, 4, 1), (0, 2, 3, 1, 4)),
    # tapsum's input: the outer dim in front of the batch as well
    ("outer-first", (2, 32, 8, 8, 16, 16), (0, 1, 2, 3, 4, 5), (2, 0, 3, 4, 5, 1), (2, 0, 3, 4, 1, 5)),
    ("48-channels", (2, 48, 8, 8, 16, 16), (0, 1, 2, 3, 4, 5), (0, 2, 3, 4, 5, 1), (0, 2, 3, 4, 1, 5)),
    ("no-aliasing-stride", (2, 48, 10, 20, 20), (0, 1, 2, 3, 4), (0, 2, 3, 4, 1), None),  # 16000-byte planes
    ("16-channels", (2, 16, 16, 32, 32), (0, 1, 2, 3, 4), (0, 2, 3, 4, 1), None),
    ("short-run", (2, 64, 64, 64, 4), (0, 1, 2, 3, 4), (0, 2, 3, 4, 1), None),
    ("small", (2, 32, 8, 8, 8), (0, 1, 2, 3, 4), (0, 2, 3, 4, 1), None),  # below TWO_PASS_MIN_NUMEL
    ("from-channels-last", (2, 32, 16, 16, 16), (0, 2, 3, 4, 1), (0, 1, 2, 3, 4), None),
    ("run-stays-innermost", (2, 32, 16, 16, 16), (0, 1, 2, 3, 4), (1, 0, 2, 3, 4), None),
]


@pytest.mark.parametrize(("shape", "memory", "order", "first"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cases(shape, memory, order, first):
    t = _in_memory_order(shape, memory)
    t[0, 0, 0, 0, 0] = float("nan")  # a copy moves non-finite values like any other
    t[-1, -1, -1, -1, -1] = float("-inf")
    assert two_pass_order(t, order) == first
    y = permuted_copy(t, order)
    expected = t.permute(order).contiguous()
    assert y.is_contiguous() and y.shape == expected.shape
    assert torch.equal(y.nan_to_num(), expected.nan_to_num()) and torch.equal(y.isnan(), expected.isnan())


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_orders_match_torch(data):
    dims = data.draw(st.integers(1, 5))
    shape = tuple(data.draw(st.lists(st.sampled_from([1, 2, 3, 8, 16, 17]), min_size=dims, max_size=dims)))
    memory = tuple(data.draw(st.permutations(range(dims))))
    order = tuple(data.draw(st.permutations(range(dims))))
    t = _in_memory_order(shape, memory)
    assert torch.equal(permuted_copy(t, order), t.permute(order).contiguous())


def test_large_random_orders_take_both_paths():
    """Shapes past the size threshold, where the two-pass path can apply, over every order of 4 dims."""
    shape, seen = (4, 32, 32, 64), set()
    assert torch.Size(shape).numel() >= TWO_PASS_MIN_NUMEL
    for memory in [(0, 1, 2, 3), (3, 1, 0, 2), (0, 2, 3, 1)]:
        t = _in_memory_order(shape, memory)
        for order in [(0, 1, 3, 2), (0, 2, 3, 1), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 1, 3)]:
            seen.add(two_pass_order(t, order) is not None)
            assert torch.equal(permuted_copy(t, order), t.permute(order).contiguous())
    assert seen == {True, False}


def test_gradient_flows_through_both_passes():
    t = _in_memory_order((2, 32, 16, 16, 16), (0, 1, 2, 3, 4)).requires_grad_()
    order = (0, 2, 3, 4, 1)
    assert two_pass_order(t, order) is not None
    g = torch.randn(t.permute(order).shape)
    (gt,) = torch.autograd.grad(permuted_copy(t, order), t, g)
    assert torch.equal(gt, g.permute(tuple(order.index(d) for d in range(5))))
