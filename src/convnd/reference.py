"""A direct-definition N-d convolution in NumPy float64: the tests' oracle.

Deliberately simple and independent of torch's convolutions: the forward pass is
a strided window view contracted with the kernel by einsum; the transposed pass
is its definition as a scatter, one kernel tap at a time. Complex inputs are
computed in complex128 (products are plain, never conjugated, as in torch).

Layouts and true convolution are separate small helpers, so each stays obviously
correct: :func:`to_canonical` / :func:`from_canonical` move axes with NumPy's
``transpose`` and :func:`flip_kernel` flips with ``np.flip``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

_NUMPY_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _as_array(a: object) -> np.ndarray:
    """float64 (or complex128) NumPy copy of an array or tensor."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().resolve_conj().numpy()
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def conv(
    x: object,
    w: object,
    b: object = None,
    stride: Sequence[int] | None = None,
    padding: Sequence[tuple[int, int]] | None = None,
    dilation: Sequence[int] | None = None,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> np.ndarray:
    """Cross-correlation of a batched input (B, C_in, *S) with a weight (C_out, C_in/groups, *K).

    Args:
        stride, dilation: one int per spatial dim (default 1).
        padding: one (low, high) pair per spatial dim (default none).
        padding_mode: zeros, reflect, replicate or circular.
    """
    x, w = _as_array(x), _as_array(w)
    n = w.ndim - 2
    stride = tuple(stride or (1,) * n)
    dilation = tuple(dilation or (1,) * n)
    padding = tuple(padding or ((0, 0),) * n)
    x = np.pad(x, ((0, 0), (0, 0), *padding), mode=_NUMPY_MODES[padding_mode])
    kernel = w.shape[2:]
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    # windows: (B, C, *out_positions, *window_extent), then keep every dilation-th tap and stride-th position
    win = np.lib.stride_tricks.sliding_window_view(x, extent, axis=tuple(range(2, 2 + n)))
    win = win[
        (slice(None), slice(None), *(slice(None, None, s) for s in stride), *(slice(None, None, d) for d in dilation))
    ]
    batch, channels = x.shape[:2]
    out = win.shape[2 : 2 + n]
    win = win.reshape(batch, groups, channels // groups, *out, *kernel)
    wg = w.reshape(groups, w.shape[0] // groups, w.shape[1], *kernel)
    o, k = string.ascii_uppercase[:n], string.ascii_uppercase[n : 2 * n]  # lower case is taken by z, g, c, o
    y = np.einsum(f"zgc{o}{k},goc{k}->zgo{o}", win, wg).reshape(batch, w.shape[0], *out)
    if b is not None:
        y = y + _as_array(b).reshape(-1, *(1,) * n)
    return y


def conv_transpose(
    x: object,
    w: object,
    b: object = None,
    stride: Sequence[int] | None = None,
    padding: Sequence[int] | None = None,
    output_padding: Sequence[int] | None = None,
    groups: int = 1,
    dilation: Sequence[int] | None = None,
) -> np.ndarray:
    """Transposed convolution of (B, C_in, *S) with a weight (C_in, C_out/groups, *K), by definition.

    Input position i with kernel tap t adds ``x[i] * w[t]`` to output position
    ``i * stride + t * dilation - padding``; positions outside the output are dropped.
    """
    x, w = _as_array(x), _as_array(w)
    n = w.ndim - 2
    stride = tuple(stride or (1,) * n)
    dilation = tuple(dilation or (1,) * n)
    padding = tuple(padding or (0,) * n)
    output_padding = tuple(output_padding or (0,) * n)
    batch, cin = x.shape[:2]
    kernel = w.shape[2:]
    cout_g = w.shape[1]
    full = [
        (s_ - 1) * st + d * (k - 1) + 1 + op
        for s_, st, d, k, op in zip(x.shape[2:], stride, dilation, kernel, output_padding)
    ]
    y = np.zeros((batch, groups, cout_g, *full), dtype=np.result_type(x, w))
    xg = x.reshape(batch, groups, cin // groups, *x.shape[2:])
    wg = w.reshape(groups, cin // groups, cout_g, *kernel)
    for tap in np.ndindex(*kernel):
        # every input position of this tap, at once: (B, G, C_out/G, *S)
        contribution = np.einsum("zgc...,gco->zgo...", xg, wg[(slice(None), slice(None), slice(None), *tap)])
        where = tuple(
            slice(t * d, t * d + (s_ - 1) * st + 1, st) for t, d, s_, st in zip(tap, dilation, x.shape[2:], stride)
        )
        y[(slice(None), slice(None), slice(None), *where)] += contribution
    crop = tuple(slice(p, f - p) for p, f in zip(padding, full))
    y = y[(slice(None), slice(None), slice(None), *crop)].reshape(
        batch, groups * cout_g, *[f - 2 * p for f, p in zip(full, padding)]
    )
    if b is not None:
        y = y + _as_array(b).reshape(-1, *(1,) * n)
    return y


def to_canonical(x: object, channel_dim: int, spatial_dims: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """An input of any layout as (B, C, *S) plus the sizes of its batch axes (in axis order).

    Args:
        channel_dim: the channel axis; spatial_dims: the spatial axes, in kernel order
            (negative axes count from the end). Every other axis is a batch axis.
    """
    x = _as_array(x)
    channel, spatial = channel_dim % x.ndim, [a % x.ndim for a in spatial_dims]
    batch = [a for a in range(x.ndim) if a != channel and a not in spatial]
    moved = np.transpose(x, [*batch, channel, *spatial])
    batch_shape = moved.shape[: len(batch)]
    return moved.reshape(-1, *moved.shape[len(batch) :]), batch_shape


def from_canonical(
    y: np.ndarray, batch_shape: Sequence[int], channel_dim: int, spatial_dims: Sequence[int]
) -> np.ndarray:
    """A (B, C, *S) result moved back to the layout :func:`to_canonical` took it from."""
    ndim = len(batch_shape) + 1 + len(spatial_dims)
    channel, spatial = channel_dim % ndim, [a % ndim for a in spatial_dims]
    batch = [a for a in range(ndim) if a != channel and a not in spatial]
    y = y.reshape(*batch_shape, *y.shape[1:])
    return np.transpose(y, np.argsort([*batch, channel, *spatial]))


def flip_kernel(w: object) -> np.ndarray:
    """The weight flipped over its spatial dims: true convolution from cross-correlation."""
    w = _as_array(w)
    return np.flip(w, axis=tuple(range(2, w.ndim)))
