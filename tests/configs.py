"""Hypothesis strategies for random convolution configurations, shared by the test modules.

A config is every argument of ``convnd.conv`` plus the shapes of its operands, drawn so that
the convolution is valid (sizes fit the dilated kernel and each padding mode's limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

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
