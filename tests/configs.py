"""Hypothesis strategies for random convolution configurations, and operands with their float64 oracle, shared by
the test modules.

A config is every argument of ``convnd.conv`` plus the shapes of its operands, drawn so that
the convolution is valid (sizes fit the dilated kernel and each padding mode's limits); a
transposed case likewise for ``convnd.conv_transpose`` (output_padding, cropping padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

import convnd
from convnd import lowering, reference
from convnd.spec import make_spec

MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class Config:
    """One valid convolution: operand shapes and the keyword arguments of ``convnd.conv``."""

    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    bias: bool
    kwargs: dict[str, Any]
    pairs: tuple[tuple[int, int], ...]

    @property
    def batched(self) -> bool:
        return len(self.input_shape) == len(self.weight_shape)

    def tensors(self, dtype: torch.dtype = torch.float64, device: Any = "cpu", seed: int = 0) -> tuple:
        """Random (input, weight, bias) for this config."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.input_shape, generator=g, dtype=torch.float64)
        w = torch.randn(self.weight_shape, generator=g, dtype=torch.float64)
        b = torch.randn(self.weight_shape[0], generator=g, dtype=torch.float64) if self.bias else None
        return tuple(None if t is None else t.to(dtype=dtype, device=device) for t in (x, w, b))


def per_dim(dims: int, low: int, high: int) -> st.SearchStrategy[tuple[int, ...]]:
    """One int in [low, high] per spatial dim."""
    return st.tuples(*(st.integers(low, high) for _ in range(dims)))


def _padding_form(draw: Any, dims: int, stride: tuple[int, ...], torch_forms: bool) -> Any:
    """Draw one padding argument; ``torch_forms`` keeps to what torch itself accepts."""
    forms = ["int", "tuple", "valid"]
    if all(s == 1 for s in stride):
        forms.append("same")
    if not torch_forms:
        forms += ["pairs", "mix"]
    form = draw(st.sampled_from(forms))
    small = st.integers(0, 2)
    if form == "int":
        return draw(small)
    if form == "tuple":
        return tuple(draw(small) for _ in range(dims))
    if form == "pairs":
        return tuple((draw(small), draw(small)) for _ in range(dims))
    if form == "mix":
        return tuple(draw(st.one_of(small, st.tuples(small, small))) for _ in range(dims))
    return form


def _size_for(mode: str, window: int, lo: int, hi: int, extra: int) -> int:
    """The smallest valid input size for one dim, plus ``extra``."""
    least = max(1, window - lo - hi)
    if mode == "reflect":
        least = max(least, max(lo, hi) + 1)
    if mode == "circular":
        least = max(least, lo, hi)
    return least + extra


@st.composite
def configs(
    draw: Any,
    dims: int | None = None,
    modes: tuple[str, ...] = MODES,
    torch_forms: bool = False,
    max_extra: int = 3,
) -> Config:
    """A valid random convolution of rank ``dims`` (None: 1, 2 or 3)."""
    n = dims if dims is not None else draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(n))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    padding = _padding_form(draw, n, stride, torch_forms)
    mode = draw(st.sampled_from(modes))
    groups = draw(st.integers(1, 2))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    spec = make_spec(kernel, stride, padding, dilation, groups, mode)
    size = tuple(
        _size_for(mode, w, lo, hi, draw(st.integers(0, max_extra))) for w, (lo, hi) in zip(spec.window, spec.padding)
    )
    batch = draw(st.sampled_from([None, 1, 2]))
    input_shape = (cin, *size) if batch is None else (batch, cin, *size)
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "padding_mode": mode}
    return Config(input_shape, (cout, cin // groups, *kernel), draw(st.booleans()), kwargs, spec.padding)


@dataclass(frozen=True)
class TransposedCase:
    """One random transposed convolution and the input size it runs on."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    batch: int | None  # None: unbatched input
    bias: bool

    @property
    def dims(self) -> int:
        return len(self.kernel)

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments after (input, weight, bias), in conv_transpose's order."""
        return self.stride, self.padding, self.output_padding, self.groups, self.dilation

    def operands(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        shape = (self.in_channels, *self.size) if self.batch is None else (self.batch, self.in_channels, *self.size)
        x = torch.randn(shape, dtype=dtype, device=device)
        w = torch.randn(self.in_channels, self.out_channels // self.groups, *self.kernel, dtype=dtype, device=device)
        b = torch.randn(self.out_channels, dtype=dtype, device=device) if self.bias else None
        return x, w, b


@st.composite
def transposed_cases(
    draw: Any, dims: st.SearchStrategy[int], max_kernel: int = 3, extra_padding: int = 0
) -> TransposedCase:
    """A random transposed convolution; padding goes up to dilation * (kernel - 1) + extra_padding."""
    n = draw(dims)
    big = n > 3  # keep N > 3 small: the reference loops over every kernel tap
    ints = st.integers
    kernel = tuple(draw(ints(1, 2 if big else max_kernel)) for _ in range(n))
    stride = tuple(draw(ints(1, 3)) for _ in range(n))
    dilation = tuple(draw(ints(1, 3)) for _ in range(n))
    padding = tuple(draw(ints(0, d * (k - 1) + extra_padding)) for k, d in zip(kernel, dilation))
    output_padding = tuple(draw(ints(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = []
    for k, s, d, p, op in zip(kernel, stride, dilation, padding, output_padding):
        # the smallest input whose output, (L - 1) * s - 2p + d * (k - 1) + op + 1, is not empty
        deficit = 2 * p - d * (k - 1) - op
        smallest = 1 + max(0, math.ceil(deficit / s))
        size.append(draw(ints(smallest, smallest + (1 if big else 3))))
    groups = draw(st.sampled_from((1, 2)))
    return TransposedCase(
        kernel=kernel,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        in_channels=groups * draw(ints(1, 2)),
        out_channels=groups * draw(ints(1, 2)),
        size=tuple(size),
        batch=draw(st.sampled_from((None, 1, 2))),
        bias=draw(st.booleans()),
    )


def batched(x: torch.Tensor, case: TransposedCase) -> torch.Tensor:
    """The input as the reference takes it: with a batch dim."""
    return x if case.batch is not None else x.unsqueeze(0)


def seeded(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An input, a weight and a bias (``w_shape[0]`` channels) of these shapes from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    x, w = torch.randn(x_shape, generator=gen, dtype=dtype), torch.randn(w_shape, generator=gen, dtype=dtype)
    return x, w, torch.randn(w_shape[0], generator=gen, dtype=dtype)


def spec_of(w_shape: tuple[int, ...], kw: dict[str, Any]):
    """The spec of ``convnd.conv(x, w, **kw)`` for a weight of ``w_shape`` (stride, padding, dilation, groups,
    padding_mode)."""
    return make_spec(tuple(w_shape[2:]), kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                     kw.get("groups", 1), kw.get("padding_mode", "zeros"))  # fmt: skip


def oracle(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, kw: dict[str, Any]) -> np.ndarray:
    """``convnd.reference.conv`` with ``convnd.conv(x, w, b, **kw)``'s arguments."""
    spec = spec_of(tuple(w.shape), kw)
    return reference.conv(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups, spec.padding_mode)


FIRST_LOWERED = (1, 2, 3)  # a 4-d case's native dims when its first dim is the lowered one


def forced_exact(
    name: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    kw: dict[str, Any],
    max_memory: int | None,
    monkeypatch: Any,
    record: Any,
) -> list[Any]:
    """Run strategy ``name`` forced over the first dim of a 4-d case (``max_memory`` its budget) on seeded float64
    operands, assert the result equals the reference to 1e-10, and return ``record(*arguments)`` of each native
    call the run made (in order)."""
    calls: list[Any] = []
    native = lowering.native
    monkeypatch.setattr(lowering, "native", lambda *a: calls.append(record(*a)) or native(*a))
    x, w, b = seeded(x_shape, w_shape)
    with convnd.strategy(name, native_axes=FIRST_LOWERED, max_memory=max_memory):
        y = convnd.conv(x, w, b, **kw)
    np.testing.assert_allclose(y.numpy(), oracle(x, w, b, kw), rtol=0, atol=1e-10)
    return calls
