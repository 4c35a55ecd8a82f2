"""Transposed convolution: torch parity (N <= 3), the NumPy reference and the adjoint identity (N = 1..5),
gradcheck (N = 4), ``output_size=``, the rank rules and exact error messages."""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

import convnd
from configs import TransposedCase, batched, transposed_cases
from convnd import reference
from convnd.functional import run
from convnd.spec import make_spec

TORCH_FUNCTIONAL = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
TORCH_MODULE = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
CONVND_MODULE = {1: convnd.ConvTranspose1d, 2: convnd.ConvTranspose2d, 3: convnd.ConvTranspose3d}


# --- N <= 3: bit-identical to torch ------------------------------------------------------------------------


@given(case=transposed_cases(st.integers(1, 3), extra_padding=1))
def test_functional_is_bit_identical_to_torch(case: TransposedCase, device: torch.device) -> None:
    x, w, b = case.operands(torch.float32, device)
    expected = TORCH_FUNCTIONAL[case.dims](x, w, b, *case.args)
    assert torch.equal(convnd.conv_transpose(x, w, b, *case.args), expected)


def module_pair(case: TransposedCase, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The convnd module and torch's, each built right after the same manual_seed."""
    kwargs = dict(
        stride=case.stride,
        padding=case.padding,
        output_padding=case.output_padding,
        groups=case.groups,
        bias=case.bias,
        dilation=case.dilation,
    )
    torch.manual_seed(seed)
    ours = CONVND_MODULE[case.dims](case.in_channels, case.out_channels, case.kernel, **kwargs)
    torch.manual_seed(seed)
    theirs = TORCH_MODULE[case.dims](case.in_channels, case.out_channels, case.kernel, **kwargs)
    return ours, theirs


@given(case=transposed_cases(st.integers(1, 3)), seed=st.integers(0, 2**16))
def test_module_is_a_drop_in_for_torch(case: TransposedCase, seed: int) -> None:
    ours, theirs = module_pair(case, seed)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = case.operands(torch.float32)[0]
    assert torch.equal(ours(x), theirs(x))
    # the N-d class with the same tuple kernel is the same module under another name
    torch.manual_seed(seed)
    nd = convnd.ConvTransposeNd(
        case.in_channels, case.out_channels, case.kernel, case.stride, case.padding, case.output_padding,
        case.groups, case.bias, case.dilation,
    )  # fmt: skip
    assert repr(nd) == repr(theirs).replace(type(theirs).__name__, "ConvTransposeNd", 1)
    assert torch.equal(nd(x), theirs(x))


@given(case=transposed_cases(st.integers(1, 3), max_kernel=2), leading=st.booleans())
def test_output_size_matches_torch_for_every_reachable_size(case: TransposedCase, leading: bool) -> None:
    """Where torch's module takes output_size convnd gives its exact result; convnd also reaches the sizes a
    valid output_padding gives when dilation > stride (torch's module stops at stride - 1); the rest is an error."""
    ours, theirs = module_pair(case, 0)
    x = case.operands(torch.float32)[0]
    prefix = tuple(x.shape[: x.dim() - case.dims]) if leading else ()
    smallest = tuple(o - op for o, op in zip(theirs(x).shape[-case.dims :], case.output_padding))
    largest = tuple(lo + max(s, d) - 1 for lo, s, d in zip(smallest, case.stride, case.dilation))
    # every size from one short of the range to one past convnd's end of it
    for size in itertools.product(*(range(lo - 1, hi + 2) for lo, hi in zip(smallest, largest))):
        in_ours = all(lo <= n <= hi for n, lo, hi in zip(size, smallest, largest)) and min(size) >= 1
        in_torch = all(lo <= n < lo + s for n, lo, s in zip(size, smallest, case.stride)) and min(size) >= 1
        assert in_ours or not in_torch, "convnd must accept every size torch accepts"
        if in_torch:
            assert torch.equal(ours(x, output_size=[*prefix, *size]), theirs(x, output_size=[*prefix, *size]))
        elif in_ours:
            with pytest.raises(ValueError, match="valid sizes range"):
                theirs(x, output_size=[*prefix, *size])
            padding = tuple(n - lo for n, lo in zip(size, smallest))
            expected = TORCH_FUNCTIONAL[case.dims](
                x, theirs.weight, theirs.bias, case.stride, case.padding, padding, case.groups, case.dilation
            )
            assert torch.equal(ours(x, output_size=[*prefix, *size]), expected)
        elif min(size) >= 1:
            message = (
                f"output_size must be between {smallest} and {largest} in each spatial dim, got {size} "
                f"(the sizes reachable from input size {case.size})"
            )
            with pytest.raises(convnd.ConvndValueError, match=re.escape(message)):
                ours(x, output_size=[*prefix, *size])
        else:
            with pytest.raises(convnd.ConvndValueError, match=re.escape("output_size must be")):
                ours(x, output_size=[*prefix, *size])


def test_output_size_range_when_dilation_exceeds_stride() -> None:
    """stride 1, dilation 2: torch's module takes only the smallest size, F.conv_transpose1d also makes the next."""
    ours, theirs = module_pair(TransposedCase((3,), (1,), (0,), (0,), (2,), 1, 2, 2, (5,), 1, True), 0)
    x = torch.randn(1, 2, 5)
    assert torch.equal(ours(x, output_size=[9]), theirs(x, output_size=[9]))
    with pytest.raises(ValueError, match=re.escape("valid sizes range from [9] to [9]")):
        theirs(x, output_size=[10])
    expected = F.conv_transpose1d(x, theirs.weight, theirs.bias, 1, 0, 1, 1, 2)
    assert torch.equal(ours(x, output_size=[10]), expected)
    message = "output_size must be between (9,) and (10,) in each spatial dim, got (11,) (the sizes reachable from"
    with pytest.raises(convnd.ConvndValueError, match=re.escape(message)):
        ours(x, output_size=[11])


# --- N = 1..5: the reference, the adjoint, gradcheck ------------------------------------------------------


# every knob at once for N = 4 and 5: stride, output_padding up to max(stride, dilation) - 1 (dilation > stride
# too), groups, padding at its largest, dilation * (kernel - 1), unbatched and batched
FEATURED = [
    TransposedCase(
        (2, 3, 1, 2), (2, 1, 3, 1), (1, 4, 0, 2), (1, 1, 2, 0), (1, 2, 1, 2), 2, 4, 2, (3, 4, 2, 3), None, True
    ),
    TransposedCase(
        (2, 2, 2, 2, 2), (1, 2, 1, 3, 2), (2, 1, 0, 1, 3), (1, 1, 0, 2, 2), (2, 1, 1, 1, 3), 2, 2, 4, (2,) * 5, 2, True
    ),
]


@example(case=FEATURED[0])
@example(case=FEATURED[1])
@given(case=transposed_cases(st.integers(1, 5)))
def test_agrees_with_the_reference(case: TransposedCase, device: torch.device) -> None:
    x, w, b = case.operands(torch.float64, device)
    y = convnd.conv_transpose(x, w, b, *case.args)
    expected = reference.conv_transpose(batched(x, case), w, b, *case.args)
    np.testing.assert_allclose(batched(y, case).cpu().numpy(), expected, rtol=1e-10, atol=1e-10)


@given(case=transposed_cases(st.integers(1, 5), max_kernel=2), native_rank=st.sampled_from((1, 2, 3)))
def test_every_native_rank_agrees_with_the_reference(case: TransposedCase, native_rank: int) -> None:
    """The planner's scatter (tapsum) and lift for a transposed spec, on native kernels of every rank."""
    x, w, b = case.operands(torch.float64)
    spec = make_spec(
        case.kernel, case.stride, case.padding, case.dilation, case.groups, transposed=True,
        output_padding=case.output_padding,
    )  # fmt: skip
    y = run(x, w, b, spec, native_rank=native_rank)
    expected = reference.conv_transpose(batched(x, case), w, b, *case.args)
    np.testing.assert_allclose(batched(y, case).numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims", [4, 5])
def test_module_agrees_with_the_reference(dims: int) -> None:
    m = convnd.ConvTransposeNd(4, 2, 2, stride=2, padding=1, output_padding=1, groups=2, dims=dims, dtype=torch.float64)
    x = torch.randn(1, 4, *(2,) * dims, dtype=torch.float64)
    s = m.spec
    expected = reference.conv_transpose(x, m.weight, m.bias, s.stride, m.padding, s.output_padding, 2, s.dilation)
    y = m(x)
    assert y.shape == (1, 2, *(3,) * dims)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    sized = m(x, output_size=(2,) * dims)  # the smallest reachable size: no output_padding
    np.testing.assert_allclose(sized.detach().numpy(), expected[(..., *(slice(0, 2),) * dims)], rtol=1e-10)


@example(case=FEATURED[0])
@example(case=FEATURED[1])
@given(case=transposed_cases(st.integers(1, 5)))
def test_adjoint_identity(case: TransposedCase, device: torch.device) -> None:
    """<conv(x, w), y> == <x, conv_transpose(y, w)>, output_padding chosen so conv_transpose returns x's shape."""
    _, w, _ = case.operands(
        torch.float64, device
    )  # (C, C_out / groups, *k): also a conv weight from C_out to C channels
    window = [d * (k - 1) + 1 for k, d in zip(case.kernel, case.dilation)]
    spatial = tuple(max(n, win - 2 * p) for n, win, p in zip(case.size, window, case.padding))  # conv output >= 1
    leading = () if case.batch is None else (case.batch,)
    x = torch.randn((*leading, case.out_channels, *spatial), dtype=torch.float64, device=device)
    y = convnd.conv(x, w, None, case.stride, case.padding, case.dilation, case.groups)
    y_dual = torch.randn_like(y)
    output_padding = tuple((n + 2 * p - win) % s for n, p, win, s in zip(spatial, case.padding, window, case.stride))
    x_dual = convnd.conv_transpose(
        y_dual, w, None, case.stride, case.padding, output_padding, case.groups, case.dilation
    )
    assert x_dual.shape == x.shape
    lhs, rhs = (y * y_dual).sum(), (x * x_dual).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10), (lhs, rhs)


# (kernel, keywords): strided with output_padding, grouped and dilated, and an outer kernel of 1 (each tap then
# writes a whole outer dim, the in-place case autograd once rejected)
GRADCHECK_CASES = {
    "strided": ((2, 2, 2, 2), dict(stride=(2, 1, 2, 3), padding=(1, 0, 0, 1), output_padding=(1, 0, 1, 2))),
    "grouped-dilated": (
        (2, 2, 2, 2),
        dict(padding=(0, 1, 1, 0), output_padding=(1, 0, 0, 0), groups=2, dilation=(2, 2, 1, 1)),
    ),
    "outer-kernel-1": ((1, 2, 1, 2), dict(stride=(1, 2, 1, 1), groups=2)),
}


@pytest.mark.parametrize(("kernel", "kwargs"), GRADCHECK_CASES.values(), ids=GRADCHECK_CASES.keys())
def test_gradcheck_4d(kernel: tuple[int, ...], kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    groups = kwargs.get("groups", 1)
    x = torch.randn(1, 2, 2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4 // groups, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: convnd.conv_transpose(x, w, b, **kwargs), (x, w, b))


# --- rank rules and bad inputs -----------------------------------------------------------------------------


def test_a_tuple_kernel_decides_the_rank() -> None:
    m = convnd.ConvTranspose2d(1, 1, (3,))
    assert m.kernel_size == (3,) and m.weight.shape == (1, 1, 3)
    ref = torch.nn.ConvTranspose1d(1, 1, 3)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(1, 1, 10)
    assert torch.equal(m(x), ref(x))
    assert convnd.ConvTranspose3d(1, 1, (2, 2, 2, 2)).weight.shape == (1, 1, 2, 2, 2, 2)
    assert convnd.ConvTransposeNd(1, 1, 3, dims=4, stride=2).stride == (2, 2, 2, 2)


def test_non_contiguous_operands() -> None:
    x = torch.randn(1, 3, 4, 2, 3, 5).transpose(2, 5)  # (1, 3, 5, 2, 3, 4), not contiguous
    w = torch.randn(2, 3, 2, 1, 2, 3).transpose(0, 1)  # (3, 2, 2, 1, 2, 3), not contiguous
    kwargs = dict(stride=(2, 1, 1, 2), padding=(1, 0, 0, 1), output_padding=(1, 0, 0, 0))
    expected = reference.conv_transpose(x, w, None, kwargs["stride"], kwargs["padding"], kwargs["output_padding"])
    np.testing.assert_allclose(convnd.conv_transpose(x, w, **kwargs).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_unbatched_matches_batched() -> None:
    m = convnd.ConvTransposeNd(2, 3, (2, 3, 1, 2), stride=(2, 1, 1, 2), padding=(0, 1, 0, 0))
    x = torch.randn(2, 3, 4, 2, 3)
    assert torch.equal(m(x), m(x.unsqueeze(0)).squeeze(0))


X2 = torch.randn(1, 4, 5, 5)
W2 = torch.randn(4, 2, 3, 3)
ERRORS = [
    (
        lambda: convnd.conv_transpose(X2, W2, stride=2, output_padding=2),
        "output_padding must be smaller than max(stride, dilation) in every dim, got (2, 2) "
        "(stride=(2, 2), dilation=(1, 1))",
    ),
    (
        lambda: convnd.conv_transpose(X2, W2, stride=(2, 1), dilation=(1, 3), output_padding=(1, 3)),
        "output_padding must be smaller than max(stride, dilation) in every dim, got (1, 3) "
        "(stride=(2, 1), dilation=(1, 3))",
    ),
    (
        lambda: convnd.ConvTransposeNd(4, 2, (3, 3, 3, 3), output_padding=1),
        "output_padding must be smaller than max(stride, dilation) in every dim, got (1, 1, 1, 1) "
        "(stride=(1, 1, 1, 1), dilation=(1, 1, 1, 1))",
    ),
    (
        lambda: convnd.conv_transpose(X2, W2, padding="same"),
        "padding must be an int >= 0 or a tuple of 2 such ints (one per spatial dim), got 'same' "
        "(a transposed convolution takes no padding words)",
    ),
    (
        lambda: convnd.ConvTranspose2d(4, 2, 3, padding="valid"),
        "padding must be an int >= 0 or a tuple of 2 such ints (one per spatial dim), got 'valid' "
        "(a transposed convolution takes no padding words)",
    ),
    (
        lambda: convnd.conv_transpose(X2, W2, padding=[(1, 2), (0, 0)]),
        "padding must be an int >= 0 or a tuple of 2 such ints (one per spatial dim), got ((1, 2), (0, 0)) "
        "(a transposed convolution crops its output symmetrically: no (low, high) pairs)",
    ),
    (
        lambda: convnd.ConvTranspose2d(4, 2, 3, padding_mode="reflect"),
        "padding_mode must be 'zeros', got 'reflect' (a transposed convolution pads only with zeros, as torch)",
    ),
    (
        lambda: convnd.ConvTransposeNd(4, 2, 3, dims=4, padding_mode="circular"),
        "padding_mode must be 'zeros', got 'circular' (a transposed convolution pads only with zeros, as torch)",
    ),
    (
        lambda: convnd.conv_transpose(torch.randn(1, 3, 5, 5), W2),
        "input must be a tensor with 4 channels in dim 1, got a tensor of shape (1, 3, 5, 5) and dtype torch.float32 "
        "(weight.shape[0])",
    ),
    (
        lambda: convnd.conv_transpose(X2, W2, groups=3),
        "groups must be a divisor of in_channels (weight.shape[0]) = 4, got 3",
    ),
    (lambda: convnd.ConvTranspose2d(4, 6, 3, groups=4), "out_channels must be divisible by groups=4, got 6"),
    (lambda: convnd.ConvTranspose2d(3, 4, 3, groups=2), "in_channels must be divisible by groups=2, got 3"),
    (
        lambda: convnd.conv_transpose(X2, W2, torch.randn(4)),
        "bias must be a tensor of shape (2,), got a tensor of shape (4,) and dtype torch.float32 "
        "(one value per output channel)",
    ),
    (
        lambda: convnd.conv_transpose(X2, W2, padding=(4, 1)),
        "padding must be small enough to leave an output for input size (5, 5), got (4, 1) "
        "(the output size would be (-1, 5))",
    ),
    (
        lambda: convnd.ConvTranspose2d(4, 2, 3)(X2, output_size=[1, 2, 7]),
        "output_size must be a sequence of 2 spatial sizes, or 4 with the input's leading sizes in front, "
        "got (1, 2, 7) (the input has 4 dims)",
    ),
    (
        lambda: convnd.ConvTranspose2d(4, 2, 3)(X2[0], output_size=[1, 4, 7, 7]),
        "output_size must be a sequence of 2 spatial sizes, or 3 with the input's leading sizes in front, "
        "got (1, 4, 7, 7) (the input has 3 dims)",
    ),
    (
        lambda: convnd.ConvTranspose2d(4, 2, 3, stride=2)(X2, output_size=[11, 13]),
        "output_size must be between (11, 11) and (12, 12) in each spatial dim, got (11, 13) "
        "(the sizes reachable from input size (5, 5))",
    ),
    (
        lambda: convnd.ConvTranspose2d(4, 2, 3)(X2, output_size=7),
        "output_size must be a sequence of 2 spatial sizes, or 4 with the input's leading sizes in front, "
        "got 7 (the input has 4 dims)",
    ),
    (
        lambda: convnd.ConvTransposeNd(4, 2, 3, dims=4)(torch.randn(4, 2, 2, 2, 2), output_size=(4, 4, 4, 5)),
        "output_size must be between (4, 4, 4, 4) and (4, 4, 4, 4) in each spatial dim, got (4, 4, 4, 5) "
        "(the sizes reachable from input size (2, 2, 2, 2))",
    ),
    (
        lambda: convnd.ConvTranspose1d(4, 2, 3, stride=3, padding=2)(torch.randn(4, 1), output_size=[0]),
        "output_size must be an int >= 1 or a tuple of 1 such ints (one per spatial dim), got (0,)",
    ),
    (
        lambda: convnd.ConvTransposeNd(1, 1, 3),
        "kernel_size must be a tuple (one size per spatial dim) when dims= is not given, got 3 "
        "(ConvNd cannot tell the number of spatial dims from an int)",
    ),
    (
        lambda: convnd.ConvTransposeNd(1, 1, (3, 3), dims=3),
        "kernel_size must be a tuple of 3 ints, got (3, 3) (dims=3 was given)",
    ),
    (
        lambda: convnd.ConvTranspose2d(1, 1, (3,))(torch.randn(1, 1, 4, 4)),
        "input must be a tensor with 2 (unbatched) or 3 (batched) dims, got a tensor of shape (1, 1, 4, 4) "
        "and dtype torch.float32 (the weight of shape (1, 1, 3) makes this a 1-d convolution)",
    ),
    (
        lambda: convnd.conv_transpose(X2, W2, stride=(2, 2, 2)),
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got (2, 2, 2) "
        "(the convolution has 2 spatial dims)",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), ERRORS, ids=[m.split(" must")[0] + str(i) for i, (_, m) in enumerate(ERRORS)]
)
def test_bad_input_message(call: Any, message: str) -> None:
    with pytest.raises(convnd.ConvndError) as info:
        call()
    assert str(info.value) == message


def test_a_repeated_output_size_reuses_one_spec_and_its_checks() -> None:
    # the spec for an output_size is cached: the same object each call, so the shape checks keyed by it hit
    from convnd import checks
    from convnd.modules import spec_for_output_size

    m = convnd.ConvTranspose2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 5, 5)
    first = spec_for_output_size(m.spec, x, (12, 12))
    assert spec_for_output_size(m.spec, x, (12, 12)) is first and first.output_padding == (1, 1)
    m(x, output_size=(12, 12))
    before = len(checks._PASSED)
    for _ in range(5):
        m(x, output_size=(12, 12))
    assert len(checks._PASSED) == before  # no new entry per call (it used to add one each time)
