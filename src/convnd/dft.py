"""The ``dft`` lowering: a discrete Fourier transform along the one lowered dim, native convolutions per frequency.

Along a lowered dim of ``n`` input frames, a kernel of ``r`` taps (dilation ``d``, stride 1) and
``out`` output frames, the correlation ``y[o] = sum_t w[t] x[o + t d - low]`` is a circular one of
any length ``L >= n + low + high`` (no tap then reaches around the circle). The DFT of length ``L``
turns it into one product per frequency ``k``::

    X_k = sum_i x_i e^(-2 pi i k (i + low) / L)        W_k = sum_t w_t e^(+2 pi i k t d / L)
    Y_k = X_k W_k   (a native r-d convolution over the other dims, channels mixed as a complex product)
    y_o = (1 / L) sum_k Y_k e^(2 pi i k o / L)

Real signals need only the frequencies ``0 .. L / 2`` (``L`` is made even); each complex product is
one real convolution of twice the channels, ``[Re; Im] -> [Re; Im]`` with the weight ``[[Wr, -Wi],
[Wi, Wr]]``, and the two real frequencies ``0`` and ``L / 2`` share one such group (weight
``[[W_0, 0], [0, W_{L/2}]]``). All ``L / 2`` groups run as **one** grouped native call, so the
lowered dim costs ``2 L`` single-frame products against ``r * out`` for a direct sum: a 7-wide
kernel over 12 output frames (``L = 18``) does 36 where the direct sum does 84, and oneDNN sees
twice the channels per group. The transforms are small real matrices (:func:`transforms`) applied
as matrix products over the frames; zero padding is folded into their phases, never copied.

It is Winograd's construction (:mod:`convnd.winograd`) at the roots of unity: those points keep
the transforms' coefficients at most 1 in magnitude, so unlike F(m, r) with integer points it stays
accurate for wide kernels; a sum over ``L`` frequencies rounds like a direct sum of that length
(``tests/test_dft.py`` bounds it against the float64 reference).

``pieces`` > 1 runs the frequency groups in runs, each transforming the input for its own
frequencies and adding its share of the inverse transform into the output. Where it does not apply
(several lowered dims, a stride along the lowered dim, a transposed convolution) or in a dtype
outside :data:`DTYPES` (complex and half precision) a forced ``dft`` runs :func:`convnd.strategies.fold`,
and the cost model never picks it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from . import lowering, strategies
from .caching import constant_tensors, trace_safe_cache
from .padding import pad_nd
from .spec import ConvSpec

DTYPES = (torch.float32, torch.float64)  # real: each complex product is a real block; half would round the transforms


def applies(spec: ConvSpec, rank: int) -> bool:
    """Whether the DFT runs this convolution: one lowered dim, stride 1 along it, not transposed."""
    return spec.dims - rank == 1 and not spec.transposed and spec.stride[0] == 1


def length(size: int, low: int, high: int) -> int:
    """The transform length for ``size`` input frames padded by ``low`` and ``high``: the padded length (every
    output then reads its taps without wrapping around), made even so the frequencies pair into groups."""
    padded = size + low + high
    return padded + padded % 2


def groups(size: int, low: int, high: int) -> int:
    """The frequency groups (native convolution groups per convolution group): ``L / 2``."""
    return length(size, low, high) // 2


@trace_safe_cache(maxsize=256)
def transforms(
    size: int, low: int, high: int, kernel: int, dilation: int
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The real transforms (flattened, row-major, float64 values) for ``size`` input frames padded by
    ``(low, high)`` and a kernel of ``kernel`` taps dilated by ``dilation``, with ``G = L / 2`` groups:

    - input ``(G, 2, size)``: group ``j``'s two channel halves from the input frames (``[Re X_j; Im X_j]``, and
      ``[X_0; X_{L/2}]`` for group 0);
    - kernel ``(G, 2, 2, kernel)``: the 2 x 2 block of each group's weight from the kernel's taps;
    - output ``(out, G, 2)``: each output frame from the groups' two halves (the inverse, scaled by ``1 / L``).
    """
    n = length(size, low, high)
    out = size + low + high - dilation * (kernel - 1)
    half = n // 2
    angle = 2 * math.pi / n
    input_rows, kernel_rows, output_rows = [], [], []
    for j in range(half):
        if j == 0:  # the two real frequencies, 0 and L / 2, share group 0
            input_rows += [1.0] * size + [(-1.0) ** (i + low) for i in range(size)]
            taps = [[1.0] * kernel, [0.0] * kernel, [0.0] * kernel, [(-1.0) ** (t * dilation) for t in range(kernel)]]
            kernel_rows += [c for row in taps for c in row]
            continue
        input_rows += [math.cos(angle * j * (i + low)) for i in range(size)]
        input_rows += [-math.sin(angle * j * (i + low)) for i in range(size)]
        cos = [math.cos(angle * j * t * dilation) for t in range(kernel)]
        sin = [math.sin(angle * j * t * dilation) for t in range(kernel)]
        kernel_rows += cos + [-s for s in sin] + sin + cos  # [[Wr, -Wi], [Wi, Wr]]
    for o in range(out):
        output_rows += [1.0 / n, (-1.0) ** o / n]
        for j in range(1, half):
            output_rows += [2 * math.cos(angle * j * o) / n, -2 * math.sin(angle * j * o) / n]
    return tuple(input_rows), tuple(kernel_rows), tuple(output_rows)


def dft(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """The convolution along the first (the only lowered) dim of a batched input whose native dims are at the back,
    by its DFT: one grouped native call per run of frequency groups (``pieces`` runs).

    Shape:
        x: (B, C_in, D, *inner); weight: (C_out, C_in / groups, r, *inner_k); result: (B, C_out, D_out, *inner_out).
    """
    if not applies(spec, rank) or x.dtype not in DTYPES:  # (the weight shares x's dtype: convnd.checks)
        return strategies.fold(x, weight, bias, spec, rank)
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    (low, high), r, d = spec.padding[0], spec.kernel[0], spec.dilation[0]
    batch, channels, size = x.shape[0], x.shape[1], x.shape[2]
    g, out_channels = spec.groups, weight.shape[0]
    per_in, per_out = channels // g, out_channels // g
    n_groups = groups(size, low, high)
    rows_in, rows_w, rows_out = constant_tensors(transforms, (size, low, high, r, d), x.dtype, x.device)
    to_input = rows_in.reshape((n_groups * 2, size))
    to_weight = rows_w.reshape((n_groups, 2, 2, r))
    to_output = rows_out.reshape((-1, n_groups * 2))
    taps = weight.reshape((g, per_out, per_in, r, -1))
    inner = spec.select(range(1, spec.dims))
    frames = x.reshape((batch, g, per_in, size, -1))  # (B, g, C/g, D, P): the frames of each channel's row
    y = None
    for first, count in strategies.row_runs(n_groups, pieces):
        # this run's spectrum: (B, g, C/g, 2 * count, P) -> (B, g, count, 2, C/g, *inner), a group's channels together
        u = torch.matmul(to_input[2 * first : 2 * (first + count)], frames)
        u = u.unflatten(3, (count, 2)).permute(0, 1, 3, 4, 2, 5).reshape((batch, -1, *x.shape[3:]))
        # the run's weight spectra (as big as the input's spectrum for a wide kernel, so per run): (g, count, 2,
        # C_out/g) x (2, C/g, *inner_k), each group's 2 x 2 block of the taps' phases
        w = torch.einsum("jpqt,goctk->gjpoqck", to_weight[first : first + count], taps)
        w = w.reshape((-1, 2 * per_in, *weight.shape[3:]))
        products = lowering.native_lowered(u, w, None, replace(inner, groups=count * g))
        del u
        # (B, g, count, 2, C_out/g, Q): per convolution group, the run's 2 * count frequency rows of C_out/g * Q
        # values, the inverse transform's share added into y (B, g, D_out, C_out/g * Q) in place
        rows = products.reshape((batch * g, 2 * count, -1))
        inverse = to_output[:, 2 * first : 2 * (first + count)].expand((batch * g, -1, -1))
        y = torch.bmm(inverse, rows) if y is None else y.baddbmm_(inverse, rows)
        del products, rows
    out_inner = inner.output_size(x.shape[3:])
    y = y.reshape((batch, g, -1, per_out, *out_inner)).transpose(2, 3).reshape((batch, out_channels, -1, *out_inner))
    return lowering.add_bias(y, bias)
