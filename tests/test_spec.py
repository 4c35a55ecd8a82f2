"""convnd.spec: the rank rule, argument broadcasting, padding normalization and output-size arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from configs import per_dim
from convnd import ConvndTypeError, ConvndValueError
from convnd.spec import argument_key, make_spec, resolve_kernel

# (kernel_size, class rank, dims=) -> kernel
RANK_RULES = [
    ((3, 3), 1, None, (3, 3)),  # a tuple decides, whatever the class says
    ((3,), 2, None, (3,)),
    ((2, 3, 4, 5), 3, None, (2, 3, 4, 5)),
    (3, 1, None, (3,)),  # an int: the class's rank
    (3, 2, None, (3, 3)),
    (4, 3, None, (4, 4, 4)),
    (3, None, 4, (3, 3, 3, 3)),  # an int on ConvNd: dims=
    (2, None, 6, (2,) * 6),
    ((3, 5), None, 2, (3, 5)),  # dims agreeing with the tuple
    ([1, 2, 3], None, None, (1, 2, 3)),  # lists are tuples
    (3, 2, 5, (3,) * 5),  # dims beats the class's rank
]


@pytest.mark.parametrize(("kernel_size", "rank", "dims", "expected"), RANK_RULES)
def test_rank_rule(kernel_size, rank, dims, expected):
    assert resolve_kernel(kernel_size, rank, dims) == expected


RANK_ERRORS = [
    (3, None, None, ConvndValueError, "kernel_size must be a tuple (one size per spatial dim) when dims= is not given"),
    ((3, 3), None, 3, ConvndValueError, "kernel_size must be a tuple of 3 ints, got (3, 3) (dims=3 was given)"),
    ((), 2, None, ConvndValueError, "kernel_size must be a non-empty tuple of ints >= 1, got ()"),
    ((3, 0), 2, None, ConvndValueError, "kernel_size must be an int >= 1 or a tuple of 2 such ints"),
    (3, None, 0, ConvndValueError, "dims must be an int >= 1, got 0"),
]


@pytest.mark.parametrize(("kernel_size", "rank", "dims", "error", "message"), RANK_ERRORS)
def test_rank_rule_errors(kernel_size, rank, dims, error, message):
    with pytest.raises(error) as caught:
        resolve_kernel(kernel_size, rank, dims)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("dims", [1, 2, 3, 4, 5])
def test_ints_broadcast_to_the_rank(dims):
    spec = make_spec((3,) * dims, stride=2, padding=1, dilation=3)
    assert spec.stride == (2,) * dims
    assert spec.dilation == (3,) * dims
    assert spec.padding == ((1, 1),) * dims
    assert spec.dims == dims


@pytest.mark.parametrize("argument", ["stride", "dilation", "padding"])
@pytest.mark.parametrize("length", [1, 3])
def test_tuple_of_another_length_is_an_error(argument, length):
    with pytest.raises(ConvndValueError, match=f"^{argument} must be .*the convolution has 2 spatial dims"):
        make_spec((3, 3), **{argument: (1,) * length})


# padding argument -> (low, high) pairs and torch's native form, for kernel (3, 4) and dilation (1, 2)
PADDING_FORMS = [
    (0, ((0, 0), (0, 0)), (0, 0)),
    (2, ((2, 2), (2, 2)), (2, 2)),
    ((1, 2), ((1, 1), (2, 2)), (1, 2)),
    ([1, 2], ((1, 1), (2, 2)), (1, 2)),
    ("valid", ((0, 0), (0, 0)), "valid"),
    # 'same': total d*(k-1) = (2, 6), low total//2, the odd extra on the high side
    ("same", ((1, 1), (3, 3)), "same"),
    (((1, 2), (0, 3)), ((1, 2), (0, 3)), None),  # asymmetric pairs: torch cannot express them
    (((1, 1), (2, 2)), ((1, 1), (2, 2)), (1, 2)),  # symmetric pairs are torch's ints
    ((1, (0, 2)), ((1, 1), (0, 2)), None),  # a mix of ints and pairs
    ([[0, 1], 2], ((0, 1), (2, 2)), None),
]


@pytest.mark.parametrize(("padding", "pairs", "native"), PADDING_FORMS)
def test_padding_forms(padding, pairs, native):
    spec = make_spec((3, 4), padding=padding, dilation=(1, 2))
    assert spec.padding == pairs
    assert spec.native_padding == native


# 'same' for even kernels and dilation: torch's rule, total = d*(k-1), low = total // 2
SAME = [
    ((2,), (1,), ((0, 1),)),
    ((4,), (1,), ((1, 2),)),
    ((4,), (3,), ((4, 5),)),
    ((2, 3), (1, 1), ((0, 1), (1, 1))),
    ((2, 2, 2, 2), (1, 2, 3, 4), ((0, 1), (1, 1), (1, 2), (2, 2))),
    ((1, 5), (7, 2), ((0, 0), (4, 4))),
]


@pytest.mark.parametrize(("kernel", "dilation", "pairs"), SAME)
def test_same_padding_puts_the_odd_extra_high(kernel, dilation, pairs):
    spec = make_spec(kernel, padding="same", dilation=dilation)
    assert spec.padding == pairs
    assert spec.output_size((9,) * len(kernel)) == (9,) * len(kernel)


@given(dims=st.integers(1, 5), data=st.data())
def test_output_size_matches_the_formula(dims, data):
    kernel, stride, dilation = (data.draw(per_dim(dims, 1, 4)) for _ in range(3))
    pairs = tuple(zip(data.draw(per_dim(dims, 0, 3)), data.draw(per_dim(dims, 0, 3))))
    size = data.draw(per_dim(dims, 1, 20))
    spec = make_spec(kernel, stride, pairs, dilation)
    expected = tuple(
        (n + lo + hi - d * (k - 1) - 1) // s + 1 for n, (lo, hi), d, k, s in zip(size, pairs, dilation, kernel, stride)
    )
    assert spec.output_size(size) == expected


def test_output_size_by_hand():
    # 10 + 1 + 2 - 2*(3-1) - 1 = 8, // 3 = 2, + 1 = 3; 7 + 0 - 0 - 1 = 6, // 1 + 1 = 7
    assert make_spec((3, 1), stride=(3, 1), padding=((1, 2), 0), dilation=(2, 1)).output_size((10, 7)) == (3, 7)


def test_specs_are_cached_and_lists_equal_tuples():
    assert make_spec([3, 3], [1, 1], [[1, 1], 1]) is make_spec((3, 3), (1, 1), ((1, 1), 1))


@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [
        ("stride", 1.0, ConvndTypeError),
        ("stride", True, ConvndTypeError),
        ("padding", 1.0, ConvndTypeError),
        ("dilation", (1, True), ConvndTypeError),
        ("groups", 1.0, ConvndTypeError),
        ("groups", True, ConvndTypeError),
    ],
)
def test_cache_never_skips_validation(argument, value, error):
    make_spec((3, 3), **{argument: 1 if argument != "dilation" else (1, 1)})  # the valid twin is cached first
    with pytest.raises(error):
        make_spec((3, 3), **{argument: value})


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ((1, 2, "same"), (1, 2, "same")),
        (([1, 2], [[0, 1], 3]), ((1, 2), ((0, 1), 3))),  # lists are tuples
        ((torch.Size([3, 3]), 1), (torch.Size([3, 3]), 1)),
        ((1.0,), None),  # 1.0 == 1 would share a key with 1
        ((True,), None),
        (((1, True),), None),
        ((np.int64(1),), None),  # accepted (it has __index__), but validated on every call
    ],
)
def test_argument_key_tells_apart_what_validation_does(arguments, key):
    assert argument_key(arguments) == key


def test_select_and_lifted_keep_the_per_dim_values():
    spec = make_spec((2, 3, 4), stride=(1, 2, 3), padding=((0, 1), 2, 3), dilation=(3, 2, 1))
    inner = spec.select([2, 1])
    assert (inner.kernel, inner.stride, inner.dilation, inner.padding) == ((4, 3), (3, 2), (1, 2), ((3, 3), (2, 2)))
    assert inner.native_padding == (3, 2)
    lifted = make_spec((3,), padding=2).lifted(2)
    assert (lifted.kernel, lifted.padding, lifted.native_padding) == ((1, 1, 3), ((0, 0), (0, 0), (2, 2)), (0, 0, 2))
    assert spec.unpadded().padding == ((0, 0),) * 3


# (make_spec arguments, native_arguments): one int where every dim agrees, what torch parses fastest
NATIVE_ARGUMENTS = [
    ({"kernel": (3, 3), "padding": 1}, (1, 1, 1)),
    ({"kernel": (3, 3, 3), "stride": (2, 2, 2), "padding": (1, 2, 1), "dilation": 3}, (2, (1, 2, 1), 3)),
    ({"kernel": (3,), "stride": (2,), "padding": 4}, (2, 4, 1)),
    ({"kernel": (3, 5), "padding": "same"}, (1, "same", 1)),
    ({"kernel": (3, 5), "stride": (1, 2), "padding": "valid"}, ((1, 2), "valid", 1)),
    ({"kernel": (3, 3), "padding": ((0, 1), 1)}, (1, None, 1)),  # asymmetric: no native form
]


@pytest.mark.parametrize(("arguments", "expected"), NATIVE_ARGUMENTS)
def test_native_arguments_are_one_int_where_the_dims_agree(arguments, expected):
    spec = make_spec(**arguments)
    assert spec.native_arguments == expected
    assert "native_arguments" not in repr(spec)


def test_native_arguments_follow_every_derived_spec():
    """Derived, not copied: a spec made by replace (select, lifted, unpadded, output padding) has its own."""
    spec = make_spec((2, 3, 4), stride=(2, 1, 1), padding=(1, 2, 2), dilation=(1, 2, 2))
    assert spec.native_arguments == ((2, 1, 1), (1, 2, 2), (1, 2, 2))
    assert spec.select([1, 2]).native_arguments == (1, 2, 2)
    assert spec.unpadded().native_arguments == ((2, 1, 1), 0, (1, 2, 2))
    assert make_spec((3,), padding=2).lifted(2).native_arguments == (1, (0, 0, 2), 1)
    transposed = make_spec((3, 3), stride=2, transposed=True)
    assert transposed.with_output_padding((1, 1)).native_arguments == transposed.native_arguments == (2, 0, 1)


@pytest.mark.parametrize("rank, lowered, native", [(1, (2, 3), (4,)), (2, (2,), (3, 4)), (3, (), (2, 3, 4))])
def test_split_gives_the_lowered_dims_then_the_native_ones(rank, lowered, native):
    spec = make_spec((2, 3, 4), stride=(1, 2, 3), padding=((0, 1), 2, 3))
    outer, inner = spec.split(rank)
    assert (outer.kernel, inner.kernel) == (lowered, native)
    assert outer.padding + inner.padding == spec.padding and outer.stride + inner.stride == spec.stride
