"""convnd.conv: bit-exact against torch for N <= 3, against the reference for N = 1..5, gradients, edge values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import convnd
from configs import MODES, Config, configs
from convnd import ConvndTypeError, ConvndValueError, functional, lowering, reference

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_MODULES = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
CONVND_MODULES = {1: convnd.Conv1d, 2: convnd.Conv2d, 3: convnd.Conv3d}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def oracle(cfg: Config, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> np.ndarray:
    """convnd.reference for a config, unbatched inputs handled as a batch of one."""
    xb = x if cfg.batched else x.unsqueeze(0)
    k = cfg.kwargs
    y = reference.conv(xb, w, b, k["stride"], cfg.pairs, k["dilation"], k["groups"], k["padding_mode"])
    return y if cfg.batched else y[0]


# --- bit-exact parity with torch for N <= 3 ------------------------------------------------


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # torch's own, for both calls
@settings(max_examples=200)  # about 50 per dtype
@given(cfg=configs(modes=("zeros",), torch_forms=True), dtype=st.sampled_from(DTYPES))
def test_conv_is_bit_identical_to_torch_functional(cfg, dtype, device):
    x, w, b = cfg.tensors(dtype, device)
    k = cfg.kwargs
    expected = TORCH_CONV[w.dim() - 2](x, w, b, k["stride"], k["padding"], k["dilation"], k["groups"])
    got = convnd.conv(x, w, b, **k)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


@settings(max_examples=120)
@given(cfg=configs(torch_forms=True), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_modules_are_bit_identical_to_torch_modules(cfg, dtype, device):
    """Every padding_mode, with torch.nn.ConvXd's own weights loaded into convnd's module."""
    k = cfg.kwargs
    n = len(cfg.weight_shape) - 2
    cin, cout = cfg.input_shape[-n - 1], cfg.weight_shape[0]
    args = (cin, cout, cfg.weight_shape[2:])
    kwargs = {**k, "bias": cfg.bias, "device": device, "dtype": dtype}
    theirs, ours = TORCH_MODULES[n](*args, **kwargs), CONVND_MODULES[n](*args, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    x = cfg.tensors(dtype, device)[0]
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gradients_are_bit_identical_to_torch(dims, mode, device):
    theirs = TORCH_MODULES[dims](4, 6, 3, stride=2, padding=1, dilation=1, groups=2, padding_mode=mode)
    theirs = theirs.to(device)
    ours = CONVND_MODULES[dims](4, 6, 3, stride=2, padding=1, dilation=1, groups=2, padding_mode=mode).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, *(5,) * dims, device=device)
    grads = []
    for module in (theirs, ours):
        xi = x.clone().requires_grad_()
        module(xi).square().sum().backward()
        grads.append((xi.grad, module.weight.grad, module.bias.grad))
    for theirs_grad, ours_grad in zip(*grads):
        assert torch.equal(theirs_grad, ours_grad)


# --- agreement with the reference for N = 1..5 --------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3, 4, 5])
@settings(max_examples=100)
@given(data=st.data())
def test_conv_matches_reference(dims, data, device):
    """All padding forms (asymmetric pairs too) and modes, groups, stride, dilation, unbatched: 100 configs per rank."""
    cfg = data.draw(configs(dims=dims, max_extra=2 if dims > 3 else 3))
    x, w, b = cfg.tensors(torch.float64, device)
    got = convnd.conv(x, w, b, **cfg.kwargs)
    np.testing.assert_allclose(got.cpu().numpy(), oracle(cfg, x.cpu(), w.cpu(), b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims", [4, 5])
def test_non_contiguous_operands(dims, device):
    x = torch.randn(*(4,) * dims, 2, 3, dtype=torch.float64, device=device).movedim((-1, -2), (0, 1))
    w = torch.randn(*(2,) * dims, 2, 5, dtype=torch.float64, device=device).movedim((-1, -2), (0, 1))
    assert not x.is_contiguous() and not w.is_contiguous()
    got = convnd.conv(x, w, padding=1, padding_mode="reflect")
    expected = reference.conv(x.cpu(), w.cpu(), padding=((1, 1),) * dims, padding_mode="reflect")
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=1e-10, atol=1e-10)


# (weight shape, its strides, input shape, arguments): a dense weight whose size-1 dim carries a stride its layout
# would not give it (the last: channels-last's own strides, read as contiguous beside a contiguous input)
GROUPED = {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}
ODD_WEIGHTS = [
    ((6, 9, 3, 1, 1), (27, 1, 9, 1, 1), (2, 18, 7, 7, 7), GROUPED),
    ((16, 4, 1, 2, 3), (24, 1, 1, 12, 4), (2, 8, 7, 7, 7), GROUPED),
    ((14, 4, 3, 1), (12, 1, 4, 1), (2, 8, 7, 7), GROUPED),
    ((2, 1, 3, 2), (6, 1, 2, 1), (8, 1, 4, 3), {"stride": (1, 2)}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("shape", "strides", "x_shape", "kw"), ODD_WEIGHTS, ids=[str(c[:2]) for c in ODD_WEIGHTS])
def test_a_weight_with_odd_strides_on_size_one_dims_is_read_right(shape, strides, x_shape, kw, channels_last, dtype):
    """torch 2.13's CPU convolution misreads such weights (lowerings make them: a kernel of 1, one channel per
    group); convnd hands it a dense copy."""
    gen = torch.Generator().manual_seed(3)
    n = len(shape) - 2
    w = torch.randn(math.prod(shape), generator=gen).as_strided(shape, strides).to(dtype)
    x = torch.randn(x_shape, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format={2: torch.channels_last, 3: torch.channels_last_3d}[n])
    expected = TORCH_CONV[n](x.double(), w.double(), None, **kw)
    scale = expected.abs().max().item()
    torch.testing.assert_close(convnd.conv(x, w, **kw).double(), expected, rtol=0, atol=3e-2 * scale)


LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


@st.composite
def dense_weights(draw: st.DrawFn) -> torch.Tensor:
    """A dense weight with size-1 dims, in a contiguous or channels-last order, its size-1 dims' strides any."""
    shape = draw(st.lists(st.sampled_from([1, 1, 2, 3]), min_size=3, max_size=5))
    layouts = [torch.contiguous_format] + ([LAST[len(shape)]] if len(shape) in LAST else [])
    dense = torch.empty(shape, memory_format=draw(st.sampled_from(layouts))).stride()
    strides = [draw(st.sampled_from([d, 1, 5, 24])) if n == 1 else d for n, d in zip(shape, dense)]
    return torch.zeros(max(sum((n - 1) * s for n, s in zip(shape, strides)) + 1, 1)).as_strided(shape, strides)


@given(w=dense_weights())
def test_which_weights_are_copied_follows_torchs_own_layouts(w):
    """A weight is copied exactly when torch counts it dense in a layout (contiguous first) whose strides it does
    not carry on a size-1 dim: the oracle is torch's is_contiguous and a fresh tensor's strides in that layout."""
    layouts = [torch.contiguous_format] + ([LAST[w.dim()]] if w.dim() in LAST else [])
    layout = next((f for f in layouts if w.is_contiguous(memory_format=f)), None)
    if layout is not None and w.stride() == torch.empty(w.shape, memory_format=layout).stride():
        layout = None
    assert lowering._misread_layout(w.shape, w.stride()) == layout
    copy = lowering._readable(w)
    assert (copy is w) == (layout is None) and torch.equal(copy, w)
    if layout is not None:
        assert copy.stride() == torch.empty(w.shape, memory_format=layout).stride()


def test_a_channels_last_depthwise_weight_stays_bit_identical_to_torch():
    """(32, 1, 3, 3) strided (9, 1, 3, 1) also counts as contiguous: convnd hands it over as a contiguous copy (its
    strides are not that layout's), which on a channels-last input changes neither a bit nor the output layout."""
    x = torch.randn(2, 32, 9, 9).contiguous(memory_format=torch.channels_last)
    w = torch.randn(32, 1, 3, 3).clone(memory_format=torch.channels_last)
    assert w.stride() == (9, 1, 3, 1) and w.is_contiguous()
    expected, got = F.conv2d(x, w, padding=1, groups=32), convnd.conv(x, w, padding=1, groups=32)
    assert torch.equal(got, expected) and got.stride() == expected.stride()


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 5e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("dims", [4, 5])
def test_low_precision_past_three_dims(dims, dtype, tolerance, device):
    """Lowered convolutions keep the operands' dtype and stay within that dtype's rounding of the definition."""
    kwargs = {"padding": 1, "groups": 2, "padding_mode": "circular", "stride": (1,) * dims, "dilation": (1,) * dims}
    cfg = Config((2, 4, *(4,) * dims), (4, 2, *(2,) * dims), True, kwargs, ((1, 1),) * dims)
    x, w, b = cfg.tensors(dtype, device)
    got = convnd.conv(x, w, b, **cfg.kwargs)
    assert got.dtype == dtype
    expected = oracle(cfg, *(t.cpu().double() for t in (x, w, b)))  # the definition on the rounded operands
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got.double().cpu().numpy(), expected, rtol=0, atol=tolerance * scale)


# --- gradients past 3 dims ---------------------------------------------------------------------

GRADCHECK_CASES = [
    # (input shape, weight shape, keyword arguments)
    ((1, 2, 3, 3, 3, 3), (2, 2, 2, 2, 2, 2), {}),
    ((2, 2, 5, 3, 4, 3), (2, 1, 2, 1, 2, 2), {"stride": (2, 1, 2, 1), "dilation": (2, 1, 1, 2), "groups": 2}),
    ((1, 2, 4, 3, 3, 4), (4, 1, 2, 2, 1, 2), {"padding": ((1, 0), 1, (0, 2), 1), "groups": 2}),
    ((1, 2, 4, 3, 3, 4), (2, 2, 2, 2, 2, 2), {"padding": 1, "padding_mode": "reflect", "stride": 2, "dilation": 1}),
    ((2, 4, 3, 4, 3, 4), (2, 2, 3, 2, 2, 2), {"padding": "same", "padding_mode": "circular", "groups": 2}),
    ((3, 3, 4, 3, 3), (1, 3, 2, 2, 2, 2), {"padding": (1, 0, 1, 0), "padding_mode": "replicate"}),  # unbatched
    ((1, 2, 3, 2, 3, 2, 3), (2, 2, 2, 1, 2, 1, 2), {"padding": 1}),
    ((1, 2, 4, 3, 3, 2, 4), (2, 1, 2, 2, 1, 1, 2), {"stride": 2, "dilation": (1, 2, 1, 1, 2), "groups": 2,
                                                    "padding": (1, 1, 0, 0, 1), "padding_mode": "reflect"}),
]  # fmt: skip


@pytest.mark.parametrize(("input_shape", "weight_shape", "kwargs"), GRADCHECK_CASES)
def test_gradcheck_past_three_dims(input_shape, weight_shape, kwargs, device):
    g = torch.Generator().manual_seed(0)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(device).requires_grad_()  # noqa: E731
    x, w, b = make(*input_shape), make(*weight_shape), make(weight_shape[0])
    assert torch.autograd.gradcheck(lambda *t: convnd.conv(*t, **kwargs), (x, w, b))


# --- edge values ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_nan_and_inf_propagate_as_torch(dims, mode, device):
    x = torch.randn(1, 2, *(6,) * dims, device=device)
    n = x.numel()
    x.view(-1)[n // 4], x.view(-1)[n // 2], x.view(-1)[3 * n // 4] = float("nan"), float("inf"), -float("inf")
    theirs = TORCH_MODULES[dims](2, 3, 3, padding=1, padding_mode=mode).to(device)
    ours = CONVND_MODULES[dims](2, 3, 3, padding=1, padding_mode=mode).to(device)
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0, equal_nan=True)


# strategies that sum exactly the definition's terms, and those that also multiply zeros by the input
EXACT_SUMS, MIXING = ("tapsum", "fold", "unfold", "spread"), ("band", "fft", "winograd", "dft")


@pytest.mark.parametrize("name", [*EXACT_SUMS, *MIXING, None])
@pytest.mark.parametrize("dims", [4, 5])
@pytest.mark.parametrize("mode", MODES)
def test_nan_and_inf_propagate_past_three_dims(dims, mode, name, device):
    """tapsum, fold and unfold give the same non-finite outputs as the definition: NaN where NaN or inf - inf
    meet, inf where only inf does. band and fft also multiply zeros (a band's, a transform's) by every input,
    so, like Winograd or FFT algorithms of cuDNN, they may turn outputs near a non-finite input into NaN:
    they never lose a non-finite output and agree wherever they stay finite. The default plan is one of these."""
    x = torch.randn(1, 2, *(4,) * dims, dtype=torch.float64)
    x.view(-1)[5], x.view(-1)[100], x.view(-1)[200] = float("nan"), float("inf"), -float("inf")
    w = torch.randn(3, 2, *(2,) * dims, dtype=torch.float64)
    stride = (1, 2) * (dims // 2) + (1,) * (dims % 2)
    with convnd.strategy(name):
        got = convnd.conv(x.to(device), w.to(device), padding=1, padding_mode=mode, stride=stride).cpu().numpy()
    expected = reference.conv(x, w, None, stride, ((1, 1),) * dims, None, 1, mode)
    assert np.isnan(expected).any() and np.isinf(expected).any()
    if name in EXACT_SUMS:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    else:
        assert not np.isfinite(got[~np.isfinite(expected)]).any()
    finite = np.isfinite(expected) & np.isfinite(got)
    assert finite.any() or name == "fft"  # one transform mixes every input into every output
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_zero_batch(dims, mode, device):
    """An empty batch gives an empty output of the right shape, forward and backward, as torch does for N <= 3."""
    x = torch.randn(0, 2, *(4,) * dims, device=device, requires_grad=True)
    w = torch.randn(4, 2, *(3,) * dims, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    y = convnd.conv(x, w, b, padding=1, padding_mode=mode, stride=2)
    assert y.shape == (0, 4, *(2,) * dims)
    y.sum().backward()
    assert (
        x.grad.shape == x.shape
        and torch.equal(w.grad, torch.zeros_like(w))
        and torch.equal(b.grad, torch.zeros_like(b))
    )
    if dims <= 3:
        theirs = TORCH_MODULES[dims](2, 4, 3, padding=1, padding_mode=mode, stride=2).to(device)
        assert theirs(x).shape == y.shape


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
def test_unbatched_equals_batch_of_one(dims, device):
    x = torch.randn(2, *(5,) * dims, dtype=torch.float64, device=device)
    w = torch.randn(3, 2, *(2,) * dims, dtype=torch.float64, device=device)
    kwargs = {"padding": ((0, 1),) * dims, "padding_mode": "circular", "dilation": 2}
    assert torch.equal(convnd.conv(x, w, **kwargs), convnd.conv(x[None], w, **kwargs)[0])


# --- the direct-call memo (convnd.functional.direct_key) ------------------------------------------------


def _operands() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3), torch.randn(3)


@pytest.mark.parametrize("transposed", [False, True])
def test_a_repeated_call_runs_from_the_memo_as_the_first_did(transposed, monkeypatch):
    """The second call with the same arguments and operands skips parsing and checks, and gives torch's bits."""
    x, w, b = _operands()
    w = w.transpose(0, 1).contiguous() if transposed else w  # (C_in, C_out, k, k)
    ours, theirs = (convnd.conv_transpose, F.conv_transpose2d) if transposed else (convnd.conv, F.conv2d)
    functional._DIRECT.clear()
    first = ours(x, w, b, 2, 1)
    assert len(functional._DIRECT) == 1
    monkeypatch.setattr(functional, "make_spec", None)  # a call that parsed its arguments again would fail here
    monkeypatch.setattr(functional, "check_operands", None)
    second = ours(x, w, b, 2, 1)
    assert torch.equal(first, second) and torch.equal(second, theirs(x, w, b, 2, 1))
    assert len(functional._DIRECT) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda x, w, b: convnd.conv(x[:, :, None, None], w[:, :, None, None], b),  # N = 4: lowered, not remembered
        lambda x, w, b: convnd.conv(x.movedim(1, -1), w, b, channel_dim=-1),  # another layout
        lambda x, w, b: convnd.conv(x, w, b, convolution=True),  # a flipped kernel
        lambda x, w, b: convnd.conv(x, w, b, stride=np.int64(1)),  # not a plain int: validated every call
    ],
    ids=["4-d", "channel_dim", "convolution", "numpy int"],
)
def test_only_plain_direct_calls_are_remembered(call):
    functional._DIRECT.clear()
    call(*_operands())
    assert not functional._DIRECT


# (what changes against a remembered valid call, the error convnd raises): the key must tell each apart
MEMO_TWINS = {
    "stride float": ({"stride": 1.0}, ConvndTypeError),
    "stride bool": ({"stride": True}, ConvndTypeError),
    "padding bool": ({"padding": (1, True)}, ConvndTypeError),
    "groups float": ({"groups": 1.0}, ConvndTypeError),
    "padding_mode": ({"padding_mode": "mirror"}, ConvndValueError),
    "integer input": ({"x": lambda x: x.long()}, ConvndTypeError),
    "weight dtype": ({"w": lambda w: w.double()}, ConvndValueError),
    "bias dtype": ({"b": lambda b: b.double()}, ConvndValueError),
    "bias shape": ({"b": lambda b: b[:2]}, ConvndValueError),
    "input channels": ({"x": lambda x: x[:, :3]}, ConvndValueError),
    "weight device": ({"w": lambda w: w.to("meta")}, ConvndValueError),
    "input rank": ({"x": lambda x: x[0, 0]}, ConvndValueError),
}


@pytest.mark.parametrize(("change", "error"), MEMO_TWINS.values(), ids=MEMO_TWINS)
def test_the_memo_never_skips_validation(change, error):
    x, w, b = _operands()
    valid = {"stride": 1, "padding": (1, 1), "groups": 1, "padding_mode": "zeros"}
    convnd.conv(x, w, b, **valid)
    convnd.conv(x, w, b, **valid)  # remembered, then run from the memo
    operands = {"x": x, "w": w, "b": b}
    for name, edit in change.items():
        if name in operands:
            operands[name] = edit(operands[name])
    arguments = {**valid, **{k: v for k, v in change.items() if k not in operands}}
    with pytest.raises(error):
        convnd.conv(operands["x"], operands["w"], operands["b"], **arguments)


@pytest.mark.parametrize("first", ["dense weight first", "odd strides first"])
def test_the_memo_tells_weights_apart_by_their_strides(first):
    # a remembered call runs torch's function directly, for a weight torch reads right as it is; the same shapes
    # with a weight whose size-1 dims carry strides torch 2.13 misreads (ODD_WEIGHTS) must still get a dense copy
    shape, strides, x_shape, kw = ODD_WEIGHTS[0]
    gen = torch.Generator().manual_seed(3)
    odd = torch.randn(math.prod(shape), generator=gen).as_strided(shape, strides)
    x = torch.randn(x_shape, generator=gen).contiguous(memory_format=torch.channels_last_3d)
    expected = F.conv3d(x.double(), odd.double(), None, **kw)
    assert (F.conv3d(x, odd, None, **kw).double() - expected).abs().max() > 1  # torch itself misreads it
    functional._DIRECT.clear()
    weights = [odd.contiguous(), odd] if first == "dense weight first" else [odd, odd.contiguous()]
    for w in weights:
        for _ in range(2):  # the second call from the memo
            torch.testing.assert_close(convnd.conv(x, w, **kw).double(), expected, rtol=0, atol=1e-4)
    assert len(functional._DIRECT) == 2


@pytest.mark.parametrize("dims", [2, 4])
def test_torch_func_vmap_and_grad(dims):
    """torch.func's transforms see convnd as torch ops: vmap over a batch of batches, grad of a lowered call."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(3, 2, 2, *(4,) * dims, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 2, *(3,) * dims, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    for _ in range(2):  # the second time through the direct-call memo for N <= 3
        got = torch.func.vmap(lambda xi: convnd.conv(xi, w, b, padding=1))(x)
        assert torch.allclose(got, torch.stack([convnd.conv(xi, w, b, padding=1) for xi in x]), rtol=0, atol=1e-12)
    grad = torch.func.grad(lambda ww: convnd.conv(x[0], ww, b, padding=1).square().sum())(w)
    ww = w.clone().requires_grad_()
    convnd.conv(x[0], ww, b, padding=1).square().sum().backward()
    torch.testing.assert_close(grad, ww.grad, rtol=1e-12, atol=1e-12)


def test_rank_follows_the_weight():
    """The seed question: a 2-d kernel makes a 2-d convolution, whatever else is passed."""
    x = torch.randn(1, 1, 7, 9)
    w = torch.randn(1, 1, 3, 3)
    assert torch.equal(convnd.conv(x, w, padding="same"), F.conv2d(x, w, padding="same"))
    assert convnd.conv(torch.randn(1, 1, 4, 5, 6, 7, 8, 9), torch.randn(2, 1, 1, 1, 1, 1, 1, 1)).shape == (
        1, 2, 4, 5, 6, 7, 8, 9,
    )  # fmt: skip
