"""The ``winograd`` lowering: Winograd's minimal filtering F(2, 3) along the one lowered dim.

Along a lowered dim with a kernel of 3 (stride 1, dilation 1), the two output frames
``y[2t]`` and ``y[2t + 1]`` of tile ``t`` read the four input frames ``d_j = x[2t + j - low]``,
``j = 0..3``, and take four products instead of six (Lavin & Gray, 2016, in one dim)::

    u0 = d0 - d2      u1 = d1 + d2      u2 = d2 - d1      u3 = d1 - d3
    g0 = w0           g1 = (w0 + w1 + w2) / 2           g2 = (w0 - w1 + w2) / 2      g3 = w2
    m_i = conv(u_i, g_i)           (one native r-d convolution over every tile's frame)
    y[2t] = m0 + m1 + m2           y[2t + 1] = m1 - m2 - m3

``w_k`` is the kernel's tap ``k`` along the lowered dim (an r-d kernel) and ``conv`` the native
convolution over the other dims, so the four native calls do ``4 / 6`` of the multiply-adds
of the three taps over every output frame (plus one tile's worth when the output length is
odd). The transforms are additions over input- and output-sized frames. Grouped and
depthwise weights, bias and padding modes work as everywhere else; the other dims keep any
stride, dilation and padding.

Not bit-identical to direct summation: each output is a different sum of the same products
(the ``/ 2`` is exact in binary). Its error is of the order of a direct sum's rounding: the
input transform adds two inputs, the weight transform three taps, the output transform three
products, so each term of the result passes through at most four more roundings than in a
direct sum (``tests/test_winograd.py`` bounds it against the float64 reference).

Where F(2, 3) does not apply (several lowered dims, a kernel other than 3 or a stride or
dilation other than 1 along the lowered dim, a transposed convolution) a forced ``winograd``
runs :func:`convnd.strategies.fold`, and the cost model never picks it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import lowering, strategies
from .padding import pad_nd
from .spec import ConvSpec

# u_i = d_a + sign * d_b (the input transform, B^T of F(2, 3))
INPUT_TRANSFORM = ((0, 2, -1), (1, 2, 1), (2, 1, -1), (1, 3, -1))
# the output transform (A^T of F(2, 3)): for output frame r of a tile, the sign of each m_i (0: not used)
OUTPUT_TRANSFORM = ((1, 1, 1, 0), (0, 1, -1, -1))
TILE = 2  # output frames per tile
WINDOW = 4  # input frames per tile


def applies(spec: ConvSpec, rank: int) -> bool:
    """Whether F(2, 3) runs this convolution: one lowered dim, kernel 3, stride 1, dilation 1, not transposed."""
    return (
        spec.dims - rank == 1
        and not spec.transposed
        and spec.kernel[0] == 3
        and spec.stride[0] == 1
        and spec.dilation[0] == 1
    )


def winograd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """F(2, 3) along the first (the only lowered) dim of a batched input whose native dims are at the back.

    ``pieces`` > 1 runs the tiles in runs, each reading only its own input frames (two frames of
    halo) and running its own four native calls, so the buffers shrink by ``pieces``.

    Shape:
        x: (B, C_in, D, *inner); weight: (C_out, C_in / groups, 3, *inner_k); result: (B, C_out, D_out, *inner_out).
    """
    if not applies(spec, rank):
        return strategies.fold(x, weight, bias, spec, rank)
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    inner = spec.select(range(1, spec.dims))
    (low, high), size = spec.padding[0], x.shape[2]
    out = size + low + high - 2
    taps = _kernel_transform(weight)
    y = x.new_empty((x.shape[0], weight.shape[0], out, *inner.output_size(x.shape[3:])))
    for first, count in strategies._row_runs(math.ceil(out / TILE), pieces):
        # input frames start.. of these tiles, zero outside x: a view of x unless the run reaches the padding
        start = TILE * first - low
        stop = start + TILE * count + WINDOW - TILE
        slab = _frames(x, start, stop)
        frames = [slab[:, :, j : j + TILE * count : TILE] for j in range(WINDOW)]  # d_j of each tile: (B, C, T, ..)
        started = [False] * TILE
        for (a, b, sign), g, signs in zip(INPUT_TRANSFORM, taps, zip(*OUTPUT_TRANSFORM)):
            u = _transformed(frames[a], frames[b], sign)  # (B * T, C, *inner), tiles in the batch
            m = lowering.native_lowered(u, g, None, inner)
            m = m.unflatten(0, (x.shape[0], count)).transpose(1, 2)  # (B, C_out, T, *inner_out), a view
            for r, s in enumerate(signs):
                if s:  # output frame r of each tile (a fresh view each time: autograd rebases views written in place)
                    row = y[:, :, TILE * first + r : TILE * (first + count) : TILE]
                    _accumulate(row, m.narrow(2, 0, row.shape[2]), s, started[r])  # an odd length's last tile: one
                    started[r] = True
            del u, m  # one transformed frame set and its products at a time
    if bias is not None:
        y = y.add_(bias.reshape((-1,) + (1,) * spec.dims))  # in place: y is this call's own buffer
    return y


def _frames(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Frames ``start .. stop - 1`` of x's first spatial dim, zeros where they lie outside it."""
    size = x.shape[2]
    inside = x.narrow(2, min(max(start, 0), size), max(min(stop, size) - max(start, 0), 0))
    before, after = max(-start, 0), max(stop - size, 0)
    if before == after == 0:
        return inside
    return F.pad(inside, (0, 0) * (x.dim() - 3) + (before, after))  # F.pad lists the last dim first


def _kernel_transform(weight: torch.Tensor) -> list[torch.Tensor]:
    """g_0..g_3 (G of F(2, 3)) from the three taps along the lowered dim: (C_out, C_in / groups, *inner_k) each."""
    w0, w1, w2 = weight.unbind(2)
    outer = w0 + w2
    return [w0, (outer + w1) * 0.5, (outer - w1) * 0.5, w2]


def _transformed(a: torch.Tensor, b: torch.Tensor, sign: int) -> torch.Tensor:
    """``a + sign * b`` for frames (B, C, T, *inner), laid out (B, T, C, *inner) and flattened to (B * T, C, *inner):
    the tiles join the batch of the native call. Written in that layout directly (``out=``) unless a
    gradient flows through it (``out=`` is not differentiable; then a copy, then an in-place add)."""
    shape = (a.shape[0], a.shape[2], a.shape[1], *a.shape[3:])
    u = a.new_empty(shape)
    view = u.transpose(1, 2)
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        view.copy_(a)
        view.add_(b, alpha=sign)
    else:
        torch.add(a, b, alpha=sign, out=view)
    return u.flatten(0, 1)


def _accumulate(row: torch.Tensor, m: torch.Tensor, sign: int, started: bool) -> None:
    """``row += sign * m``, or ``row = sign * m`` for the first term of this output frame."""
    if started:
        row.add_(m, alpha=sign)
    elif sign > 0:
        row.copy_(m)
    else:
        row.copy_(m).neg_()
