"""Layouts: channel_dim / spatial_dims / convolution on conv, conv_transpose and the modules.

Every layout x number type x op runs against the NumPy reference (axes moved and the
kernel flipped with NumPy), for N = 1..5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile

import convnd
from convnd import reference
from convnd.layout import resolve_layout
from convnd.lowering import plan
from convnd.selection import STRATEGIES
from convnd.spec import make_spec

# (id, axis kinds: B batch / C channel / S spatial, channel_dim, spatial_dims, expected channel, expected spatial)
LAYOUTS = [
    ("1d-channels-last", "BSC", -1, None, 2, (1,)),
    ("2d-two-batch-axes", "BBCSS", 2, None, 2, (3, 4)),
    ("2d-batch-axes-interleaved", "BSCBSB", 2, (1, 4), 2, (1, 4)),
    ("2d-negative-axes-custom-order", "BCSBS", -4, (-1, -3), 1, (4, 2)),
    ("3d-no-batch-axis", "SSSC", -1, None, 3, (0, 1, 2)),
    ("3d-custom-order", "CSSSB", 0, (3, 1, 2), 0, (3, 1, 2)),
    ("4d-light-field-BUVSTC", "BSSSSC", -1, None, 5, (1, 2, 3, 4)),
    ("4d-channel-last-two-batch", "BBSSSSC", 6, (-2, -5, -4, -3), 6, (5, 2, 3, 4)),
    ("5d-batch-last", "CSSSSSB", 0, (1, 2, 3, 4, 5), 0, (1, 2, 3, 4, 5)),
]
DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]
SIZES = (5, 4, 6, 4, 5)  # spatial size per kernel dim (N <= 3)
SMALL_SIZES = (4, 3, 4, 3, 3)  # N > 3: kept small, double-precision native kernels are slow on CPU
BATCH_SIZES = (2, 3, 1)


def _tolerance(dtype: torch.dtype, device: torch.device) -> dict[str, float]:
    if dtype in (torch.float64, torch.complex128):
        return {"rtol": 1e-10, "atol": 1e-10}
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return {"rtol": 1e-2, "atol": 1e-2}  # cuDNN's default TF32 keeps 10 mantissa bits
    return {"rtol": 1e-4, "atol": 1e-4}


def _input(
    kinds: str, channel: int, spatial: tuple[int, ...], channels: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    batch = iter(BATCH_SIZES)
    sizes = SIZES if len(spatial) <= 3 else SMALL_SIZES
    shape = [
        channels if axis == channel else sizes[spatial.index(axis)] if axis in spatial else next(batch)
        for axis in range(len(kinds))
    ]
    return torch.randn(shape, dtype=dtype, device=device)


def _conv_args(n: int) -> dict:
    return {"stride": (1, 2, 1, 2, 1)[:n], "padding": (1, 0, 2, 1, 0)[:n], "dilation": (1, 1, 2, 1, 1)[:n]}


def _transpose_args(n: int) -> dict:
    return {
        "stride": (2, 1, 2, 1, 1)[:n],
        "padding": (1, 0, 0, 1, 0)[:n],
        "output_padding": (1, 0, 1, 0, 0)[:n],
        "dilation": (1, 2, 1, 1, 1)[:n],
    }


def _expected(x, w, b, channel, spatial, transposed, flipped, args):
    xc, batch_shape = reference.to_canonical(x, channel, spatial)
    wr = reference.flip_kernel(w) if flipped else w
    if transposed:
        y = reference.conv_transpose(xc, wr, b, groups=2, **args)
    else:
        padding = [(p, p) for p in args["padding"]]
        y = reference.conv(xc, wr, b, args["stride"], padding, args["dilation"], groups=2)
    return reference.from_canonical(y, batch_shape, channel, spatial)


@pytest.mark.parametrize(
    "kinds, channel_dim, spatial_dims, channel, spatial", [r[1:] for r in LAYOUTS], ids=[r[0] for r in LAYOUTS]
)
def test_layout_resolves_to_the_expected_axes(kinds, channel_dim, spatial_dims, channel, spatial):
    layout = resolve_layout(len(kinds), kinds.count("S"), channel_dim, spatial_dims)
    assert (layout.channel, layout.spatial) == (channel, spatial)
    assert layout.batch == tuple(a for a, k in enumerate(kinds) if k == "B")
    assert layout.names()[channel] == "C"


@pytest.mark.parametrize("flipped", [False, True], ids=["correlation", "convolution"])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "kinds, channel_dim, spatial_dims, channel, spatial", [r[1:] for r in LAYOUTS], ids=[r[0] for r in LAYOUTS]
)
def test_every_layout_and_number_type_matches_the_reference(
    kinds, channel_dim, spatial_dims, channel, spatial, dtype, transposed, flipped, device
):
    torch.manual_seed(len(kinds))
    n = kinds.count("S")
    kernel = (3, 2, 3)[:n] if n <= 3 else (2,) * n
    x = _input(kinds, channel, spatial, 4, dtype, device)
    w = torch.randn((4, 1, *kernel) if transposed else (2, 2, *kernel), dtype=dtype, device=device)
    b = torch.randn(2, dtype=dtype, device=device)
    args = _transpose_args(n) if transposed else _conv_args(n)
    op = convnd.conv_transpose if transposed else convnd.conv
    y = op(x, w, b, groups=2, channel_dim=channel_dim, spatial_dims=spatial_dims, convolution=flipped, **args)
    expected = _expected(x, w, b, channel, spatial, transposed, flipped, args)
    assert y.dtype == dtype
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.cpu().numpy(), expected, **_tolerance(dtype, device))


def test_modules_take_layout_keywords_and_keep_torch_checkpoints():
    torch.manual_seed(0)
    m = convnd.ConvNd(3, 4, (3, 3, 2, 2), padding=1, channel_dim=-1, convolution=True)
    x = torch.randn(2, 5, 4, 4, 3, 3)  # (B, U, V, S, T, C)
    xc, batch_shape = reference.to_canonical(x, -1, (1, 2, 3, 4))
    y = reference.conv(xc, reference.flip_kernel(m.weight), m.bias, padding=[(1, 1)] * 4)
    expected = reference.from_canonical(y, batch_shape, -1, (1, 2, 3, 4))
    np.testing.assert_allclose(m(x).detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert list(m.state_dict()) == ["weight", "bias"]
    assert "channel_dim" not in m.state_dict() and "convolution" not in m.state_dict()
    assert repr(m) == (
        "ConvNd(3, 4, kernel_size=(3, 3, 2, 2), stride=(1, 1, 1, 1), padding=(1, 1, 1, 1), "
        "channel_dim=-1, convolution=True)"
    )


def test_module_layout_repr_and_state_dict_match_torch():
    m = convnd.Conv2d(3, 4, 3, spatial_dims=[1, 2], channel_dim=0)
    assert repr(m) == "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), channel_dim=0, spatial_dims=(1, 2))"
    plain = convnd.Conv2d(3, 4, 3)
    assert repr(plain) == repr(torch.nn.Conv2d(3, 4, 3))
    t = torch.nn.Conv2d(3, 4, 3)
    t.load_state_dict(m.state_dict())  # a torch checkpoint both ways
    m.load_state_dict(t.state_dict())
    x = torch.randn(3, 6, 7, 2)  # (C, H, W, B)
    expected = t(x.permute(3, 0, 1, 2)).permute(1, 2, 3, 0)
    torch.testing.assert_close(m(x), expected)


def test_transposed_module_output_size_in_the_input_layout():
    torch.manual_seed(0)
    m = convnd.ConvTranspose3d(2, 3, 2, stride=2, channel_dim=-1, convolution=True)
    x = torch.randn(2, 3, 4, 5, 2)  # (B, D, H, W, C)
    full = m(x, output_size=(2, 7, 9, 11, 3))
    spatial_only = m(x, output_size=(7, 9, 11))
    assert full.shape == (2, 7, 9, 11, 3)
    torch.testing.assert_close(full, spatial_only)
    xc, batch_shape = reference.to_canonical(x, -1, (1, 2, 3))
    y = reference.conv_transpose(xc, reference.flip_kernel(m.weight), m.bias, stride=(2, 2, 2), output_padding=(1,) * 3)
    np.testing.assert_allclose(
        full.detach().numpy(), reference.from_canonical(y, batch_shape, -1, (1, 2, 3)), atol=1e-5
    )


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
def test_true_convolution_is_torch_with_a_flipped_weight(n, transposed):
    torch.manual_seed(n)
    x = torch.randn(2, 3, *(6,) * n)
    spatial = tuple(range(2, 2 + n))
    if transposed:
        w = torch.randn(3, 2, *(3,) * n)
        ours = convnd.conv_transpose(x, w, stride=2, convolution=True)
        theirs = getattr(F, f"conv_transpose{n}d")(x, w.flip(spatial), stride=2)
    else:
        w = torch.randn(4, 3, *(3,) * n)
        ours = convnd.conv(x, w, padding=1, convolution=True)
        theirs = getattr(F, f"conv{n}d")(x, w.flip(spatial), padding=1)
    assert torch.equal(ours, theirs)


def test_true_convolution_leaves_the_weight_alone_and_flips_its_gradient():
    torch.manual_seed(0)
    w = torch.randn(2, 2, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    stored = w.detach().clone()
    x = torch.randn(1, 2, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    check = torch.autograd.gradcheck
    assert check(lambda a, b: convnd.conv(a, b, padding=1, convolution=True), (x, w), fast_mode=True)
    convnd.conv(x, w, padding=1, convolution=True).sum().backward()
    assert torch.equal(w.detach(), stored)
    flipped = w.detach().flip((2, 3, 4, 5)).requires_grad_()
    (grad,) = torch.autograd.grad(convnd.conv(x, flipped, padding=1).sum(), flipped)
    torch.testing.assert_close(w.grad, grad.flip((2, 3, 4, 5)))


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("padding", [1, ((1, 2),), "reflect"], ids=["symmetric", "asymmetric", "reflect"])
def test_channels_last_in_gives_channels_last_out(n, padding):
    torch.manual_seed(n)
    fmt = torch.channels_last if n == 2 else torch.channels_last_3d
    x = torch.randn(2, 3, *(6,) * n).to(memory_format=fmt)
    mode = "reflect" if padding == "reflect" else "zeros"
    pad = 1 if padding == "reflect" else padding if padding == 1 else padding * n
    ours = convnd.ConvNd(3, 4, (3,) * n, padding=pad, padding_mode=mode)
    y = ours(x)
    assert y.is_contiguous(memory_format=fmt)
    if pad == 1:  # torch.nn holds the same padding: the result is its result, bits and memory format
        theirs = getattr(torch.nn, f"Conv{n}d")(3, 4, 3, padding=1, padding_mode=mode)
        theirs.load_state_dict(ours.state_dict())
        assert torch.equal(y, theirs(x))
    up = convnd.ConvTransposeNd(3, 2, (2,) * n, stride=2)(x)
    assert up.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("n", [2, 3])
def test_a_channel_last_layout_is_channels_last_memory_with_no_copy(n):
    x = torch.randn(2, *(6,) * n, 3)  # (B, *spatial, C), contiguous
    w = torch.randn(4, 3, *(3,) * n)
    y = convnd.conv(x, w, padding=1, channel_dim=-1)
    assert y.is_contiguous()  # native channels-last output, seen through the inverse permutation
    torch.testing.assert_close(y, convnd.conv(x.movedim(-1, 1).contiguous(), w, padding=1).movedim(1, -1))


def _allocated_bytes(fn) -> int:
    """Bytes allocated on the CPU while ``fn`` runs (after one warm-up call), from torch's profiler."""
    fn()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)


# (id, input shape, channel_dim, spatial_dims, kernel, copies of the input allowed beyond torch's layout,
#  whether the move to (B, C, *spatial) is a view of the input)
COPY_CASES = [
    ("2d-BHWC-channels-last", (4, 12, 12, 8), -1, None, (3, 3), 0, True),
    ("3d-BDHWC-channels-last", (2, 6, 6, 6, 4), -1, None, (3, 3, 3), 0, True),
    ("4d-light-field", (2, 5, 5, 6, 6, 3), -1, None, (3, 3, 3, 3), 0, True),
    ("2d-two-batch-axes-merge", (2, 3, 4, 12, 12), 2, None, (3, 3), 0, True),
    ("2d-batch-axes-apart", (3, 4, 2, 12, 12), 1, (-2, -1), (3, 3), 1, False),
    ("2d-HWCB", (12, 12, 3, 4), 2, (0, 1), (3, 3), 1, True),
]


@pytest.mark.parametrize(
    "shape, channel_dim, spatial_dims, kernel, copies, view",
    [c[1:] for c in COPY_CASES],
    ids=[c[0] for c in COPY_CASES],
)
def test_custom_axes_cost_at_most_one_copy_of_the_input(shape, channel_dim, spatial_dims, kernel, copies, view):
    """Bytes allocated by the custom-layout call vs the same convolution on a contiguous (B, C, *spatial) input."""
    torch.manual_seed(0)
    x = torch.randn(shape)
    layout = resolve_layout(x.dim(), len(kernel), channel_dim, spatial_dims)
    assert (layout.to_canonical(x).data_ptr() == x.data_ptr()) == view
    canonical = layout.to_canonical(x).contiguous()
    w = torch.randn(5, canonical.shape[1], *kernel)
    w_bytes = w.nelement() * w.element_size()  # native channels-last kernels may reorder the weight
    # one strategy for both: a channels-last view rules out band (which merges channels with spatial dims), so
    # the planner's choices may differ, and this compares the layout moves alone
    how = plan(make_spec(kernel), input_shape=canonical.shape, weight_shape=w.shape, channels_first=False)
    with convnd.strategy(how.strategy if how.strategy in STRATEGIES else None):
        baseline = _allocated_bytes(lambda: convnd.conv(canonical, w))
        custom = _allocated_bytes(lambda: convnd.conv(x, w, channel_dim=channel_dim, spatial_dims=spatial_dims))
    assert custom <= baseline + copies * x.nbytes + w_bytes


ERRORS = [
    ({"channel_dim": 5}, "channel_dim must be an axis in [-5, 5), got 5 (the input has 5 dims)"),
    ({"spatial_dims": (2, 5)}, "spatial_dims must be axes in [-5, 5), got (2, 5) (the input has 5 dims)"),
    (
        {"spatial_dims": (-1, 4)},
        "spatial_dims must be distinct axes, got (-1, 4) (-1 and 4 are both axis 4 of an input with 5 dims)",
    ),
    (
        {"channel_dim": -1, "spatial_dims": (2, 4)},
        "spatial_dims must be axes other than the channel axis, got (2, 4) (axis 4 is also channel_dim=-1)",
    ),
    (
        {"spatial_dims": (2, 3, 4)},
        "spatial_dims must be a tuple of 2 distinct axes of the input (one per spatial dim of the kernel), or None, "
        "got (2, 3, 4) (the weight has 2 spatial dims)",
    ),
]


@pytest.mark.parametrize("keywords, message", ERRORS)
def test_bad_axes_say_what_was_wrong(keywords, message):
    x, w = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 3, 3)
    for op in (convnd.conv, convnd.conv_transpose):
        weight = w if op is convnd.conv else w.transpose(0, 1)
        with pytest.raises(convnd.ConvndValueError) as info:
            op(x, weight, **keywords)
        assert str(info.value) == message


TYPE_ERRORS = [
    ({"channel_dim": 1.5}, "channel_dim must be an int axis, got 1.5"),
    ({"channel_dim": True}, "channel_dim must be an int axis, got True"),
    (
        {"spatial_dims": "hw"},
        "spatial_dims must be a tuple of 2 distinct axes of the input (one per spatial dim of the kernel), or None, "
        "got 'hw'",
    ),
    ({"spatial_dims": (2, 3.0)}, "spatial_dims must be a tuple of int axes, or None, got (2, 3.0)"),
    ({"convolution": "yes"}, "convolution must be True or False, got 'yes'"),
]


@pytest.mark.parametrize("keywords, message", TYPE_ERRORS)
def test_bad_keyword_types_say_what_was_wrong(keywords, message):
    with pytest.raises(convnd.ConvndTypeError) as info:
        convnd.conv(torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 3, 3), **keywords)
    assert str(info.value) == message
    with pytest.raises(convnd.ConvndTypeError) as info:
        convnd.Conv2d(3, 2, 3, **keywords)
    assert str(info.value) == message


def test_too_few_dims_for_the_layout():
    with pytest.raises(convnd.ConvndValueError) as info:
        convnd.conv(torch.randn(5, 5), torch.randn(2, 3, 3, 3), channel_dim=-1)
    assert str(info.value) == (
        "channel_dim must be an axis of an input with at least 3 dims, got -1 "
        "(the input has 2 dims, too few for a channel and 2 spatial dims)"
    )


def test_module_checks_spatial_dims_length_at_construction():
    with pytest.raises(convnd.ConvndValueError) as info:
        convnd.ConvTransposeNd(3, 2, (2, 2, 2), spatial_dims=(1, 2))
    assert str(info.value) == (
        "spatial_dims must be a tuple of 3 distinct axes of the input (one per spatial dim of the kernel), or None, "
        "got (1, 2) (the weight has 3 spatial dims)"
    )


def test_describe_names_the_axes():
    assert resolve_layout(6, 4, -1).describe() == (
        "input (B, S0, S1, S2, S3, C) -> (B, C, S0, S1, S2, S3) by a permuted view, output in the input layout"
    )
    assert resolve_layout(5, 2, 2).describe() == (
        "input (B0, B1, C, S0, S1) -> (B, C, S0, S1) by a permuted view, batch axes flattened, "
        "output in the input layout"
    )
    assert resolve_layout(4, 3, -1).describe() == (
        "input (S0, S1, S2, C) -> (1, C, S0, S1, S2) by a permuted view, output in the input layout"
    )
    assert resolve_layout(4, 2).describe() == "input (B, C, S0, S1): torch's layout, passed to the kernels unchanged"
    assert resolve_layout(3, 2).describe() == "input (C, S0, S1): torch's layout, passed to the kernels unchanged"


@settings(max_examples=40)
@given(data=st.data())
def test_random_layouts_match_the_reference(data):
    """Any placement of channel, spatial (in any order) and 0-2 batch axes, N = 1..4."""
    n = data.draw(st.integers(1, 4), label="N")
    n_batch = data.draw(st.integers(0, 2), label="batch axes")
    ndim = n + 1 + n_batch
    order = data.draw(st.permutations(range(ndim)), label="axes")
    channel, spatial = order[0], tuple(order[1 : 1 + n])
    negative = data.draw(st.booleans(), label="negative axes")
    channel_dim = channel - ndim if negative else channel
    spatial_dims = tuple(a - ndim for a in spatial) if negative else spatial
    sizes = data.draw(st.lists(st.integers(2, 4), min_size=n, max_size=n), label="spatial sizes")
    shape = [2] * ndim
    shape[channel] = 3
    for axis, size in zip(spatial, sizes):
        shape[axis] = size
    x = torch.randn(shape, dtype=torch.float64)
    w = torch.randn(2, 3, *(2,) * n, dtype=torch.float64)
    y = convnd.conv(x, w, padding=1, channel_dim=channel_dim, spatial_dims=spatial_dims)
    xc, batch_shape = reference.to_canonical(x, channel, spatial)
    expected = reference.from_canonical(reference.conv(xc, w, padding=[(1, 1)] * n), batch_shape, channel, spatial)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)
