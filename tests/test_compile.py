"""convnd under torch.compile: one graph (fullgraph=True), the same numbers, the same gradients.

The eager and aot_eager backends run the traced graph through the same ATen kernels,
so their results must be bit-identical to eager convnd. Inductor is compared at float32
tolerance: it runs convolutions in channels-last memory (its ``layout_optimization``),
which sums in another order; on CPU the Conv2d case's input gradient then differs in
the last bit (bit-identical with ``torch._inductor.config.layout_optimization = False``),
and its generated code may fuse the bias and tap additions. Inductor compiles are slow,
so only a handful of small cases use it.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import convnd

# Dynamo traces through functools.lru_cache with this warning; convnd's caches step aside under tracing instead
pytestmark = pytest.mark.filterwarnings("error:Dynamo detected a call to a `functools.lru_cache`")

Case = tuple[str, Callable[[torch.device], torch.nn.Module], tuple[int, ...]]


class Functional(torch.nn.Module):
    """A functional call with its weight and bias as parameters, so gradients are compared like a module's."""

    def __init__(self, op: Callable[..., torch.Tensor], weight_shape: tuple[int, ...], **kwargs: object) -> None:
        super().__init__()
        self.op, self.kwargs = op, kwargs
        out_channels = weight_shape[1] * kwargs.get("groups", 1) if op is convnd.conv_transpose else weight_shape[0]
        self.weight = torch.nn.Parameter(torch.randn(weight_shape))
        self.bias = torch.nn.Parameter(torch.randn(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.weight, self.bias, **self.kwargs)


# (name, module factory, input shape): N = 2, 4 and 5, both directions, functional and module forms
CASES: list[Case] = [
    ("conv N=2 same", lambda d: convnd.Conv2d(3, 4, 3, padding="same", device=d), (2, 3, 6, 7)),
    ("conv N=4 functional pairs", lambda d: Functional(convnd.conv, (4, 3, 3, 2, 3, 2), stride=(2, 1, 1, 2),
                                                       padding=((1, 0), 1, (0, 2), 0)).to(d), (2, 3, 5, 4, 5, 6)),
    ("conv N=4 channels-last layout", lambda d: Functional(convnd.conv, (4, 3, 2, 2, 3, 2), padding=1,
                                                           channel_dim=-1).to(d), (2, 5, 4, 5, 6, 3)),
    ("conv N=4 reflect groups", lambda d: convnd.ConvNd(4, 2, (3, 2, 3, 3), padding=1, groups=2,
                                                        padding_mode="reflect", device=d), (2, 4, 4, 5, 4, 5)),
    ("conv_transpose N=4 functional", lambda d: Functional(convnd.conv_transpose, (3, 2, 2, 3, 2, 2), stride=2,
                                                           padding=1, output_padding=1).to(d), (2, 3, 3, 3, 4, 3)),
    ("ConvTransposeNd N=4", lambda d: convnd.ConvTransposeNd(3, 2, (2, 2, 3, 2), stride=(2, 1, 1, 2), dilation=2,
                                                             device=d), (1, 3, 3, 4, 3, 3)),
    ("rewrite Conv3d onto 2-d", lambda d: convnd.rewrite(torch.nn.Conv3d(2, 3, 3, padding=1, padding_mode="reflect",
                                                                       device=d), 2), (2, 2, 4, 5, 4)),
    ("ConvNd N=5 unbatched", lambda d: convnd.ConvNd(2, 3, (2, 2, 2, 2, 2), padding=((1, 0), 0, 1, 0, 0), device=d),
     (2, 3, 3, 3, 3, 4)),
]  # fmt: skip


def _forward_backward(module: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output, then the gradients of a fixed function of it w.r.t. the input and every parameter."""
    x = x.detach().requires_grad_()
    y = module(x)
    # the output gradient laid out in memory as y is (empty_like keeps y's strides): AOTAutograd gives the
    # compiled backward its gradient in the output's own layout, so eager must see that layout too, or a
    # permuted output (layout keywords) sums the bias gradient in another order
    weights = torch.empty_like(y).copy_(torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y))
    return [y.detach(), *torch.autograd.grad((y * weights).sum(), (x, *module.parameters()))]


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize(("name", "make", "shape"), CASES, ids=[c[0] for c in CASES])
def test_fullgraph_is_bit_identical(name: str, make: Callable, shape: tuple[int, ...], backend: str, device) -> None:
    torch.manual_seed(0)
    module, x = make(device), torch.randn(shape, device=device)
    expected = _forward_backward(module, x)
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    got = _forward_backward(compiled, x)
    for what, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        assert torch.equal(g, e), f"{name}: {what} differs under backend={backend}"


INDUCTOR = [c for c in CASES if c[0] in ("conv N=2 same", "conv N=4 functional pairs", "ConvTransposeNd N=4")]


@pytest.mark.parametrize(("name", "make", "shape"), INDUCTOR, ids=[c[0] for c in INDUCTOR])
def test_inductor_matches_eager(name: str, make: Callable, shape: tuple[int, ...], device) -> None:
    torch.manual_seed(0)
    module, x = make(device), torch.randn(shape, device=device)
    expected = _forward_backward(module, x)
    got = _forward_backward(torch.compile(module, fullgraph=True), x)
    for what, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=lambda m, w=what: f"{name}: {w}: {m}")


def test_explain_finds_no_graph_break(device) -> None:
    x = torch.randn(1, 2, 3, 4, 3, 4, device=device)
    w = torch.randn(3, 2, 2, 3, 2, 2, device=device)
    explanation = torch._dynamo.explain(convnd.conv)(x, w, None, 1, ((1, 0), 1, 0, 1), 1, 1, "circular")
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


def test_dynamic_batch_and_spatial_sizes_compile_once(device) -> None:
    module = convnd.ConvNd(2, 3, (2, 3, 2, 2), stride=(2, 1, 1, 1), padding=1, device=device)
    counter = CompileCounter()
    compiled = torch.compile(module, fullgraph=True, backend=counter, dynamic=True)
    # distinct sizes (none 0, 1 or the channel count) so Dynamo's 0/1 and duck-size specializations stay out
    # (the planner's comparisons are guards on the sizes: sizes that keep them reuse the graph; the lowered dim's
    # size (here 4) sets the band strategy's channel count, so the native dims are the ones that vary)
    for shape in [(3, 2, 4, 5, 6, 7), (5, 2, 4, 5, 6, 7), (3, 2, 4, 6, 7, 8)]:
        x = torch.randn(shape, device=device)
        assert torch.equal(compiled(x), module(x)), shape
    assert counter.frame_count == 1


def test_int_arguments_that_change_between_calls_recompile(device) -> None:
    # Dynamo passes a changed int argument as a SymInt; the spec pins it to its value, in one graph each time
    x = torch.randn(2, 2, 5, 6, 5, 6, device=device)
    w = torch.randn(3, 2, 2, 3, 2, 2, device=device)
    compiled = torch.compile(lambda x, s, p: convnd.conv(x, w, None, s, p), fullgraph=True, backend="eager")
    for stride, padding in [(1, 0), (2, 1), (3, 2)]:
        assert torch.equal(compiled(x, stride, padding), convnd.conv(x, w, None, stride, padding)), (stride, padding)


def test_transposed_output_size_argument_compiles(device) -> None:
    module = convnd.ConvTransposeNd(3, 2, (2, 2, 3, 2), stride=2, device=device)
    x = torch.randn(2, 3, 4, 3, 4, 3, device=device)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    for size in [(9, 7, 9, 7), (2, 2, 8, 6, 9, 6)]:
        assert torch.equal(compiled(x, output_size=size), module(x, output_size=size)), size


def test_compiled_module_raises_convnd_errors(device) -> None:
    # Without fullgraph, Dynamo breaks the graph at the raise and the user sees convnd's own error;
    # with fullgraph=True any exception is an error of Dynamo's (it keeps ours as the cause).
    module = convnd.ConvNd(3, 4, (3, 2, 3, 3), device=device)
    bad = torch.randn(1, 5, 4, 4, 4, 4, device=device)
    with pytest.raises(convnd.ConvndValueError) as eager:
        module(bad)
    assert "3 channels" in str(eager.value)
    with pytest.raises(convnd.ConvndValueError) as compiled:
        torch.compile(module, backend="eager")(bad)
    assert str(compiled.value) == str(eager.value)
    torch._dynamo.reset()  # else the cached fallback of the call above answers the next one
    with pytest.raises(Exception) as caught:
        torch.compile(module, backend="eager", fullgraph=True)(bad)
    assert str(eager.value) in str(caught.value.__cause__)


@pytest.mark.parametrize("name", convnd.selection.STRATEGIES)
def test_every_strategy_in_pieces_compiles_to_one_bit_identical_graph(name: str, device) -> None:
    # a tight budget: fold's output rows and spread's input frames run in pieces; custom backwards included
    torch.manual_seed(0)
    module = Functional(convnd.conv, (4, 3, 3, 2, 3, 2), stride=(2, 1, 1, 1), padding=1).to(device)
    x = torch.randn((2, 3, 5, 4, 5, 6), device=device)
    with convnd.strategy(name, max_memory=4096):
        expected = _forward_backward(module, x)
        got = _forward_backward(torch.compile(module, fullgraph=True, backend="aot_eager"), x)
    for what, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        assert torch.equal(g, e), f"{name}: {what} differs"


@pytest.mark.parametrize("name", [None, *convnd.selection.STRATEGIES])
def test_every_strategy_compiles_with_dynamic_sizes_and_gradients(name: str | None, device) -> None:
    # dynamic=True makes sizes and strides symbolic: a Python decision on a stride (sorting them) breaks the graph
    torch.manual_seed(0)
    module = Functional(convnd.conv, (4, 3, 2, 2, 3, 2), stride=(1, 2, 1, 1)).to(device)
    x = torch.randn((2, 3, 5, 4, 5, 6), device=device)
    with convnd.strategy(name):
        expected = _forward_backward(module, x)
        got = _forward_backward(torch.compile(module, fullgraph=True, backend="eager", dynamic=True), x)
    for what, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        assert torch.equal(g, e), f"{name}: {what} differs"


@pytest.mark.parametrize("name", ["fold", "spread"])
def test_phase_backward_and_strided_spread_compile_to_one_bit_identical_graph(name: str, device) -> None:
    # 16 input channels: the gradients come from strategies.phase_backward; spread's forward runs per phase (stride 2)
    torch.manual_seed(0)
    module = Functional(convnd.conv, (4, 16, 3, 2, 3, 2), stride=(2, 1, 2, 1), padding=1).to(device)
    x = torch.randn((2, 16, 5, 4, 5, 3), device=device)
    with convnd.strategy(name, custom_backward=True, native_axes=(1, 2, 3)):
        expected = _forward_backward(module, x)
        got = _forward_backward(torch.compile(module, fullgraph=True, backend="aot_eager"), x)
    for what, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        assert torch.equal(g, e), f"{name}: {what} differs"


def test_winograd_compiles_to_one_bit_identical_graph(device) -> None:
    # F(2, 3) along the first dim, in runs of tiles (a tight budget), with its custom backward
    torch.manual_seed(0)
    module = Functional(convnd.conv, (4, 3, 3, 2, 3, 2), padding=1).to(device)
    x = torch.randn((2, 3, 7, 4, 5, 3), device=device)
    with convnd.strategy("winograd", custom_backward=True, native_axes=(1, 2, 3), max_memory=4096):
        expected = _forward_backward(module, x)
        got = _forward_backward(torch.compile(module, fullgraph=True, backend="aot_eager"), x)
    for what, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        assert torch.equal(g, e), f"winograd: {what} differs"


@pytest.mark.parametrize("max_memory", [None, 4096])
def test_unpatching_compiles_to_one_graph_with_inductor_and_its_gradients(max_memory, device) -> None:
    # a transposed kernel tiling its stride: unfold's native 1-d calls, whole or in runs of input rows; the
    # inference form adds the bias in its copy eagerly (out= into a view), which inductor could not lower
    torch.manual_seed(0)
    module = Functional(convnd.conv_transpose, (4, 2, 2, 2, 2, 2), stride=2).to(device)
    x = torch.randn((1, 4, 3, 4, 3, 3), device=device)
    with convnd.strategy("unfold", max_memory=max_memory):
        with torch.no_grad():  # inductor: at float32 tolerance (module docstring)
            torch.testing.assert_close(torch.compile(module, fullgraph=True)(x), module(x), rtol=1e-5, atol=1e-5)
        expected = _forward_backward(module, x)
        got = _forward_backward(torch.compile(module, fullgraph=True, backend="aot_eager"), x)
    for what, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        assert torch.equal(g, e), f"un-patching: {what} differs"
