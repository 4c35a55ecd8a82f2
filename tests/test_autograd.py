"""The custom backward of lowered convolutions: gradcheck-clean in float64, equal to autograd through the lowering."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import convnd
from convnd import autograd

# (id, transposed, kwargs, input spatial size, kernel)
CASES = [
    ("strided-grouped", False, {"stride": 2, "padding": 1, "groups": 2}, (4, 3, 5, 4), (3, 2, 3, 2)),
    ("dilated-asymmetric", False, {"dilation": 2, "padding": ((1, 0), 2, 0, 1)}, (5, 4, 5, 5), (2, 2, 2, 2)),
    ("reflect", False, {"padding": 1, "padding_mode": "reflect"}, (3, 4, 4, 3), (3, 2, 2, 3)),
    ("transposed", True, {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}, (3, 2, 3, 3), (3, 2, 2, 3)),
    ("transposed-dilated", True, {"dilation": 3, "padding": 1, "output_padding": 2}, (2, 3, 2, 3), (2, 2, 2, 2)),
    ("5d", False, {"stride": (1, 2, 1, 1, 2), "padding": 1}, (3, 4, 3, 2, 4), (2, 3, 2, 2, 3)),
]


def _operands(transposed, kw, size, kernel):
    gen = torch.Generator().manual_seed(len(size))
    groups = kw.get("groups", 1)
    shape = (4, 2 // groups if groups == 2 else 3) if transposed else (3 if groups == 1 else 4, 4 // groups)
    x = torch.randn((2, 4, *size), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn((*shape, *kernel), generator=gen, dtype=torch.float64, requires_grad=True)
    out_channels = shape[1] * groups if transposed else shape[0]
    b = torch.randn(out_channels, generator=gen, dtype=torch.float64, requires_grad=True)
    return x, w, b


def _fn(transposed, kw, name, custom=True):
    call = convnd.conv_transpose if transposed else convnd.conv

    def f(x, w, b):
        with convnd.strategy(name, custom_backward=custom):
            return call(x, w, b, **kw)

    return f


@pytest.mark.parametrize("name", ["tapsum", "fold", "spread", "dft"])
@pytest.mark.parametrize(("case", "transposed", "kw", "size", "kernel"), CASES, ids=[c[0] for c in CASES])
def test_custom_backward_passes_gradcheck(name, case, transposed, kw, size, kernel):
    inputs = _operands(transposed, kw, size, kernel)
    assert gradcheck(_fn(transposed, kw, name), inputs, fast_mode=True)


@pytest.mark.parametrize("name", ["tapsum", "fold", "unfold", "fft", "band", "spread"])
@pytest.mark.parametrize(("case", "transposed", "kw", "size", "kernel"), CASES, ids=[c[0] for c in CASES])
def test_autograd_through_every_strategy_passes_gradcheck(name, case, transposed, kw, size, kernel):
    inputs = _operands(transposed, kw, size, kernel)
    assert gradcheck(_fn(transposed, kw, name, custom=False), inputs, fast_mode=True)


@pytest.mark.parametrize("name", ["tapsum", "fold"])
def test_custom_backward_is_twice_differentiable(name):
    transposed, kw, _, kernel = CASES[0][1:]
    x, w, b = _operands(transposed, kw, (3, 2, 3, 3), kernel)
    assert gradgradcheck(_fn(transposed, kw, name), (x, w, b), fast_mode=True)


@pytest.mark.parametrize("budget", [1, 2048])
@pytest.mark.parametrize(("case", "transposed", "kw", "size", "kernel"), CASES[:3] + CASES[5:], ids=lambda c: c)
def test_fold_backward_rebuilds_the_pieces_its_forward_ran_in(case, transposed, kw, size, kernel, budget, monkeypatch):
    # a budget of 1 byte: one output row of the first lowered dim per piece; 2048: a few rows each
    pieces = []
    real = convnd.strategies.fold_backward
    monkeypatch.setattr(convnd.strategies, "fold_backward", lambda *a: pieces.append(a[5]) or real(*a))
    inputs = _operands(transposed, kw, size, kernel)

    def f(x, w, b):
        with convnd.strategy("fold", max_memory=budget, custom_backward=True):
            return convnd.conv(x, w, b, **kw)

    assert gradcheck(f, inputs, fast_mode=True)
    assert pieces and min(pieces) > 1


@pytest.mark.parametrize("name", ["tapsum", "fold"])
@pytest.mark.parametrize(("case", "transposed", "kw", "size", "kernel"), CASES, ids=[c[0] for c in CASES])
def test_custom_backward_equals_autograd_through_the_lowering(case, transposed, kw, size, kernel, name):
    grads = []
    for custom in (True, False):
        x, w, b = _operands(transposed, kw, size, kernel)
        y = _fn(transposed, kw, name, custom)(x, w, b)
        y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))
        grads.append((x.grad, w.grad, b.grad))
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_the_function_runs_when_a_gradient_is_needed_and_the_rule_or_the_user_asks(monkeypatch):
    applied = []
    real = autograd.LoweredConv.apply
    monkeypatch.setattr(autograd.LoweredConv, "apply", lambda *a: applied.append(1) or real(*a))
    x, w, b = _operands(False, {}, (5, 3, 3, 3), (4, 2, 2, 2))  # 4 wide in the lowered dim: custom by default
    with torch.no_grad():
        convnd.conv(x, w, b)
    assert applied == []
    convnd.conv(x, w, b).sum().backward()
    assert applied == [1]
    with convnd.strategy(custom_backward=False):
        convnd.conv(x, w, b).sum().backward()
    assert applied == [1]
    narrow = w[:, :, :3].detach().requires_grad_()  # 3 wide: autograd through the lowering by default
    convnd.conv(x, narrow, b).sum().backward()
    assert applied == [1]
    with convnd.strategy(custom_backward=True):
        convnd.conv(x, narrow, b).sum().backward()
    assert applied == [1, 1]


@pytest.mark.parametrize("name", ["fold", "spread"])
def test_fold_and_spread_take_folds_backward_from_a_size_on(name):
    spec = convnd.spec.make_spec((3, 3, 3, 3), padding=1)

    def plan(x_shape, **forced):
        with convnd.strategy(name, **forced):
            return convnd.lowering.plan(spec, input_shape=x_shape, weight_shape=(16, 8, 3, 3, 3, 3))

    big, small = (2, 8, 8, 10, 16, 16), (1, 8, 2, 3, 4, 4)  # 212M and 0.4M multiply-adds
    threshold = convnd.selection.FOLD_BACKWARD_MIN_MACS[name]
    assert 16 * 8 * 81 * 2 * 8 * 10 * 16 * 16 >= threshold > 16 * 8 * 81 * 2 * 3 * 4 * 4
    assert plan(big).custom_backward
    assert not plan(small).custom_backward  # its fixed cost loses to autograd through the lowering
    assert not plan(big, custom_backward=False).custom_backward
    assert plan(small, custom_backward=True).custom_backward


def test_fold_backward_of_single_small_images_matches_autograd(monkeypatch):
    # one output row per piece and batch 1: each native backward sees one small float32 image (the doubled path)
    doubled = []
    real = convnd.lowering._slow_single
    monkeypatch.setattr(convnd.lowering, "_slow_single", lambda *a: doubled.append(real(*a)) or doubled[-1])
    gen = torch.Generator().manual_seed(0)
    x0, w0 = torch.randn((1, 4, 3, 5, 4, 4), generator=gen), torch.randn((3, 4, 3, 3, 3, 3), generator=gen)
    grads = []
    for custom in (True, False):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        with convnd.strategy("fold", max_memory=1, custom_backward=custom):
            convnd.conv(x, w, padding=1).square().sum().backward()
        grads.append((x.grad, w.grad))
    assert any(doubled)
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["fold", "spread"])
def test_folds_backward_is_twice_differentiable_when_a_tap_covers_the_whole_input(name):
    # an outer kernel of 1: the one tap's input-gradient view is the whole buffer (an in-place trap under create_graph)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((1, 2, 3, 3, 4, 3), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn((2, 2, 1, 3, 3, 3), generator=gen, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        with convnd.strategy(name, custom_backward=True):
            return convnd.conv(x, w, padding=(0, 1, 1, 1))

    assert gradgradcheck(f, (x, w), fast_mode=True)


def test_a_bias_only_gradient_runs_no_folded_backward(monkeypatch):
    calls = []
    real = convnd.strategies.fold_backward
    monkeypatch.setattr(convnd.strategies, "fold_backward", lambda *a: calls.append(1) or real(*a))
    x, w, b = _operands(False, {}, (5, 3, 3, 3), (3, 2, 2, 2))
    with convnd.strategy("fold", custom_backward=True):
        convnd.conv(x, w, b).sum().backward()
        assert calls == [1]
        convnd.conv(x.detach(), w.detach(), b).sum().backward()
    assert calls == [1]  # the bias gradient is a sum: no folded input rebuilt for it


# phase_backward (16 or more input channels per group, output no larger than the input): (id, x shape, w shape,
# kwargs, max_memory: one piece unless the case is about pieces); fold's forward runs, its gradients from the phases
ONE_PIECE = 1 << 30
PHASE_CASES = [
    ("stride 2", (2, 16, 5, 4, 4, 3), (8, 16, 3, 3, 3, 3), {"stride": 2, "padding": 1}, ONE_PIECE),
    ("stride 3 over a kernel of 2: unread frames",
     (1, 16, 7, 3, 3, 3), (4, 16, 2, 3, 3, 3), {"stride": (3, 1, 1, 1)}, ONE_PIECE),
    ("dilated, asymmetric padding",
     (1, 16, 6, 3, 4, 3), (8, 16, 2, 2, 2, 2), {"dilation": 2, "padding": ((2, 0), 1, 0, 1)}, ONE_PIECE),
    ("groups",
     (1, 32, 4, 3, 3, 3), (16, 16, 3, 2, 2, 2), {"groups": 2, "padding": 1, "stride": (2, 1, 1, 1)}, ONE_PIECE),
    ("two outer dims",
     (1, 16, 4, 5, 3, 3, 3), (8, 16, 3, 2, 3, 1, 3), {"stride": (1, 2, 1, 1, 1), "padding": 1}, ONE_PIECE),
    ("reflect", (1, 16, 4, 3, 4, 3), (16, 16, 3, 3, 3, 3), {"padding": 1, "padding_mode": "reflect"}, ONE_PIECE),
    ("in pieces", (2, 16, 7, 3, 4, 3), (8, 16, 3, 3, 3, 3), {"stride": (2, 1, 1, 1), "padding": 1}, 20_000),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "x_shape", "w_shape", "kw", "max_memory"), PHASE_CASES, ids=[c[0] for c in PHASE_CASES]
)
def test_phase_backward_equals_autograd_through_unfold(case, x_shape, w_shape, kw, max_memory, monkeypatch):
    ran = {"phase": [], "fold": []}
    for name, attr in (("phase", "phase_backward"), ("fold", "fold_backward")):
        real = getattr(convnd.strategies, attr)
        monkeypatch.setattr(
            convnd.strategies, attr, lambda *a, real=real, name=name: ran[name].append(a[5]) or real(*a)
        )
    # uninitialized buffers hold NaN here, so an element the phases leave unwritten cannot pass as a zero
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda t, size, **kw: t.new_full(size, float("nan"), **kw))
    gen = torch.Generator().manual_seed(4)
    x0, w0 = (torch.randn(s, generator=gen, dtype=torch.float64) for s in (x_shape, w_shape))
    b0 = torch.randn(w_shape[0], generator=gen, dtype=torch.float64)
    g = torch.randn(convnd.conv(x0, w0, b0, **kw).shape, generator=gen, dtype=torch.float64)
    grads = {}
    for name, custom in (("fold", True), ("unfold", False)):
        leaves = [t.clone().requires_grad_() for t in (x0, w0, b0)]
        # the first dims lowered (the planner would keep the longest native), so the strides above are the phases'
        with convnd.strategy(
            name, custom_backward=custom, max_memory=max_memory, native_axes=range(len(x_shape) - 5, len(x_shape) - 2)
        ):
            grads[name] = torch.autograd.grad(convnd.conv(*leaves, **kw), leaves, g)
    assert ran["fold"] == [] and len(ran["phase"]) == 1
    assert (ran["phase"][0] > 1) == (max_memory != ONE_PIECE)  # the pieces
    for ours, theirs in zip(grads["fold"], grads["unfold"]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


@pytest.mark.parametrize("needs", [(True, False), (False, True)], ids=["input only", "weight only"])
def test_phase_backward_computes_only_the_gradients_asked_for(needs):
    gen = torch.Generator().manual_seed(5)
    x0, w0 = torch.randn((1, 16, 5, 3, 3, 3), generator=gen), torch.randn((8, 16, 3, 3, 3, 3), generator=gen)
    x, w = x0.clone().requires_grad_(needs[0]), w0.clone().requires_grad_(needs[1])
    with convnd.strategy("fold", custom_backward=True):
        convnd.conv(x, w, stride=2, padding=1).sum().backward()
    xr, wr = x0.clone().requires_grad_(needs[0]), w0.clone().requires_grad_(needs[1])
    with convnd.strategy("unfold", custom_backward=False):
        convnd.conv(xr, wr, stride=2, padding=1).sum().backward()
    for ours, theirs, needed in ((x.grad, xr.grad, needs[0]), (w.grad, wr.grad, needs[1])):
        assert (ours is not None) == needed
        if needed:
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_phase_backward_passes_gradcheck_and_gradgradcheck(stride):
    # stride 1: one phase covering all of the input gradient (the setitem of a whole-tensor view under create_graph)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn((1, 16, 3, 2, 3, 2), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn((4, 16, 3, 1, 2, 2), generator=gen, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        with convnd.strategy("fold", custom_backward=True, native_axes=(1, 2, 3)):
            return convnd.conv(x, w, stride=(stride, 1, 1, 1), padding=(1, 0, 1, 0))

    assert gradcheck(f, (x, w), fast_mode=True)
    assert gradgradcheck(f, (x, w), fast_mode=True)


def test_phase_backward_takes_over_from_16_channels_where_the_output_is_no_larger():
    pays = convnd.selection.phase_backward_pays
    assert pays((2, 16, 10, 10, 20, 20), (32, 16, 3, 3, 3, 3), 2 * 32 * 5 * 5 * 10 * 10)  # the bench's 4d-strided
    assert not pays((2, 8, 10, 10, 20, 20), (8, 8, 3, 3, 3, 3), 2 * 8 * 5 * 5 * 10 * 10)  # 8 channels
    assert not pays((2, 16, 8, 8, 16, 16), (32, 16, 3, 3, 3, 3), 2 * 32 * 8 * 8 * 16 * 16)  # output twice the input
    assert pays((1, 16, 8, 16, 16, 16), (16, 16, 3, 3, 3, 3), 16 * 8 * 16 * 16 * 16)  # equal sizes


@given(data=st.data())
def test_phase_backward_matches_autograd_through_unfold_on_random_configs(data):
    # random 4-d and 5-d convolutions with 16 input channels per group, the first dims lowered: strides, dilations,
    # kernels and padding pairs along them make phases with one, several or no taps
    dims = data.draw(st.sampled_from([4, 5]))
    lowered = dims - 3
    groups = data.draw(st.sampled_from([1, 2]))
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(lowered)) + (1,) * 3
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(lowered)) + (1,) * 3
    padding = (
        tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in range(lowered)) + ((0, 0),) * 3
    )
    size = tuple(
        data.draw(st.integers(max(1, d * (k - 1) + 1 - lo - hi), 6))
        for k, d, (lo, hi) in zip(kernel, dilation, padding)
    )
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    x = torch.randn((1, 16 * groups, *size), generator=gen, dtype=torch.float64)
    w = torch.randn((2 * groups, 16, *kernel), generator=gen, dtype=torch.float64)
    kw = {"stride": stride, "dilation": dilation, "padding": padding, "groups": groups}
    g = torch.randn(convnd.conv(x, w, **kw).shape, generator=gen, dtype=torch.float64)
    if g.numel() > x.numel():
        return  # the phase backward is for outputs no larger than the input
    grads = {}
    for name, custom in (("fold", True), ("unfold", False)):
        leaves = [x.clone().requires_grad_(), w.clone().requires_grad_()]
        with convnd.strategy(name, custom_backward=custom, native_axes=range(lowered, dims)):
            grads[name] = torch.autograd.grad(convnd.conv(*leaves, **kw), leaves, g)
    for ours, theirs in zip(grads["fold"], grads["unfold"]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


# (id, kwargs, input spatial size, kernel, strategy the input gradient's forward form is forced to)
ADJOINT_CASES = [
    ("winograd", {"padding": 1}, (5, 3, 4, 3), (3, 2, 3, 2), "winograd"),
    ("winograd, grouped, one-sided", {"padding": (1, 0, 1, 0), "groups": 2}, (6, 3, 4, 3), (3, 2, 2, 2), "winograd"),
    ("dft, dilated", {"padding": (2, 1, 1, 1), "dilation": (1, 2, 1, 1)}, (6, 6, 3, 4), (5, 2, 3, 2), "dft"),
    ("dft, no padding", {}, (7, 3, 4, 3), (4, 2, 2, 2), "dft"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "kw", "size", "kernel", "name"), ADJOINT_CASES, ids=[c[0] for c in ADJOINT_CASES])
def test_the_input_gradient_runs_as_a_forward_convolution_of_fewer_products(case, kw, size, kernel, name, monkeypatch):
    # a stride-1 input gradient is the forward convolution of the output gradient with the flipped, transposed
    # weight: planned so, winograd and dft apply (as the transposed convolution it also is, neither does)
    groups = kw.get("groups", 1)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((2, 4, *size), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn((6, 4 // groups, *kernel), generator=gen, dtype=torch.float64, requires_grad=True)
    ran = []
    adjoint = autograd.forward_adjoint
    monkeypatch.setattr(autograd, "forward_adjoint", lambda *a: ran.append(adjoint(*a)) or ran[-1])
    with convnd.strategy(name, native_axes=(1, 2, 3), custom_backward=True):
        y = convnd.conv(x, w, **kw)
        grads = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    assert ran and ran[0] is not None and ran[0][1].strategy == name
    with convnd.strategy("tapsum", custom_backward=False):  # autograd through the plain tap sum
        expected = torch.autograd.grad(convnd.conv(x, w, **kw), (x, w), torch.ones_like(y))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    with convnd.strategy(name, native_axes=(1, 2, 3), custom_backward=True):
        assert gradcheck(lambda x, w: convnd.conv(x, w, **kw), (x, w), fast_mode=True)


@pytest.mark.parametrize(
    ("case", "kw", "kernel", "name"),
    [
        ("strided", {"stride": (1, 2, 1, 1), "padding": 1}, (3, 3, 3, 3), "winograd"),
        ("padding past the kernel's reach", {"padding": (3, 1, 1, 1)}, (3, 3, 3, 3), "winograd"),
        ("a plan with as many products", {"padding": 1}, (3, 3, 3, 3), "fold"),
        ("where F(m, 3) does not apply", {"padding": 2}, (5, 3, 3, 3), "winograd"),
    ],
)
def test_the_input_gradient_stays_in_the_combined_backward_elsewhere(case, kw, kernel, name):
    x = torch.randn((1, 2, 5, 4, 4, 4), dtype=torch.float64)
    w = torch.randn((3, 2, *kernel), dtype=torch.float64)
    spec = convnd.spec.make_spec(kernel, kw.get("stride", 1), kw["padding"])
    with convnd.strategy(name, native_axes=(1, 2, 3)):
        how = convnd.lowering.plan(spec, input_shape=x.shape, weight_shape=w.shape)
        grad = torch.zeros((1, 3, *spec.output_size(x.shape[2:])), dtype=torch.float64)
        assert autograd.forward_adjoint(grad, w, spec, how) is None


def test_an_emulations_input_gradient_keeps_its_pinned_rank():
    spec = convnd.spec.make_spec((3, 3, 3, 3), padding=1)
    how = convnd.lowering.plan(spec, 2, input_shape=(1, 2, 5, 4, 4, 4), weight_shape=(3, 2, 3, 3, 3, 3))
    assert how.pinned
    grad = torch.zeros((1, 3, 5, 4, 4, 4))
    assert autograd.forward_adjoint(grad, torch.zeros((3, 2, 3, 3, 3, 3)), spec, how) is None


def test_the_split_backward_is_twice_differentiable():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn((1, 2, 5, 3, 3, 2), generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn((3, 2, 3, 2, 2, 2), generator=gen, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        with convnd.strategy("winograd", native_axes=(1, 2, 3), custom_backward=True):
            return convnd.conv(x, w, padding=(1, 1, 0, 1))

    spec = convnd.spec.make_spec((3, 2, 2, 2), padding=(1, 1, 0, 1))
    with convnd.strategy("winograd", native_axes=(1, 2, 3)):
        how = convnd.lowering.plan(spec, input_shape=x.shape, weight_shape=w.shape)
        assert autograd.forward_adjoint(torch.zeros((1, 3, 5, 4, 2, 3)), w, spec, how) is not None
    assert gradgradcheck(f, (x, w), fast_mode=True)
