"""Bad input: every case raises convnd's error class (a ValueError/TypeError) with the exact message.

Each message is read as a user would: it names the argument, what was expected and what was given.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convnd
from convnd import ConvndError, ConvndTypeError, ConvndValueError

x = torch.randn(1, 2, 5, 5)
w = torch.randn(3, 2, 3, 3)

# (case, call, error class, exact message)
BAD_INPUTS = [
    (
        "rank mismatch",
        lambda: convnd.conv(torch.randn(2, 5, 5, 5, 5), w),
        ConvndValueError,
        "input must be a tensor with 3 (unbatched) or 4 (batched) dims, got a tensor of shape (2, 5, 5, 5, 5) and dtype torch.float32 (the weight of shape (3, 2, 3, 3) makes this a 2-d convolution)",
    ),
    (
        "rank mismatch, too few dims",
        lambda: convnd.conv(torch.randn(5, 5), w),
        ConvndValueError,
        "input must be a tensor with 3 (unbatched) or 4 (batched) dims, got a tensor of shape (5, 5) and dtype torch.float32 (the weight of shape (3, 2, 3, 3) makes this a 2-d convolution)",
    ),
    (
        "stride tuple too long",
        lambda: convnd.conv(x, w, stride=(1, 2, 3)),
        ConvndValueError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got (1, 2, 3) (the convolution has 2 spatial dims)",
    ),
    (
        "stride tuple too short",
        lambda: convnd.conv(x, w, stride=(1,)),
        ConvndValueError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got (1,) (the convolution has 2 spatial dims)",
    ),
    (
        "zero stride",
        lambda: convnd.conv(x, w, stride=0),
        ConvndValueError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got 0",
    ),
    (
        "negative stride",
        lambda: convnd.conv(x, w, stride=-1),
        ConvndValueError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got -1",
    ),
    (
        "negative stride in tuple",
        lambda: convnd.conv(x, w, stride=(1, -2)),
        ConvndValueError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got (1, -2)",
    ),
    (
        "float stride",
        lambda: convnd.conv(x, w, stride=1.5),
        ConvndTypeError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got 1.5",
    ),
    (
        "whole float stride",
        lambda: convnd.conv(x, w, stride=1.0),
        ConvndTypeError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got 1.0",
    ),
    (
        "bool stride",
        lambda: convnd.conv(x, w, stride=True),
        ConvndTypeError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got True",
    ),
    (
        "string stride",
        lambda: convnd.conv(x, w, stride="1"),
        ConvndTypeError,
        "stride must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got '1'",
    ),
    (
        "zero dilation",
        lambda: convnd.conv(x, w, dilation=0),
        ConvndValueError,
        "dilation must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got 0",
    ),
    (
        "negative padding",
        lambda: convnd.conv(x, w, padding=-1),
        ConvndValueError,
        "padding must be an int >= 0, 'valid', 'same', or a tuple of 2 entries (one per spatial dim), each an int >= 0 or a (low, high) pair, got -1",
    ),
    (
        "negative padding in a pair",
        lambda: convnd.conv(x, w, padding=((1, -1), 0)),
        ConvndValueError,
        "padding must be an int >= 0, 'valid', 'same', or a tuple of 2 entries (one per spatial dim), each an int >= 0 or a (low, high) pair, got ((1, -1), 0)",
    ),
    (
        "float padding",
        lambda: convnd.conv(x, w, padding=1.0),
        ConvndTypeError,
        "padding must be an int >= 0, 'valid', 'same', or a tuple of 2 entries (one per spatial dim), each an int >= 0 or a (low, high) pair, got 1.0",
    ),
    (
        "padding tuple too long",
        lambda: convnd.conv(x, w, padding=(1, 2, 3)),
        ConvndValueError,
        "padding must be an int >= 0, 'valid', 'same', or a tuple of 2 entries (one per spatial dim), each an int >= 0 or a (low, high) pair, got (1, 2, 3) (the convolution has 2 spatial dims)",
    ),
    (
        "padding entry not a pair",
        lambda: convnd.conv(x, w, padding=((1, 2, 3), 0)),
        ConvndValueError,
        "padding must be an int >= 0, 'valid', 'same', or a tuple of 2 entries (one per spatial dim), each an int >= 0 or a (low, high) pair, got ((1, 2, 3), 0) (entry (1, 2, 3) is not a (low, high) pair)",
    ),
    (
        "unknown padding word",
        lambda: convnd.conv(x, w, padding="full"),
        ConvndValueError,
        "padding must be an int >= 0, 'valid', 'same', or a tuple of 2 entries (one per spatial dim), each an int >= 0 or a (low, high) pair, got 'full'",
    ),
    (
        "unknown padding mode",
        lambda: convnd.conv(x, w, padding_mode="mirror"),
        ConvndValueError,
        "padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', got 'mirror'",
    ),
    (
        "padding mode not a string",
        lambda: convnd.conv(x, w, padding_mode=None),
        ConvndTypeError,
        "padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', got None",
    ),
    (
        "same with stride",
        lambda: convnd.conv(x, w, stride=(1, 2), padding="same"),
        ConvndValueError,
        "padding must be an int, a tuple or 'valid' when stride is not 1, got 'same' ('same' needs stride 1 in every dim, got stride=(1, 2))",
    ),
    ("zero groups", lambda: convnd.conv(x, w, groups=0), ConvndValueError, "groups must be an int >= 1, got 0"),
    ("float groups", lambda: convnd.conv(x, w, groups=1.0), ConvndTypeError, "groups must be an int >= 1, got 1.0"),
    (
        "groups not dividing out channels",
        lambda: convnd.conv(torch.randn(1, 4, 5, 5), w, groups=2),
        ConvndValueError,
        "groups must be a divisor of out_channels (weight.shape[0]) = 3, got 2",
    ),
    (
        "channel mismatch",
        lambda: convnd.conv(torch.randn(1, 3, 5, 5), w),
        ConvndValueError,
        "input must be a tensor with 2 channels in dim 1, got a tensor of shape (1, 3, 5, 5) and dtype torch.float32 (weight.shape[1] * groups = 2 * 1)",
    ),
    (
        "channel mismatch with groups",
        lambda: convnd.conv(torch.randn(1, 2, 5, 5), torch.randn(4, 2, 3, 3), groups=2),
        ConvndValueError,
        "input must be a tensor with 4 channels in dim 1, got a tensor of shape (1, 2, 5, 5) and dtype torch.float32 (weight.shape[1] * groups = 2 * 2)",
    ),
    (
        "channel mismatch unbatched",
        lambda: convnd.conv(torch.randn(3, 5, 5), w),
        ConvndValueError,
        "input must be a tensor with 2 channels in dim 0, got a tensor of shape (3, 5, 5) and dtype torch.float32 (weight.shape[1] * groups = 2 * 1; a 3-dim input to a 2-d convolution is unbatched (C_in, *spatial))",
    ),
    (
        "kernel larger than padded input",
        lambda: convnd.conv(torch.randn(1, 2, 5, 2), w, padding=(0, (0, 0))),
        ConvndValueError,
        "input must be a tensor of size >= 3 in spatial dim 1 after padding (the dilated kernel's extent), got a tensor of shape (1, 2, 5, 2) and dtype torch.float32 (size 2 + padding 0 + 0 = 2)",
    ),
    (
        "dilated kernel larger than input",
        lambda: convnd.conv(x, w, dilation=3),
        ConvndValueError,
        "input must be a tensor of size >= 7 in spatial dim 0 after padding (the dilated kernel's extent), got a tensor of shape (1, 2, 5, 5) and dtype torch.float32 (size 5 + padding 0 + 0 = 5)",
    ),
    (
        "kernel larger than input past 3 dims",
        lambda: convnd.conv(torch.randn(1, 1, 4, 4, 4, 1), torch.randn(1, 1, 2, 2, 2, 2)),
        ConvndValueError,
        "input must be a tensor of size >= 2 in spatial dim 3 after padding (the dilated kernel's extent), got a tensor of shape (1, 1, 4, 4, 4, 1) and dtype torch.float32 (size 1 + padding 0 + 0 = 1)",
    ),
    (
        "zero spatial size",
        lambda: convnd.conv(torch.randn(1, 2, 0, 5), w),
        ConvndValueError,
        "input must be a tensor whose last 2 (spatial) sizes are all >= 1, got a tensor of shape (1, 2, 0, 5) and dtype torch.float32",
    ),
    (
        "reflect padding wider than input",
        lambda: convnd.conv(x, w, padding=5, padding_mode="reflect"),
        ConvndValueError,
        "padding must be smaller than the input size 5 in spatial dim 0 for padding_mode='reflect', got ((5, 5), (5, 5)) (reflect padding cannot be wider than the input)",
    ),
    (
        "reflect padding wider than input past 3 dims",
        lambda: convnd.conv(
            torch.randn(1, 1, 3, 3, 3, 2),
            torch.randn(1, 1, 1, 1, 1, 1),
            padding=(0, 0, 0, (0, 2)),
            padding_mode="reflect",
        ),
        ConvndValueError,
        "padding must be smaller than the input size 2 in spatial dim 3 for padding_mode='reflect', got ((0, 0), (0, 0), (0, 0), (0, 2)) (reflect padding cannot be wider than the input)",
    ),
    (
        "circular padding too wide",
        lambda: convnd.conv(x, w, padding=6, padding_mode="circular"),
        ConvndValueError,
        "padding must be at most the input size 5 in spatial dim 0 for padding_mode='circular', got ((6, 6), (6, 6)) (circular padding wraps around the input once at most)",
    ),
    (
        "weight dtype differs",
        lambda: convnd.conv(x, w.double()),
        ConvndValueError,
        "weight must be a tensor of the input's dtype torch.float32, got a tensor of shape (3, 2, 3, 3) and dtype torch.float64 (convnd does not mix dtypes)",
    ),
    (
        "bias dtype differs",
        lambda: convnd.conv(x, w, torch.randn(3, dtype=torch.float64)),
        ConvndValueError,
        "bias must be a tensor of the input's dtype torch.float32, got a tensor of shape (3,) and dtype torch.float64 (convnd does not mix dtypes)",
    ),
    (
        "weight on another device",
        lambda: convnd.conv(x, w.to("meta")),
        ConvndValueError,
        "weight must be a tensor on the input's device cpu, got a tensor of shape (3, 2, 3, 3) and dtype torch.float32 (it is on meta)",
    ),
    (
        "bias shape",
        lambda: convnd.conv(x, w, torch.randn(2)),
        ConvndValueError,
        "bias must be a tensor of shape (3,), got a tensor of shape (2,) and dtype torch.float32 (one value per output channel)",
    ),
    (
        "bias with extra dim",
        lambda: convnd.conv(x, w, torch.randn(3, 1)),
        ConvndValueError,
        "bias must be a tensor of shape (3,), got a tensor of shape (3, 1) and dtype torch.float32 (one value per output channel)",
    ),
    ("input a list", lambda: convnd.conv([[1.0]], w), ConvndTypeError, "input must be a torch.Tensor, got [[1.0]]"),
    (
        "input a numpy array",
        lambda: convnd.conv(np.zeros((1, 2, 5, 5), np.float32), w),
        ConvndTypeError,
        "input must be a torch.Tensor, got a numpy.ndarray of shape (1, 2, 5, 5) and dtype float32",
    ),
    ("weight None", lambda: convnd.conv(x, None), ConvndTypeError, "weight must be a torch.Tensor, got None"),
    ("bias a float", lambda: convnd.conv(x, w, 1.0), ConvndTypeError, "bias must be a torch.Tensor, got 1.0"),
    (
        "integer tensors",
        lambda: convnd.conv(x.long(), w.long()),
        ConvndTypeError,
        "weight must be a floating-point or complex tensor, got a tensor of shape (3, 2, 3, 3) and dtype torch.int64",
    ),
    (
        "integer input",
        lambda: convnd.conv(x.long(), w),
        ConvndTypeError,
        "input must be a floating-point or complex tensor, got a tensor of shape (1, 2, 5, 5) and dtype torch.int64",
    ),
    (
        "bool weight",
        lambda: convnd.conv(x, w > 0),
        ConvndTypeError,
        "weight must be a floating-point or complex tensor, got a tensor of shape (3, 2, 3, 3) and dtype torch.bool",
    ),
    (
        "zero input channels in the weight",
        lambda: convnd.conv(torch.randn(1, 0, 5, 5), torch.randn(3, 0, 3, 3)),
        ConvndValueError,
        "weight must be a tensor with no zero-sized dim, got a tensor of shape (3, 0, 3, 3) and dtype torch.float32",
    ),
    (
        "zero output channels",
        lambda: convnd.conv(x, torch.randn(0, 2, 3, 3)),
        ConvndValueError,
        "weight must be a tensor with no zero-sized dim, got a tensor of shape (0, 2, 3, 3) and dtype torch.float32",
    ),
    (
        "zero kernel size",
        lambda: convnd.conv(x, torch.randn(3, 2, 0, 3)),
        ConvndValueError,
        "weight must be a tensor with no zero-sized dim, got a tensor of shape (3, 2, 0, 3) and dtype torch.float32",
    ),
    (
        "weight with 2 dims",
        lambda: convnd.conv(x, torch.randn(3, 2)),
        ConvndValueError,
        "weight must be a tensor with at least 3 dims: (C_out, C_in / groups, *kernel), got a tensor of shape (3, 2) and dtype torch.float32",
    ),
    (
        "module zero in_channels",
        lambda: convnd.Conv2d(0, 3, 3),
        ConvndValueError,
        "in_channels must be an int >= 1, got 0",
    ),
    (
        "module zero out_channels",
        lambda: convnd.Conv2d(2, 0, 3),
        ConvndValueError,
        "out_channels must be an int >= 1, got 0",
    ),
    (
        "module bool in_channels",
        lambda: convnd.Conv2d(True, 3, 3),
        ConvndTypeError,
        "in_channels must be an int >= 1, got True",
    ),
    (
        "module zero kernel size",
        lambda: convnd.Conv2d(2, 3, (3, 0)),
        ConvndValueError,
        "kernel_size must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got (3, 0)",
    ),
    (
        "module float kernel size",
        lambda: convnd.Conv2d(2, 3, 3.0),
        ConvndTypeError,
        "kernel_size must be an int >= 1 or a tuple of 2 such ints (one per spatial dim), got 3.0",
    ),
    (
        "module empty kernel tuple",
        lambda: convnd.Conv2d(2, 3, ()),
        ConvndValueError,
        "kernel_size must be a non-empty tuple of ints >= 1, got ()",
    ),
    (
        "module groups not dividing in_channels",
        lambda: convnd.Conv2d(3, 4, 3, groups=2),
        ConvndValueError,
        "in_channels must be divisible by groups=2, got 3",
    ),
    (
        "module groups not dividing out_channels",
        lambda: convnd.Conv2d(4, 3, 3, groups=2),
        ConvndValueError,
        "out_channels must be divisible by groups=2, got 3",
    ),
    (
        "ConvNd int kernel without dims",
        lambda: convnd.ConvNd(2, 3, 3),
        ConvndValueError,
        "kernel_size must be a tuple (one size per spatial dim) when dims= is not given, got 3 (ConvNd cannot tell the number of spatial dims from an int)",
    ),
    (
        "ConvNd float kernel without dims",
        lambda: convnd.ConvNd(2, 3, 3.0),
        ConvndTypeError,
        "kernel_size must be a tuple (one size per spatial dim) when dims= is not given, got 3.0 (ConvNd cannot tell the number of spatial dims from an int)",
    ),
    (
        "dims disagreeing with kernel tuple",
        lambda: convnd.ConvNd(2, 3, (3, 3), dims=3),
        ConvndValueError,
        "kernel_size must be a tuple of 3 ints, got (3, 3) (dims=3 was given)",
    ),
    ("zero dims", lambda: convnd.ConvNd(2, 3, 3, dims=0), ConvndValueError, "dims must be an int >= 1, got 0"),
    (
        "module stride tuple too long",
        lambda: convnd.Conv1d(2, 3, 3, stride=(1, 1)),
        ConvndValueError,
        "stride must be an int >= 1 or a tuple of 1 such ints (one per spatial dim), got (1, 1) (the convolution has 1 spatial dims)",
    ),
    (
        "module unknown padding mode",
        lambda: convnd.Conv2d(2, 3, 3, padding_mode="reflection"),
        ConvndValueError,
        "padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', got 'reflection'",
    ),
    (
        "module input rank mismatch",
        lambda: convnd.Conv1d(2, 3, (3, 3))(torch.randn(1, 2, 5)),
        ConvndValueError,
        "input must be a tensor with 2 channels in dim 0, got a tensor of shape (1, 2, 5) and dtype torch.float32 (weight.shape[1] * groups = 2 * 1; a 3-dim input to a 2-d convolution is unbatched (C_in, *spatial))",
    ),
    (
        "module input channel mismatch",
        lambda: convnd.Conv2d(2, 3, 3)(torch.randn(1, 4, 5, 5)),
        ConvndValueError,
        "input must be a tensor with 2 channels in dim 1, got a tensor of shape (1, 4, 5, 5) and dtype torch.float32 (weight.shape[1] * groups = 2 * 1)",
    ),
    (
        "module input dtype",
        lambda: convnd.Conv2d(2, 3, 3)(torch.randn(1, 2, 5, 5, dtype=torch.float64)),
        ConvndValueError,
        "weight must be a tensor of the input's dtype torch.float64, got a tensor of shape (3, 2, 3, 3) and dtype torch.float32 (convnd does not mix dtypes)",
    ),
    (
        "make_spec with an int kernel",
        lambda: convnd.make_spec(3),
        ConvndValueError,
        "kernel_size must be a tuple (one size per spatial dim) when dims= is not given, got 3 (ConvNd cannot tell the number of spatial dims from an int)",
    ),
    (
        "make_spec with an empty kernel",
        lambda: convnd.make_spec(()),
        ConvndValueError,
        "kernel_size must be a non-empty tuple of ints >= 1, got ()",
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_raises_convnds_error_with_the_exact_message(case, call, error, message):
    with pytest.raises(ConvndError) as caught:
        call()
    assert type(caught.value) is error, case
    assert isinstance(caught.value, ValueError if error is ConvndValueError else TypeError)
    assert str(caught.value) == message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one clean sentence


def test_the_table_is_broad():
    assert len(BAD_INPUTS) >= 25
    assert {row[2] for row in BAD_INPUTS} == {ConvndValueError, ConvndTypeError}


@pytest.mark.parametrize("dims", [1, 2, 3, 4, 5])
def test_never_an_aten_message(dims):
    """The same mistakes past 3 dims get convnd's messages, not torch's."""
    w = torch.randn(2, 2, *(2,) * dims)
    for bad in (torch.randn(1, 3, *(4,) * dims), torch.randn(1, 2, *(1,) * dims), torch.randn(2, *(4,) * (dims + 2))):
        with pytest.raises(ConvndValueError, match=r"^input must be a tensor (with|of size)"):
            convnd.conv(bad, w)
