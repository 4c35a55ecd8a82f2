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
``m``; :func:`tile` picks ``m``. The transforms are passes of adds over input- and output-sized frames.
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


def terms(out: int) -> tuple[int, int]:
    """The input and output transforms' terms (nonzero coefficients) for an output of ``out`` frames."""
    input_transform, _, output_transform = TRANSFORMS[tile(out)]
    return sum(c != 0 for row in input_transform for c in row), sum(c != 0 for row in output_transform for c in row)


def winograd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """F(m, 3) along the first (the only lowered) dim of a batched input whose native dims are at the back.

    ``pieces`` > 1 runs the tiles in runs, each transforming only its own input frames and running its
    own ``m + 2`` native calls, so the buffers shrink by ``pieces``.

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
    input_transform, kernel_transform, output_transform = TRANSFORMS[m]
    taps = weight.unbind(2)
    kernels = [_combination([(c, t) for c, t in zip(g_row, taps) if c]) for g_row in kernel_transform]  # G w, once
    y = x.new_empty((x.shape[0], weight.shape[0], out, *inner.output_size(x.shape[3:])))
    for first, count in strategies.row_runs(math.ceil(out / m), pieces):
        started = [False] * m
        for i, (row, g) in enumerate(zip(input_transform, kernels)):
            u = _transformed(x, row, m, low, first, count)  # (B * T, C, *inner), the run's tiles in the batch
            products = lowering.native_lowered(u, g, None, inner)
            products = products.unflatten(0, (x.shape[0], count)).transpose(1, 2)  # (B, C_out, T, *inner_out)
            for r, coefficients in enumerate(output_transform):
                if coefficients[i]:  # output frame r of each tile (a fresh view: autograd rebases views written to)
                    frames = y[:, :, m * first + r : m * (first + count) : m]  # the last tile's may be fewer
                    _add_to(frames, products.narrow(2, 0, frames.shape[2]), coefficients[i], started[r])
                    started[r] = True
            del u, products  # one transformed frame set and its products at a time
    return lowering.add_bias(y, bias)


def _transformed(x: torch.Tensor, row: tuple[int, ...], m: int, low: int, first: int, count: int) -> torch.Tensor:
    """``sum_j row[j] * d_j`` over tiles ``first .. first + count - 1``, ``d_j`` of tile t being input frame
    ``m t + j - low`` (zero outside x): laid out (B, T, C, *inner) and flattened to (B * T, C, *inner), the
    tiles joining the native call's batch. No padded copy of x: each term adds over the tiles whose frame
    lies inside x, the first one zeroing the others."""
    u = x.new_empty((x.shape[0], count, x.shape[1], *x.shape[3:]))
    view = u.transpose(1, 2)  # (B, C, T, *inner)
    started = False
    for j, c in enumerate(row):
        if not c:
            continue
        # this term's tiles: those whose frame m t + j - low lies in [0, D), relative to the run
        lo = min(max(math.ceil((low - j) / m) - first, 0), count)
        hi = max(min((x.shape[2] - 1 + low - j) // m + 1 - first, count), lo)
        if not started:
            view[:, :, :lo].zero_()
            view[:, :, hi:].zero_()
        if hi > lo:
            start = m * (first + lo) + j - low
            _add_to(view[:, :, lo:hi], x[:, :, start : start + m * (hi - lo - 1) + 1 : m], c, started)
        started = True
    return u.flatten(0, 1)


def _combination(terms: list[tuple[Fraction | int, torch.Tensor]]) -> torch.Tensor:
    """``sum c * t`` over the (coefficient, kernel tap) pairs: one transformed tap of the kernel."""
    total = terms[0][1] * float(terms[0][0]) if terms[0][0] != 1 else terms[0][1]
    for c, t in terms[1:]:
        total = total + t * float(c)
    return total


def _add_to(dst: torch.Tensor, src: torch.Tensor, c: Fraction | int, started: bool) -> None:
    """``dst += c * src``, or ``dst = c * src`` for the first term (written in place: ``out=`` unless a gradient
    flows through it, which ``out=`` does not carry, or dynamo traces it, which takes no strided ``out=``)."""
    if started:
        dst.add_(src, alpha=float(c))
    elif lowering.out_allowed(src):
        torch.mul(src, float(c), out=dst)
    else:
        dst.copy_(src)
        if c != 1:
            dst.mul_(float(c))
