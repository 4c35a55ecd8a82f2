"""convnd.emulate: every convolution module, on native convolutions of every rank, sharing its parameters."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import convnd
from convnd import reference
from convnd.testing import NativeConvolutions, assert_equivalent

RANKS = (1, 2, 3)
TORCH_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
TORCH_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def at_rank(kwargs: dict, n: int) -> dict:
    """Constructor arguments written for 3 dims, cut to the first ``n`` (values differ per dim to catch mixed axes)."""
    return {k: v[:n] if isinstance(v, tuple) else v for k, v in kwargs.items()}


# (case, constructor kwargs for 3 dims, input spatial size for 3 dims, batched)
CONV_CASES = [
    ("same_even_kernel_dilated", dict(kernel_size=(4, 2, 4), padding="same", dilation=(2, 1, 3)), (6, 5, 7), True),
    (
        "reflect_stride_groups",
        dict(kernel_size=(3, 2, 3), padding=1, padding_mode="reflect", stride=(2, 1, 2), groups=2),
        (6, 5, 7),
        True,
    ),
    (
        "replicate_dilation_no_bias",
        dict(kernel_size=2, padding=(2, 1, 2), padding_mode="replicate", dilation=2, bias=False),
        (5, 6, 4),
        True,
    ),
    ("circular_same_unbatched", dict(kernel_size=(3, 4, 2), padding="same", padding_mode="circular"), (5, 4, 6), False),
    (
        "zeros_stride_dilation_groups",
        dict(kernel_size=(3, 2, 2), padding=(1, 0, 2), stride=(1, 3, 2), dilation=(2, 1, 1), groups=2),
        (7, 6, 5),
        True,
    ),
]
CONV_T_CASES = [
    (
        "stride_output_padding",
        dict(kernel_size=(3, 2, 4), stride=2, padding=(1, 0, 1), output_padding=(1, 0, 1)),
        (4, 3, 5),
        True,
    ),
    (
        "groups_dilation_no_bias",
        dict(kernel_size=2, dilation=(2, 1, 2), groups=2, bias=False, output_padding=(1, 0, 1)),
        (3, 4, 3),
        True,
    ),
    ("unbatched_stride_padding", dict(kernel_size=(2, 3, 3), stride=(2, 3, 1), padding=(0, 1, 1)), (3, 4, 5), False),
]


def input_for(size: tuple[int, ...], n: int, channels: int, batched: bool) -> torch.Tensor:
    shape = (channels, *size[:n])
    return torch.randn((2, *shape) if batched else shape)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """On a GPU, cuDNN's TF32 rounds differently per conv shape; compare in true float32."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def check(module: nn.Module, x: torch.Tensor, dims: int) -> None:
    """The emulation computes the module's outputs and gradients, running only rank-``dims`` native convolutions."""
    with no_tf32():
        record = assert_equivalent(module, convnd.emulate(module, dims), x, ranks=dims)
    assert set(record.calls) == {("forward", dims), ("backward", dims)}


TORCH_CASES = [(TORCH_CONV, *case) for case in CONV_CASES] + [(TORCH_CONV_T, *case) for case in CONV_T_CASES]


@pytest.mark.parametrize("dims", RANKS)
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize(
    ("classes", "case", "kwargs", "size", "batched"),
    TORCH_CASES,
    ids=[f"{classes[1].__name__[:-2]}-{case}" for classes, case, *_ in TORCH_CASES],
)
def test_torch_modules_lifted_and_lowered(classes, case, kwargs, size, batched, rank, dims, device):
    torch.manual_seed(0)
    module = classes[rank](4, 6, **at_rank(kwargs, rank), device=device)
    check(module, input_for(size, rank, 4, batched).to(device), dims)


@pytest.mark.parametrize("dims", RANKS)
def test_conv_transpose_output_size_argument(dims):
    torch.manual_seed(0)
    module = nn.ConvTranspose2d(3, 2, kernel_size=3, stride=(2, 3), padding=1)
    x = torch.randn(1, 3, 4, 5)
    emulation = convnd.emulate(module, dims)
    for size in [(7, 13), (8, 15), (1, 3, 8, 14)]:
        with NativeConvolutions() as record:
            got = emulation(x, output_size=size)
        torch.testing.assert_close(got, module(x, output_size=size))
        assert record.ranks == {dims}


@pytest.mark.parametrize("dims", RANKS)
@pytest.mark.parametrize(
    ("padding", "mode"),
    [(((1, 2), (0, 1)), "zeros"), (((0, 2), (2, 1)), "reflect"), (((2, 0), (1, 1)), "circular")],
)
def test_convnd_asymmetric_padding_lifted_and_lowered(padding, mode, dims, device):
    torch.manual_seed(0)
    module = convnd.Conv2d(2, 3, kernel_size=(3, 2), padding=padding, padding_mode=mode, device=device)
    check(module, torch.randn(2, 2, 5, 6, device=device), dims)


# convnd's own N-d modules, N = 4 and 5, lowered onto each native rank
ND_CASES = [
    (
        "4d_asymmetric_stride_groups",
        lambda: convnd.ConvNd(
            4, 2, (2, 3, 1, 2), padding=((1, 0), (1, 1), (0, 2), (1, 1)), stride=(1, 2, 1, 2), groups=2
        ),
        (4, 5, 3, 4),
    ),
    (
        "4d_same_even_reflect_dilated",
        lambda: convnd.ConvNd(2, 3, (2, 2, 3, 2), padding="same", padding_mode="reflect", dilation=(1, 2, 1, 1)),
        (3, 4, 4, 3),
    ),
    (
        "5d_circular_no_bias",
        lambda: convnd.ConvNd(2, 2, (2, 1, 2, 1, 2), padding=1, padding_mode="circular", bias=False),
        (3, 2, 3, 2, 3),
    ),
    (
        "4d_transposed_output_padding",
        lambda: convnd.ConvTransposeNd(
            4, 2, (2, 3, 2, 1), stride=(2, 1, 2, 2), padding=(0, 1, 1, 0), output_padding=(1, 0, 1, 1), groups=2
        ),
        (3, 3, 2, 3),
    ),
    (
        "5d_transposed_dilated",
        lambda: convnd.ConvTransposeNd(2, 2, (2, 1, 2, 2, 1), dilation=(2, 1, 1, 2, 1)),
        (2, 3, 2, 2, 3),
    ),
]


@pytest.mark.parametrize("dims", RANKS)
@pytest.mark.parametrize(("case", "make", "size"), ND_CASES, ids=[c[0] for c in ND_CASES])
def test_convnd_nd_lowered(case, make, size, dims, device):
    torch.manual_seed(0)
    module = make().to(device)
    x = torch.randn(2, module.in_channels, *size, device=device)
    check(module, x, dims)
    spec = module.spec
    with torch.no_grad(), no_tf32():
        got = convnd.emulate(module, dims)(x).cpu()
    if spec.transposed:
        pads = tuple(lo for lo, _ in spec.padding)
        args = (spec.stride, pads, spec.output_padding, spec.groups, spec.dilation)
        expected = reference.conv_transpose(x, module.weight, module.bias, *args)
    else:
        args = (spec.stride, spec.padding, spec.dilation, spec.groups, spec.padding_mode)
        expected = reference.conv(x, module.weight, module.bias, *args)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-5)


LAYOUT_CASES = [
    ("channels_last_flipped", lambda: convnd.Conv3d(3, 4, (2, 3, 2), padding="same", channel_dim=-1, convolution=True),
     (2, 5, 4, 6, 3)),
    ("spatial_dims_transposed", lambda: convnd.ConvTranspose2d(3, 2, (3, 2), stride=2, channel_dim=2,
     spatial_dims=(1, 3)), (2, 4, 3, 5)),
    ("4d_unbatched_channel_first_axis_flipped", lambda: convnd.ConvNd(3, 2, (2, 2, 1, 2), channel_dim=0,
     convolution=True), (3, 3, 4, 2, 3)),
]  # fmt: skip


@pytest.mark.parametrize("dims", RANKS)
@pytest.mark.parametrize(("case", "make", "shape"), LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_convnd_layout_and_flip_carry_over(case, make, shape, dims):
    torch.manual_seed(0)
    check(make(), torch.randn(shape), dims)


@pytest.mark.parametrize("dims", [1, 3])
def test_output_size_in_the_input_layout(dims):
    torch.manual_seed(0)
    module = convnd.ConvTranspose2d(3, 2, 3, stride=2, channel_dim=-1)
    x = torch.randn(1, 4, 5, 3)
    emulation = convnd.emulate(module, dims)
    for size in [(9, 12), (1, 10, 11, 2)]:
        torch.testing.assert_close(emulation(x, output_size=size), module(x, output_size=size))


def test_lowered_gradients_are_exact_in_float64():
    torch.manual_seed(0)
    padding = ((1, 0), (0, 1), (1, 1), (0, 0))
    module = convnd.ConvNd(2, 2, kernel_size=(2, 2, 2, 2), padding=padding, stride=(2, 1, 1, 1)).double()
    x = torch.randn(1, 2, 3, 3, 2, 3, dtype=torch.float64, requires_grad=True)

    def lowered(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return convnd.functional.run(x, weight, bias, module.spec, native_rank=1)

    assert torch.autograd.gradcheck(lowered, (x, module.weight, module.bias), fast_mode=True)


def test_same_rank_is_bit_identical():
    torch.manual_seed(0)
    module = nn.Conv3d(2, 3, 3, padding="same", padding_mode="reflect")
    x = torch.randn(1, 2, 5, 4, 6)
    assert torch.equal(convnd.emulate(module, 3)(x), module(x))


# --- the emulation is a view of the module: parameters, parametrizations, hooks ------------


def test_shares_parameters_and_state_dict():
    module = nn.Conv2d(2, 3, 3)
    emulation = convnd.emulate(module, 1)
    assert emulation.weight is module.weight and emulation.bias is module.bias
    assert list(emulation.state_dict()) == list(module.state_dict()) == ["weight", "bias"]
    emulation.load_state_dict({"weight": torch.ones(3, 2, 3, 3), "bias": torch.zeros(3)})
    assert torch.equal(module.weight, torch.ones(3, 2, 3, 3))


def test_training_the_emulation_trains_the_original():
    torch.manual_seed(0)
    module = nn.Conv1d(2, 2, 3)
    emulation = convnd.emulate(module, 2)
    before = module.weight.detach().clone()
    optimizer = torch.optim.SGD(emulation.parameters(), lr=0.1)
    emulation(torch.randn(1, 2, 8)).square().sum().backward()
    optimizer.step()
    assert module.weight.grad is not None and not torch.equal(module.weight, before)


@pytest.mark.parametrize("dims", [1, 3])
def test_parametrized_weight_norm_applies(dims):
    torch.manual_seed(0)
    module = parametrizations.weight_norm(nn.Conv2d(4, 4, 3, groups=2), dim=2)
    emulation = convnd.emulate(module, dims)
    assert list(emulation.state_dict()) == list(module.state_dict())
    check(module, torch.randn(1, 4, 5, 6), dims)
    with torch.no_grad():  # the emulation reads the parametrized weight on every call
        module.parametrizations.weight.original0.mul_(2)
    x = torch.randn(1, 4, 5, 6)
    torch.testing.assert_close(emulation(x), module(x))


def test_old_weight_norm_hook_applies():
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):
        module = nn.utils.weight_norm(nn.ConvTranspose1d(3, 2, 4, stride=2))
    emulation = convnd.emulate(module, 2)
    x = torch.randn(1, 3, 6)
    check(module, x, 2)
    optimizer = torch.optim.SGD(emulation.parameters(), lr=0.5)
    emulation(x).sum().backward()
    optimizer.step()
    torch.testing.assert_close(emulation(x), module(x))


def test_custom_parametrization_applies():
    class Symmetric(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return (w + w.flip(-1)) / 2

    torch.manual_seed(0)
    module = nn.Conv1d(2, 2, 4)
    parametrize.register_parametrization(module, "weight", Symmetric())
    check(module, torch.randn(2, 2, 9), 3)


def test_lazy_module_once_materialized():
    torch.manual_seed(0)
    module = nn.LazyConv3d(4, kernel_size=(2, 3, 1), padding=1)
    x = torch.randn(1, 3, 4, 4, 4)
    module(x)
    check(module, x, 2)


def test_copy_pickle_and_re_emulation():
    torch.manual_seed(0)
    module = nn.Conv3d(2, 2, 3, padding=1)
    emulation = convnd.emulate(module, 2)
    x = torch.randn(1, 2, 4, 4, 4)
    clone = copy.deepcopy(emulation)
    assert clone.weight is not module.weight and type(clone) is type(emulation)
    buffer = io.BytesIO()
    torch.save(emulation, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    for other in (clone, loaded):
        assert other.native_rank == 2
        torch.testing.assert_close(other(x), module(x))
    again = convnd.emulate(emulation, 1)
    assert type(again).__mro__[2] is nn.Conv3d and again.native_rank == 1
    check(emulation, x, 1)


def test_repr_and_isinstance():
    emulation = convnd.emulate(nn.Conv1d(2, 3, 3), 2)
    assert repr(emulation) == "EmulatedConv1d(2, 3, kernel_size=(3,), stride=(1,), native_rank=2)"
    assert isinstance(emulation, (convnd.Emulation, nn.Conv1d))


def test_direct_conv_forward_calls_are_emulated():
    torch.manual_seed(0)
    module = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 5, 5)
    with NativeConvolutions() as record:
        got = convnd.emulate(module, 1)._conv_forward(x, module.weight, None)
    assert record.ranks == {1}
    torch.testing.assert_close(got, module._conv_forward(x, module.weight, None))


def test_attribute_edits_take_effect():
    torch.manual_seed(0)
    module = nn.Conv2d(1, 1, 3)
    emulation = convnd.emulate(module, 1)
    emulation.padding = (1, 1)
    module.padding = (1, 1)
    x = torch.randn(1, 1, 5, 5)
    torch.testing.assert_close(emulation(x), module(x))


# --- errors -----------------------------------------------------------------------------


class OwnForward(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


ERRORS = [
    (lambda: convnd.emulate(nn.Conv1d(1, 1, 3), 0), convnd.ConvndValueError,
     "dims must be 1, 2 or 3, got 0 (torch has native convolutions of these ranks only)"),
    (lambda: convnd.emulate(nn.Conv1d(1, 1, 3), 4), convnd.ConvndValueError,
     "dims must be 1, 2 or 3, got 4 (torch has native convolutions of these ranks only)"),
    (lambda: convnd.emulate(nn.Conv1d(1, 1, 3), 2.0), convnd.ConvndTypeError,
     "dims must be an int: 1, 2 or 3, got 2.0"),
    (lambda: convnd.emulate(nn.Conv1d(1, 1, 3), True), convnd.ConvndTypeError,
     "dims must be an int: 1, 2 or 3, got True"),
    (lambda: convnd.emulate(nn.Linear(2, 2), 2), convnd.ConvndTypeError,
     "module must be a convolution module (torch.nn Conv1d/2d/3d, ConvTranspose1d/2d/3d, or convnd "
     "ConvNd/ConvTransposeNd), got Linear"),
    (lambda: convnd.emulate("conv", 2), convnd.ConvndTypeError,
     "module must be a convolution module (torch.nn Conv1d/2d/3d, ConvTranspose1d/2d/3d, or convnd "
     "ConvNd/ConvTransposeNd), got 'conv'"),
    (lambda: convnd.emulate(nn.LazyConv2d(2, 3), 1), convnd.ConvndValueError,
     "module must be a materialized convolution, got LazyConv2d "
     "(a lazy module learns in_channels from its first input: run one forward pass first)"),
    (lambda: convnd.emulate(OwnForward(1, 1, 3), 1), convnd.ConvndValueError,
     "module must be a convolution whose forward is torch.nn's or convnd's own, got OwnForward "
     "(OwnForward overrides forward, and an emulation cannot know what that adds)"),
    (lambda: convnd.emulate(nn.Conv1d(1, 1, 3), 2)(torch.randn(1, 1, 5), output_size=[5]), convnd.ConvndValueError,
     "output_size must be None, got [5] (only a transposed convolution takes an output size)"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "message"), ERRORS)
def test_errors(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
