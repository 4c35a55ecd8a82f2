"""The ``winograd`` lowering: Winograd's minimal filtering F(m, 3) along the one lowered dim.

Along a lowered dim with a kernel of 3 (stride 1, dilation 1), the ``m`` output frames of tile
``t`` read the ``m + 2`` input frames ``d_j = x[m t + j - low]`` and take ``m + 2`` products
instead of ``3 m`` (Lavin & Gray, 2016, in one dim). For F(2, 3)::

    u0 = d0 - d2      u1 = d1 + d2      u2 = d2 - d1      u3 = d3 - d1
    g0 = w0           g1 = (w0 + w1 + w2) / 2           g2 = (w0 - w1 + w2) / 2      g3 = w2
    m_i = conv(u_i, g_i)           (one native r-d convolution over every tile's frame)
    y[2t] = m0 + m1 + m2           y[2t + 1] = m1 - m2 + m3

``w_k`` is the kernel's tap ``k`` along the lowered dim (an r-d kernel), ``conv`` the native
convolution over the other dims; in general ``u = B^T d``, ``g = G w``, ``y = A^T m`` with the
matrices of :data:`TRANSFORMS`. F(2, 3) does ``4 / 6`` of the direct multiply-adds, F(3, 3)
``5 / 9``, F(4, 3) ``6 / 12``, plus a partial last tile when the output length is not a multiple of
``m``; :func:`tile` picks ``m``. The transforms are small matrix products over each tile's frames.
Grouped and depthwise weights, bias and padding modes work as everywhere else; the native
dims keep any stride, dilation and padding.

Not bit-identical to direct summation: each output is another sum of the same products. The
error stays of the order of a direct sum's rounding: F(2, 3)'s transforms add at most three
terms with coefficients 1 and 1/2 (exact in binary); F(3, 3)'s and F(4, 3)'s up to five with
coefficients up to 8 and G's sixths, measured up to 3x fold's error in float32 (``tests/test_winograd.py`` bounds
both against the float64 reference).

Where F(m, 3) does not apply (several lowered dims, a kernel other than 3 or a stride or
dilation other than 1 along the lowered dim, a transposed convolution) a forced ``winograd``
runs :func:`convnd.strategies.fold`, and the cost model never picks it. In half precision
(:data:`DTYPES` excludes float16 and bfloat16) it runs ``fold`` too: the transforms would round
their sums to the operands' dtype where a native convolution accumulates in float32.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from . import lowering, strategies
from .caching import constant_tensors
from .padding import pad_nd
from .spec import ConvSpec

# m -> the interpolation points of F(m, 3) (and infinity): small integers, so that the transforms stay exact in
# binary but for G's divisions (by 2 for F(2, 3), 2 and 6 for F(3, 3), 4, 6 and 24 for F(4, 3))
POINTS = {2: (0, 1, -1), 3: (0, 1, -1, 2), 4: (0, 1, -1, 2, -2)}


def _toom_cook(m: int, points: tuple[int, ...]) -> tuple[tuple[tuple[Fraction, ...], ...], ...]:
    """(B^T, G, A^T) of F(m, 3) at ``points`` and infinity (the modified Toom-Cook construction).

    With ``M(x) = prod (x - p)``: row ``j`` of B^T holds the coefficients of ``M(x) / (x - p_j)`` and its
    last row those of ``M(x)``; G's row ``j`` is ``(1, p_j, p_j^2) / N_j`` with ``N_j = prod_{l != j}
    (p_j - p_l)`` (rows negated together where ``N_j < 0``) and its last row picks the last tap; A^T's
    row ``i`` is ``p_j^i`` with a 1 under infinity in the last row. ``tests/test_winograd.py`` checks
    ``A^T ((G g) * (B^T d))`` is the correlation of ``d`` with ``g`` exactly, in fractions.
    """
    window = m + 2
    input_rows, kernel_rows = [], []
    for j, p in enumerate(points):
        others = [q for i, q in enumerate(points) if i != j]
        norm = math.prod(p - q for q in others)
        sign = -1 if norm < 0 else 1
        input_rows.append(tuple(sign * c for c in _expand(others, window)))
        kernel_rows.append(tuple(Fraction(p**k, abs(norm)) for k in range(3)))
    input_rows.append(_expand(points, window))
    kernel_rows.append((Fraction(0), Fraction(0), Fraction(1)))
    output_rows = tuple((*(Fraction(p**i) for p in points), Fraction(i == m - 1)) for i in range(m))
    return tuple(input_rows), tuple(kernel_rows), output_rows


def _expand(roots: list[int] | tuple[int, ...], length: int) -> tuple[Fraction, ...]:
    """The coefficients (constant first) of ``prod (x - r)`` over ``roots``, zero-padded to ``length``."""
    coefficients = [Fraction(1)]
    for r in roots:
        shifted = [Fraction(0), *coefficients]  # x * poly
        coefficients = [a - r * b for a, b in zip(shifted, [*coefficients, Fraction(0)])]
    return tuple(coefficients) + (Fraction(0),) * (length - len(coefficients))


# m -> (B^T, G, A^T): the input transform (m + 2 rows of m + 2), the kernel transform (m + 2 rows of 3), the
# output transform (m rows of m + 2)
TRANSFORMS = {m: _toom_cook(m, points) for m, points in POINTS.items()}


DTYPES = (torch.float32, torch.float64)  # where the transforms' own roundings stay below a direct sum's order


def applies(spec: ConvSpec, rank: int) -> bool:
    """Whether F(m, 3) runs this convolution: one lowered dim, kernel 3, stride 1, dilation 1, not transposed."""
    return (
        spec.dims - rank == 1
        and not spec.transposed
        and spec.kernel[0] == 3
        and spec.stride[0] == 1
        and spec.dilation[0] == 1
    )


def tile(out: int) -> int:
    """Output frames per tile for an output of ``out`` frames: the m of fewest native products
    ``(m + 2) ceil(out / m)``, each m above 2 charged 5% more per frame for its longer transforms (9 frames:
    F(4, 3)'s 18 products ran level with F(2, 3)'s 20), the smaller m on a tie."""
    costs = [(m + 2) * math.ceil(out / m) * (1 + 0.05 * (m - 2)) for m in POINTS]
    return list(POINTS)[costs.index(min(costs))]


def winograd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """F(m, 3) along the first (the only lowered) dim of a batched input whose native dims are at the back.

    Both transforms are matrix products over frames: per tile, B^T against the tile's input frames
    (laid out frame-major once per run) and A^T against its ``m + 2`` products, one pass over their
    operands each, where adds (one pass per nonzero coefficient) read them ``m + 2`` times: measured
    1.1-1.6x faster on the bench's 4-d workloads. ``pieces`` > 1 runs the tiles in runs, each with its
    own frames, transformed frames and products, so the buffers shrink by ``pieces``.

    Shape:
        x: (B, C_in, D, *inner); weight: (C_out, C_in / groups, 3, *inner_k); result: (B, C_out, D_out, *inner_out).
    """
    if not applies(spec, rank) or x.dtype not in DTYPES:
        return strategies.fold(x, weight, bias, spec, rank)
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    inner = spec.select(range(1, spec.dims))
    low, high = spec.padding[0]
    out = x.shape[2] + low + high - 2
    m = tile(out)
    input_transform, kernel_transform, output_transform = constant_tensors(
        TRANSFORMS.__getitem__, (m,), x.dtype, x.device
    )
    # G w, once: (m + 2, C_out, C/G, *inner_k), one kernel per transformed frame set
    kernels = (kernel_transform @ weight.movedim(2, 0).flatten(1)).view((m + 2, *weight.shape[:2], *weight.shape[3:]))
    y = x.new_empty((x.shape[0], weight.shape[0], out, *inner.output_size(x.shape[3:])))
    # without a gradient or a trace, a run's transformed frames and products share one workspace, written in place
    lean = lowering.out_allowed(x, weight)
    per_in, per_out = x[:, :, 0].numel(), y[:, :, 0].numel()  # elements of one frame of the batch
    runs = strategies.row_runs(math.ceil(out / m), pieces)
    for first, count in runs:
        work = x.new_empty(((m + 2) * count * max(per_in, per_out),)) if lean else None
        scratch = y if lean and len(runs) == 1 else None  # the output is free until the products land in it
        u = _transformed(x, input_transform, (m, low, first, count), work, scratch)
        batch = (m + 2, count * x.shape[0], x.shape[1], *x.shape[3:])  # the tiles join the native calls' batch
        products = _products(u.view(batch), kernels, inner, count, per_out, work)
        del u, work
        for t in range(count):  # y[m t + r] = sum_i A^T[r, i] m_i[t]: the last tile may have fewer frames
            frames = y[:, :, m * (first + t) : m * (first + t + 1)]
            rows = output_transform[: frames.shape[2]] @ products[:, t]
            frames.copy_(rows.view((frames.shape[2], *frames.shape[:2], *frames.shape[3:])).movedim(0, 2))
        del products  # before the next run's buffers
    return lowering.add_bias(y, bias)


def _transformed(
    x: torch.Tensor,
    input_transform: torch.Tensor,
    tiles: tuple[int, int, int, int],
    work: torch.Tensor | None,
    scratch: torch.Tensor | None,
) -> torch.Tensor:
    """U = B^T d over tiles ``first .. first + count - 1`` (``tiles`` is ``(m, low, first, count)``):
    (m + 2, count, B * C * prod(inner)), row ``i`` of tile ``t`` being ``sum_j B^T[i, j] x[m t + j - low]``.

    Each tile's product takes only its frames inside x (no padded copy, and a non-finite input reaches
    only the tiles that read it). The run's frames are laid out frame-major once, in ``scratch``'s
    storage where it is large enough; with a ``work`` buffer the products are written into it in place."""
    m, low, first, count = tiles
    size = x.shape[2]
    lo = min(max(m * first - low, 0), size)
    hi = max(min(m * (first + count) + 2 - low, size), lo)
    per_frame = x[:, :, 0].numel()
    window = x[:, :, lo:hi].movedim(2, 0)  # (K, B, C, *inner): the frames the run's tiles read
    if scratch is not None and scratch.numel() >= window.numel():
        frames = scratch.view(-1)[: window.numel()].view(window.shape).copy_(window).view(hi - lo, per_frame)
    else:
        frames = window.reshape(hi - lo, per_frame)
    u = None if work is None else work[: (m + 2) * count * per_frame].view(m + 2, count, per_frame)
    columns = []
    for t in range(count):
        start = m * (first + t) - low  # the tile's frame j is start + j
        j0, j1 = min(max(lo - start, 0), m + 2), max(min(hi - start, m + 2), 0)
        if j1 <= j0:  # the tile reads only padding
            columns.append(x.new_zeros((m + 2, per_frame)) if u is None else u[:, t].zero_())
        elif u is None:
            columns.append(input_transform[:, j0:j1] @ frames[start + j0 - lo : start + j1 - lo])
        else:
            torch.mm(input_transform[:, j0:j1], frames[start + j0 - lo : start + j1 - lo], out=u[:, t])
    return torch.stack(columns, 1) if u is None else u


def _products(
    u: torch.Tensor, kernels: torch.Tensor, inner: ConvSpec, count: int, per_out: int, work: torch.Tensor | None
) -> torch.Tensor:
    """The native products ``m_i = conv(u_i, g_i)`` of transformed frame sets ``u`` ((m + 2, count * B, C,
    *inner)), as (m + 2, count, B * C_out * prod(inner_out)).

    With a ``work`` buffer (holding ``u`` at its start) each product overwrites frame sets already
    convolved: in ascending order where a product is no larger than a frame set, else descending."""
    sets = u.shape[0]
    if work is None:
        return torch.stack([lowering.native_lowered(u[i], kernels[i], None, inner) for i in range(sets)]).view(
            sets, count, per_out
        )
    products = work[: sets * count * per_out].view(sets, count, per_out)
    per_in = u[0].numel() // count
    for i in range(sets) if per_out <= per_in else reversed(range(sets)):
        products[i].copy_(lowering.native_lowered(u[i], kernels[i], None, inner).view(count, per_out))
    return products
