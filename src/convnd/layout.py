"""Where the batch, channel and spatial axes of an input are: layout as data, resolved once.

A :class:`Layout` names the input's channel axis, its spatial axes (in the order
of the kernel's dims) and its batch axes (every other axis, zero or more), as
JAX's dimension numbers do. The convolution itself only ever runs in one
canonical order, (B, C, *spatial): a layout moves an input there and moves the
result back, so the output keeps the input's axis positions.

Copies: moving axes is a ``permute`` (a view, no copy). Several batch axes are
flattened into one by a view when their strides allow it; otherwise that flatten
is the one copy of the input (into contiguous (B, C, *spatial) order, so a native
N <= 3 kernel needs no copy of its own). A permuted view whose memory is
channels-last (e.g. a (B, H, W, C) input) is torch's ``channels_last`` memory format,
which the native 2-d/3-d kernels read directly: no copy at all. Other strided views
are copied once, by the native kernel itself. Moving the result back is a view too.
Past N = 3 the planner's own strategies copy what they copy for torch's layout too;
the layout adds nothing unless the batch axes cannot merge (see tests/test_layout.py,
which measures this with torch's memory profiler).

With the default keywords (``channel_dim=1, spatial_dims=None``) the layout is
torch's own, (B, C, *spatial) or unbatched (C, *spatial), and the tensors pass
through untouched, so results stay bit-identical to torch.nn.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .caching import trace_safe_cache
from .errors import fail
from .spec import is_int

DEFAULT_CHANNEL_DIM = 1


@dataclass(frozen=True)
class Layout:
    """The axes of an input of ``ndim`` dims, all non-negative.

    Attributes:
        ndim: the input's number of dims.
        channel: the channel axis.
        spatial: the spatial axes, in the order of the kernel's dims.
        batch: every other axis, in increasing order (may be empty).
        torch_layout: True for torch's own (B, C, *spatial) or (C, *spatial) layout,
            which passes through without any movement.
    """

    ndim: int
    channel: int
    spatial: tuple[int, ...]
    batch: tuple[int, ...]
    torch_layout: bool = False

    @property
    def order(self) -> tuple[int, ...]:
        """The input's axes in canonical order: batch axes, channel, spatial axes."""
        return (*self.batch, self.channel, *self.spatial)

    def spatial_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial sizes of a tensor of this layout, in kernel order."""
        return tuple(shape[a] for a in self.spatial)

    def names(self) -> tuple[str, ...]:
        """A name per input axis: ``B`` (``B0``, ``B1``... when several), ``C``, ``S0``, ``S1``..."""
        names = [""] * self.ndim
        for i, axis in enumerate(self.batch):
            names[axis] = "B" if len(self.batch) == 1 else f"B{i}"
        names[self.channel] = "C"
        for i, axis in enumerate(self.spatial):
            names[axis] = f"S{i}"
        return tuple(names)

    def describe(self) -> str:
        """One line saying which axis is which and how the input reaches (B, C, *spatial).

        Example:
            >>> resolve_layout(6, 4, channel_dim=-1).describe()
            'input (B, S0, S1, S2, S3, C) -> (B, C, S0, S1, S2, S3) by a permuted view, output in the input layout'
        """
        names = self.names()
        given = "(" + ", ".join(names) + ")"
        if self.torch_layout:
            return f"input {given}: torch's layout, passed to the kernels unchanged"
        batch = "B" if self.batch else "1"
        canonical = "(" + ", ".join((batch, "C", *(names[a] for a in self.spatial))) + ")"
        how = "a permuted view" if len(self.batch) <= 1 else "a permuted view, batch axes flattened"
        return f"input {given} -> {canonical} by {how}, output in the input layout"

    def to_canonical(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as (B, C, *spatial): a view, except when several batch axes cannot merge (one copy).

        Torch's own layout is returned as it is (unbatched included).
        """
        if self.torch_layout:
            return x
        moved = x.permute(self.order)
        if not self.batch:
            return moved.unsqueeze(0)
        # flatten is a view when the batch axes' strides allow it, else one contiguous copy
        return moved.flatten(0, len(self.batch) - 1)

    def from_canonical(self, y: torch.Tensor, input_shape: Sequence[int]) -> torch.Tensor:
        """The (B, C_out, *out) result moved back to the input's axis positions, as a view."""
        if self.torch_layout:
            return y
        batch = tuple(input_shape[a] for a in self.batch)
        y = y.reshape(batch + tuple(y.shape[1:]))  # unflattening a leading dim is always a view
        return y.permute(_inverse(self.order))


def _inverse(order: Sequence[int]) -> tuple[int, ...]:
    inverse = [0] * len(order)
    for position, axis in enumerate(order):
        inverse[axis] = position
    return tuple(inverse)


def resolve_layout(ndim: int, dims: int, channel_dim: Any = DEFAULT_CHANNEL_DIM, spatial_dims: Any = None) -> Layout:
    """Validate the layout keywords for an input of ``ndim`` dims and a ``dims``-d kernel.

    Args:
        ndim: the input's number of dims.
        dims: the convolution's number of spatial dims N.
        channel_dim: the channel axis (negative counts from the end).
        spatial_dims: N axes, in the order of the kernel's dims; default: the N
            trailing axes other than the channel axis.

    With the defaults the layout is torch's: an input of N + 1 dims is unbatched
    (C, *spatial), one of N + 2 dims is (B, C, *spatial); other ranks are left to
    the operand checks to reject, as torch does. Any other keyword value makes every
    axis that is neither channel nor spatial a batch axis.

    Example:
        >>> resolve_layout(6, 4, channel_dim=-1).spatial
        (1, 2, 3, 4)
    """
    channel_dim, spatial_dims = check_keywords(dims, channel_dim, spatial_dims)  # plain ints: safe cache keys
    return _resolve(ndim, dims, channel_dim, spatial_dims)


@trace_safe_cache(maxsize=256)
def _resolve(ndim: int, dims: int, channel_dim: int, spatial_dims: tuple[int, ...] | None) -> Layout:
    if channel_dim == DEFAULT_CHANNEL_DIM and spatial_dims is None:
        return _torch_layout(ndim, dims)
    channel = _axis("channel_dim", channel_dim, channel_dim, ndim)
    if spatial_dims is None:
        spatial = tuple(a for a in range(ndim) if a != channel)[-dims:] if ndim > dims else ()
        if len(spatial) != dims:
            fail(
                "channel_dim",
                channel_dim,
                f"an axis of an input with at least {dims + 1} dims",
                reason=f"the input has {ndim} dims, too few for a channel and {dims} spatial dims",
            )
        return _layout(ndim, channel, spatial)
    spatial = tuple(_axis("spatial_dims", a, spatial_dims, ndim) for a in spatial_dims)
    for i, axis in enumerate(spatial):
        if axis in spatial[:i]:
            first = spatial_dims[spatial.index(axis)]
            fail(
                "spatial_dims",
                spatial_dims,
                "distinct axes",
                reason=f"{first} and {spatial_dims[i]} are both axis {axis} of an input with {ndim} dims",
            )
        if axis == channel:
            fail(
                "spatial_dims",
                spatial_dims,
                "axes other than the channel axis",
                reason=f"axis {axis} is also channel_dim={channel_dim}",
            )
    return _layout(ndim, channel, spatial)


def _torch_layout(ndim: int, dims: int) -> Layout:
    """torch's (C, *spatial) or (B, C, *spatial); other ranks are rejected later by the operand checks."""
    if ndim == dims + 1:
        return Layout(ndim, 0, tuple(range(1, ndim)), (), torch_layout=True)
    return Layout(ndim, 1, tuple(range(2, ndim)), (0,) if ndim else (), torch_layout=True)


def _layout(ndim: int, channel: int, spatial: tuple[int, ...]) -> Layout:
    taken = {channel, *spatial}
    return Layout(ndim, channel, spatial, tuple(a for a in range(ndim) if a not in taken))


def _axis(name: str, axis: int, shown: Any, ndim: int) -> int:
    """One axis as a non-negative int; ``shown`` is what the error message quotes."""
    if not -ndim <= axis < ndim:
        where = "axes" if name == "spatial_dims" else "an axis"
        fail(name, shown, f"{where} in [-{ndim}, {ndim})", reason=f"the input has {ndim} dims")
    return axis % ndim


def check_keywords(dims: int, channel_dim: Any, spatial_dims: Any) -> tuple[int, tuple[int, ...] | None]:
    """The layout keywords, checked as far as they can be without an input (modules do it at construction).

    Returns:
        channel_dim as an int and spatial_dims as a tuple (or None); axis ranges are
        checked against each input by :func:`resolve_layout`.
    """
    if not is_int(channel_dim):
        fail("channel_dim", channel_dim, "an int axis", kind="type")
    if spatial_dims is None:
        return operator.index(channel_dim), None
    expected = f"a tuple of {dims} distinct axes of the input (one per spatial dim of the kernel), or None"
    if isinstance(spatial_dims, (str, bytes)) or not isinstance(spatial_dims, Sequence):
        fail("spatial_dims", spatial_dims, expected, kind="type")
    spatial_dims = tuple(spatial_dims)
    if len(spatial_dims) != dims:
        fail("spatial_dims", spatial_dims, expected, reason=f"the weight has {dims} spatial dims")
    if not all(is_int(a) for a in spatial_dims):
        fail("spatial_dims", spatial_dims, "a tuple of int axes, or None", kind="type")
    return operator.index(channel_dim), tuple(operator.index(a) for a in spatial_dims)
