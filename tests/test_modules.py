"""convnd's modules against torch.nn.ConvXd: init, repr, state_dict, the rank rule, attribute edits, the seeds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convnd

PAIRS = [(nn.Conv1d, convnd.Conv1d), (nn.Conv2d, convnd.Conv2d), (nn.Conv3d, convnd.Conv3d)]

# (in_channels, out_channels, kernel_size, keyword arguments), valid for every rank
MODULE_ARGS = [
    (3, 4, 3, {}),
    (4, 6, 2, {"groups": 2, "bias": False}),
    (2, 2, 3, {"stride": 2, "padding": 1, "dilation": 2}),
    (2, 4, 1, {"padding": "same", "padding_mode": "reflect"}),
    (6, 3, 3, {"groups": 3, "padding": "valid", "padding_mode": "circular"}),
    (1, 1, 4, {"padding": 2, "padding_mode": "replicate", "dtype": torch.float64}),
    (2, 2, 3, {"device": "cpu", "dtype": torch.bfloat16, "bias": False}),
]


def pair_for(rank: int) -> tuple[type, type]:
    return PAIRS[rank - 1]


def both(rank: int, args: tuple, kwargs: dict, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """torch's and convnd's module, each built right after seeding the global RNG the same way."""
    theirs, ours = pair_for(rank)
    torch.manual_seed(seed)
    a = theirs(*args, **kwargs)
    torch.manual_seed(seed)
    b = ours(*args, **kwargs)
    return a, b


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(("cin", "cout", "kernel", "kwargs"), MODULE_ARGS)
def test_same_seed_same_parameters(rank, cin, cout, kernel, kwargs):
    theirs, ours = both(rank, (cin, cout, kernel), kwargs)
    assert torch.equal(ours.weight, theirs.weight) and ours.weight.dtype == theirs.weight.dtype
    assert (ours.bias is None) == (theirs.bias is None)
    if theirs.bias is not None:
        assert torch.equal(ours.bias, theirs.bias)
    # the RNG stream after init is the same too: init made the same calls in the same order
    torch.manual_seed(5)
    pair_for(rank)[0](cin, cout, kernel, **kwargs)
    after_theirs = torch.rand(4)
    torch.manual_seed(5)
    pair_for(rank)[1](cin, cout, kernel, **kwargs)
    assert torch.equal(torch.rand(4), after_theirs)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(("cin", "cout", "kernel", "kwargs"), MODULE_ARGS)
def test_repr_is_torchs(rank, cin, cout, kernel, kwargs):
    theirs, ours = both(rank, (cin, cout, kernel), kwargs)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(("cin", "cout", "kernel", "kwargs"), MODULE_ARGS)
def test_state_dict_loads_both_ways(rank, cin, cout, kernel, kwargs):
    theirs, ours = both(rank, (cin, cout, kernel), kwargs, seed=0)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    _, fresh_ours = both(rank, (cin, cout, kernel), kwargs, seed=1)
    fresh_theirs, _ = both(rank, (cin, cout, kernel), kwargs, seed=2)
    fresh_ours.load_state_dict(theirs.state_dict())
    fresh_theirs.load_state_dict(ours.state_dict())
    for a, b in zip(fresh_ours.state_dict().values(), fresh_theirs.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(2, cin, *(6,) * rank, dtype=theirs.weight.dtype)
    assert torch.equal(fresh_ours(x), theirs(x))


def test_convnd_with_dims_loads_a_conv2d_checkpoint():
    theirs = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect")
    ours = convnd.ConvNd(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect", dims=2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 4, 9, 8)
    assert torch.equal(ours(x), theirs(x))


RANKS = [
    # (module, expected kernel): a tuple kernel_size decides the rank, else the class
    (lambda: convnd.Conv1d(1, 1, (3, 3)), (3, 3)),
    (lambda: convnd.Conv2d(1, 1, (3,)), (3,)),
    (lambda: convnd.Conv3d(1, 1, (2, 2, 2, 2)), (2, 2, 2, 2)),
    (lambda: convnd.Conv1d(1, 1, 3), (3,)),
    (lambda: convnd.Conv2d(1, 1, 3), (3, 3)),
    (lambda: convnd.Conv3d(1, 1, 3), (3, 3, 3)),
    (lambda: convnd.ConvNd(1, 1, 3, dims=5), (3,) * 5),
    (lambda: convnd.ConvNd(1, 1, (1, 2, 3, 4)), (1, 2, 3, 4)),
]


@pytest.mark.parametrize(("make", "kernel"), RANKS)
def test_rank_follows_the_kernel(make, kernel):
    module = make()
    assert module.kernel_size == kernel and module.dims == len(kernel)
    assert module.weight.shape == (1, 1, *kernel)
    x = torch.randn(1, 1, *(5,) * len(kernel))
    expected = convnd.conv(x, module.weight, module.bias)
    assert torch.equal(module(x), expected)


def test_conv1d_with_2d_kernel_equals_conv2d():
    conv1d = convnd.Conv1d(3, 3, (1, 1))
    conv2d = nn.Conv2d(3, 3, 1)
    conv2d.load_state_dict(conv1d.state_dict())
    x = torch.randn(2, 3, 5, 6)
    assert torch.equal(conv1d(x), conv2d(x))


# attribute -> new value; the module must then equal the functional call with the edited arguments
EDITS = [
    ("stride", (2, 1)),
    ("padding", (1, 2)),
    ("padding", "valid"),
    ("padding", ((0, 2), (1, 0))),
    ("dilation", (2, 2)),
    ("padding_mode", "circular"),
]


@pytest.mark.parametrize(("attribute", "value"), EDITS)
def test_attribute_edits_take_effect(attribute, value):
    module = convnd.Conv2d(2, 3, 3, padding=1)
    setattr(module, attribute, value)
    kwargs = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation}
    kwargs["padding_mode"] = module.padding_mode
    x = torch.randn(1, 2, 8, 7)
    assert torch.equal(module(x), convnd.conv(x, module.weight, module.bias, **kwargs))
    before = convnd.Conv2d(2, 3, 3, padding=1)
    before.load_state_dict(module.state_dict())
    unedited, edited = before(x), module(x)
    assert unedited.shape != edited.shape or not torch.equal(unedited, edited)


def test_editing_groups_and_weight_is_checked():
    module = convnd.Conv2d(4, 4, 3)
    module.groups = 2
    with pytest.raises(convnd.ConvndValueError, match="input must be a tensor with 8 channels"):
        module(torch.randn(1, 4, 5, 5))
    module.groups = 1
    module.weight = nn.Parameter(torch.randn(4, 4, 2, 2))
    with pytest.raises(convnd.ConvndValueError, match=r"weight must be a tensor with kernel size \(3, 3\)"):
        module(torch.randn(1, 4, 5, 5))


# --- the seed documents, every example with torch.nn swapped for convnd ----------------------


def test_seed_000_example_1_kernel_3_in_every_class():
    conv1d = convnd.Conv1d(1, 1, 3, padding="same", bias=False)
    conv2d = convnd.Conv2d(1, 1, (3,), stride=(1,), dilation=(1,), padding="same", bias=False)
    conv3d = convnd.Conv3d(1, 1, (3,), stride=(1,), dilation=(1,), padding="same", bias=False)
    conv1d.weight.data.fill_(1)
    conv2d.weight.data.fill_(1)
    conv3d.weight.data.fill_(1)
    x = torch.rand(1, 1, 100)
    assert (conv1d(x) == conv2d(x)).all() and (conv1d(x) == conv3d(x)).all()
    # convnd needs no stride=/dilation= boilerplate: ints broadcast to the kernel's rank
    short = convnd.Conv3d(1, 1, (3,), padding="same", bias=False)
    short.weight.data.fill_(1)
    assert torch.equal(short(x), conv1d(x))


def test_seed_000_example_2_kernel_3x3_in_every_class():
    conv1d = convnd.Conv1d(1, 1, (3, 3), padding="same", bias=False)
    conv2d = convnd.Conv2d(1, 1, 3, padding="same", bias=False)
    conv3d = convnd.Conv3d(1, 1, (3, 3), stride=(1, 1), dilation=(1, 1), padding="same", bias=False)
    conv1d.weight.data.fill_(1)
    conv2d.weight.data.fill_(1)
    conv3d.weight.data.fill_(1)
    x = torch.rand(1, 1, 100, 100)
    assert (conv1d(x) == conv2d(x)).all() and (conv1d(x) == conv3d(x)).all()


def test_seed_000_example_3_kernel_3x3x3_in_every_class():
    conv1d = convnd.Conv1d(1, 1, (3, 3, 3), stride=(1, 1, 1), dilation=(1, 1, 1), padding="same", bias=False)
    conv2d = convnd.Conv2d(1, 1, (3, 3, 3), stride=(1, 1, 1), dilation=(1, 1, 1), padding="same", bias=False)
    conv3d = convnd.Conv3d(1, 1, 3, padding="same", bias=False)
    conv1d.weight.data.fill_(1)
    conv2d.weight.data.fill_(1)
    conv3d.weight.data.fill_(1)
    x = torch.rand(1, 1, 40, 40, 40)  # the seed's 100**3, smaller for the test budget
    assert (conv1d(x) == conv2d(x)).all() and (conv1d(x) == conv3d(x)).all()


# seed 004: Conv2d with a (1, k) kernel on an unsqueezed input emulates Conv1d. The seed compares two
# independently initialised layers, which only agree once they share weights: the tests copy them.
SEED_004 = [
    # (Conv1d keyword arguments, Conv2d keyword arguments)
    ({"kernel_size": 3}, {"kernel_size": (1, 3)}),
    ({"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": (1, 3), "stride": (1, 2), "padding": (0, 1)}),
    ({"kernel_size": 3, "dilation": 2}, {"kernel_size": (1, 3), "dilation": (1, 2)}),
]


@pytest.mark.parametrize(("kwargs_1d", "kwargs_2d"), SEED_004)
def test_seed_004_conv2d_emulates_conv1d(kwargs_1d, kwargs_2d):
    batch_size, input_channels, sequence_length, output_channels = 2, 3, 10, 4
    input_1d = torch.randn(batch_size, input_channels, sequence_length)
    conv1d = convnd.Conv1d(input_channels, output_channels, **kwargs_1d)
    output_1d = conv1d(input_1d)
    input_2d = input_1d.unsqueeze(2)
    conv2d = convnd.Conv2d(input_channels, output_channels, **kwargs_2d)
    conv2d.weight.data.copy_(conv1d.weight.data.unsqueeze(2))
    conv2d.bias.data.copy_(conv1d.bias.data)
    output_2d = conv2d(input_2d)
    assert output_2d.shape == (batch_size, output_channels, 1, output_1d.shape[-1])
    torch.testing.assert_close(output_1d, output_2d.squeeze(2), atol=1e-5, rtol=1e-5)
    # and convnd's own answer to the seed: the 1-d kernel on a Conv2d class is already a 1-d convolution
    direct = convnd.Conv2d(input_channels, output_channels, **{**kwargs_1d, "kernel_size": (3,)})
    direct.load_state_dict(conv1d.state_dict())
    assert torch.equal(direct(input_1d), output_1d)
