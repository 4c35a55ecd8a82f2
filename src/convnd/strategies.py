"""The lowering strategies past the native rank, besides ``tapsum`` (in :mod:`convnd.lowering`).

Each strategy has the signature ``(x, weight, bias, spec, rank) -> y`` on a batched
input whose spatial dims are already in the order the plan wants (the planner moves
the dims it keeps native to the back):

- ``fold``: taps of the N - r outer dims folded into the channels (im2col over the
  outer dims only): one bigger native r-d convolution whose reduction is
  ``C_in / groups * prod(outer kernel)`` long, so the GEMM inside is fuller than
  tapsum's. Costs a buffer ``prod(outer kernel)`` times the (outer-strided) input;
  the planner's chunking bounds it. The transposed form runs one native transposed
  convolution with the outer taps folded into its output channels, then adds each
  tap's slab into place (col2im over the outer dims).
- ``unfold``: the whole convolution as one contraction of a strided window view with
  the weight (im2col + batched GEMM over all N dims); for depthwise and grouped
  weights it is a batched GEMM per group, with no native convolution at all.
- ``fft``: convolution theorem with ``torch.fft``: ``O((C_in + C_out) F log F)`` work
  instead of ``O(C_in C_out prod(kernel) F)``, for large kernels. Not exact to the last
  bit: see :func:`fft_error_bound`.

``unfold`` and ``fft`` run a transposed convolution as the forward convolution it
equals (:func:`as_forward`): zeros inserted between input elements (stride), the
kernel flipped and its channel axes swapped, padding ``d (k - 1) - p``.
"""

from __future__ import annotations

import itertools
import math
import string
from dataclasses import replace

import torch
import torch.nn.functional as F

from . import lowering
from .padding import pad_nd, torch_pad_order
from .spec import ConvSpec, make_spec


def fold(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """Outer kernel taps folded into the channels: one native r-d convolution (see module docstring).

    ``pieces`` > 1 splits the folded batch: each piece is a run of output rows of the first
    outer dim (with every batch sample and every frame of the other outer dims), builds only
    its own folded input and runs its own native call, so the buffer shrinks by ``pieces``
    while each call stays ``1 / pieces`` of the whole (no halo is re-read, no padding re-derived).
    """
    if spec.transposed:
        return _fold_transposed(x, weight, bias, spec, rank)
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    n_outer = spec.dims - rank
    outer, inner = spec.select(range(n_outer)), spec.select(range(n_outer, spec.dims))
    batch, out_channels = x.shape[0], weight.shape[0]
    taps = math.prod(outer.kernel)
    w = weight.reshape((out_channels, weight.shape[1] * taps, *weight.shape[2 + n_outer :]))
    out_outer = outer.output_size(x.shape[2 : 2 + n_outer])
    out_inner = inner.output_size(x.shape[2 + n_outer :])
    y = x.new_empty((batch, out_channels, *out_outer, *out_inner))
    y_outer = y.permute(_outer_first(n_outer, 2, rank))  # a view: pieces are written straight into y
    src = x.reshape((batch, spec.groups, x.shape[1] // spec.groups, *x.shape[2:])).permute(
        _outer_first(n_outer, 3, rank)
    )
    step = math.ceil(out_outer[0] / min(max(pieces, 1), out_outer[0]))
    for first in range(0, out_outer[0], step):
        rows = min(step, out_outer[0] - first)
        folded = _folded(src, outer, (rows, *out_outer[1:]), first, x.shape[2:])
        part = lowering.native_lowered(folded.flatten(0, n_outer).flatten(1, -rank - 1), w, bias, inner)
        y_outer[first : first + rows] = part.reshape((rows, *out_outer[1:], batch, out_channels, *out_inner))
        del folded, part  # before the next piece's buffers: one piece's at a time
    return y


def _folded(src: torch.Tensor, outer: ConvSpec, out: tuple[int, ...], first: int, size) -> torch.Tensor:
    """The folded input of output rows ``first ..`` (``out[0]`` of them) of the first outer dim:
    (*out, B, G, C/G, *outer_taps, *inner), zero where a tap reads outer padding."""
    n_outer, rank = len(out), src.dim() - 3 - len(out)
    shape = (*out, *src.shape[n_outer : n_outer + 3], *outer.kernel, *src.shape[-rank:])
    # channels (with their taps) innermost in memory: the folded batch is a channels_last tensor, which oneDNN
    # reads in place (no reorder into its blocked layout): measured 1.1-1.4x faster on the bench's fold workloads
    order = (*range(n_outer + 1), *range(len(shape) - rank, len(shape)), *range(n_outer + 1, len(shape) - rank))
    buf = src.new_zeros(tuple(shape[a] for a in order)).permute(tuple(order.index(a) for a in range(len(shape))))
    # rows first.. of the whole output are the output of a conv whose low padding starts ``first`` strides later
    padding = ((outer.padding[0][0] - first * outer.stride[0], 0), *outer.padding[1:])
    shifted = replace(outer, padding=padding)
    for tap in itertools.product(*(range(k) for k in outer.kernel)):
        windows = _windows(lowering.gather_window, tap, size[:n_outer], out, shifted)
        if windows is not None:
            where = (*(dst for _, dst in windows), Ellipsis, *tap, *(slice(None),) * rank)
            buf[where] = src[tuple(s for s, _ in windows)]
    return buf


def _fold_transposed(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int
) -> torch.Tensor:
    """Transposed fold: one native transposed call with outer taps in its output channels, then col2im."""
    n_outer = spec.dims - rank
    outer, inner = spec.select(range(n_outer)), spec.select(range(n_outer, spec.dims))
    batch, channels = x.shape[:2]
    groups, per_group_out = spec.groups, weight.shape[1]
    out_channels = per_group_out * groups
    taps = math.prod(outer.kernel)
    in_outer = x.shape[2 : 2 + n_outer]
    # (C_in, C_out/G, *k_outer, *k_inner) -> (C_in, C_out/G * taps, *k_inner): taps become output channels
    w = weight.reshape((channels, per_group_out * taps, *weight.shape[2 + n_outer :]))
    xs = x.permute(_outer_first(n_outer, 2, rank)).reshape(
        (math.prod(in_outer) * batch, channels, *x.shape[2 + n_outer :])
    )
    slabs = lowering.native(xs, w, None, inner)
    slabs = slabs.reshape((*in_outer, batch, groups, per_group_out, *outer.kernel, *slabs.shape[2:]))
    out_outer = outer.output_size(in_outer)
    y = x.new_zeros((*out_outer, batch, groups, per_group_out, *slabs.shape[-rank:]))
    for tap in itertools.product(*(range(k) for k in outer.kernel)):
        windows = _windows(lowering.scatter_window, tap, in_outer, out_outer, outer)
        if windows is not None:
            y[tuple(dst for _, dst in windows)].add_(
                slabs[(*(s for s, _ in windows), Ellipsis, *tap, *(slice(None),) * rank)]
            )
    y = y.reshape((*out_outer, batch, out_channels, *y.shape[-rank:])).permute(_batch_first(n_outer, rank))
    y = y.contiguous()
    if bias is not None:
        y = y + bias.reshape((out_channels,) + (1,) * spec.dims)
    return y


def _windows(step, tap, size, out, outer: ConvSpec):
    """Per outer dim, the (source, destination) slices of one tap, or None when it touches only padding."""
    windows = [
        step(t, n, o, s, d, lo)
        for t, n, o, s, d, (lo, _) in zip(tap, size, out, outer.stride, outer.dilation, outer.padding)
    ]
    return None if any(w is None for w in windows) else windows


def _outer_first(n_outer: int, lead: int, rank: int) -> tuple[int, ...]:
    """Permutation moving ``n_outer`` spatial dims (after ``lead`` leading dims) to the front."""
    return (*range(lead, lead + n_outer), *range(lead), *range(lead + n_outer, lead + n_outer + rank))


def _batch_first(n_outer: int, rank: int) -> tuple[int, ...]:
    """Inverse of moving the outer dims in front of (batch, channels)."""
    return (n_outer, n_outer + 1, *range(n_outer), *range(n_outer + 2, n_outer + 2 + rank))


# --- transposed as forward ----------------------------------------------------------


def as_forward(x: torch.Tensor, weight: torch.Tensor, spec: ConvSpec) -> tuple[torch.Tensor, torch.Tensor, ConvSpec]:
    """The forward convolution a transposed one equals: ``(x', weight', spec')``.

    Zeros go between input elements (``stride - 1`` of them), the kernel is flipped and
    its per-group (in, out) axes swapped, stride becomes 1 and padding ``d (k - 1) - p``
    low, plus ``output_padding`` high. Padding below zero crops the input instead.
    """
    n, groups = spec.dims, spec.groups
    batch, channels = x.shape[:2]
    if any(s > 1 for s in spec.stride):
        spaced = x.new_zeros((batch, channels, *((m - 1) * s + 1 for m, s in zip(x.shape[2:], spec.stride))))
        spaced[(Ellipsis, *(slice(None, None, s) for s in spec.stride))] = x
        x = spaced
    per_group_out = weight.shape[1]
    w = weight.reshape((groups, channels // groups, per_group_out, *spec.kernel)).transpose(1, 2)
    w = w.reshape((groups * per_group_out, channels // groups, *spec.kernel)).flip(tuple(range(2, 2 + n)))
    pairs = [
        (d * (k - 1) - lo, d * (k - 1) - hi + op)
        for k, d, (lo, hi), op in zip(spec.kernel, spec.dilation, spec.padding, spec.output_padding)
    ]
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        x = F.pad(x, torch_pad_order(tuple((min(lo, 0), min(hi, 0)) for lo, hi in pairs)))  # negative pads crop
        pairs = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
    return x, w, make_spec(spec.kernel, 1, tuple(pairs), spec.dilation, groups)


# --- unfold: im2col + GEMM over all dims --------------------------------------------


def unfold(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int) -> torch.Tensor:
    """The convolution as one einsum of a strided window view with the weight (im2col + batched GEMM)."""
    del rank  # no native convolution runs
    if spec.transposed:
        x, weight, spec = as_forward(x, weight, spec)
    x = pad_nd(x, spec.padding, spec.padding_mode)
    n, groups = spec.dims, spec.groups
    batch, channels = x.shape[:2]
    out = spec.unpadded().output_size(x.shape[2:])  # x is padded already
    # windows (B, G, C/G, *out, *kernel) as a view: strides of the input, scaled by stride and dilation
    inner = x.stride()[2:]
    view = x.as_strided(
        (batch, groups, channels // groups, *out, *spec.kernel),
        (
            x.stride(0),
            x.stride(1) * (channels // groups),
            x.stride(1),
            *tuple(t * s for t, s in zip(inner, spec.stride)),
            *tuple(t * d for t, d in zip(inner, spec.dilation)),
        ),
    )  # the storage offset defaults to x's own (passing x.storage_offset() breaks torch.compile's trace)
    w = weight.reshape((groups, weight.shape[0] // groups, channels // groups, *spec.kernel))
    o, k = string.ascii_uppercase[:n], string.ascii_uppercase[n : 2 * n]
    y = torch.einsum(f"bgc{o}{k},gxc{k}->bgx{o}", view, w).reshape((batch, weight.shape[0], *out))
    if bias is not None:
        y = y + bias.reshape((-1,) + (1,) * n)
    return y


# --- fft ------------------------------------------------------------------------------


def fft(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int) -> torch.Tensor:
    """Convolution theorem: a circular correlation of the padded input, cropped and strided (exact up to rounding)."""
    del rank
    if spec.transposed:
        x, weight, spec = as_forward(x, weight, spec)
    x = pad_nd(x, spec.padding, spec.padding_mode)
    n, groups = spec.dims, spec.groups
    batch, channels = x.shape[:2]
    axes = tuple(range(-n, 0))
    size = tuple(_fast_size(m) for m in x.shape[2:])
    # dilation: the kernel spread over its window; a zero-filled window is exact
    w = weight
    if any(d > 1 for d in spec.dilation):
        w = weight.new_zeros((*weight.shape[:2], *spec.window))
        w[(Ellipsis, *(slice(None, None, d) for d in spec.dilation))] = weight
    # correlation: Y = X * conj(FFT(conj(w))); real signals keep only half the spectrum
    real = not (x.is_complex() or w.is_complex())
    forward = torch.fft.rfftn if real else torch.fft.fftn
    spectrum_x = forward(x, s=size, dim=axes).reshape((batch, groups, channels // groups, -1))
    spectrum_w = forward(w.conj(), s=size, dim=axes).conj()
    spectrum_w = spectrum_w.reshape((groups, weight.shape[0] // groups, channels // groups, -1))
    spectrum_y = _channel_product(spectrum_x, spectrum_w)
    half = (*size[:-1], size[-1] // 2 + 1) if real else size
    spectrum_y = spectrum_y.reshape((batch, weight.shape[0], *half))
    y = torch.fft.irfftn(spectrum_y, s=size, dim=axes) if real else torch.fft.ifftn(spectrum_y, s=size, dim=axes)
    keep = tuple(slice(0, m - win + 1, s) for m, win, s in zip(x.shape[2:], spec.window, spec.stride))
    y = y[(Ellipsis, *keep)].contiguous()
    if bias is not None:
        y = y + bias.reshape((-1,) + (1,) * n)
    return y


def _channel_product(spectrum_x: torch.Tensor, spectrum_w: torch.Tensor) -> torch.Tensor:
    """Per frequency and group, (B, C/G) x (C/G, C_out/G): ``bgcf,gocf->bgof``.

    torch's complex batched matmul is slow for the many tiny matrices this is (measured:
    14 s for 2x16 @ 16x32 at 40k frequencies), so past a few channels the sum over C/G runs
    as that many vectorized multiply-adds over whole spectra instead.
    """
    per_group_in, per_group_out = spectrum_w.shape[2], spectrum_w.shape[1]
    if per_group_in * per_group_out <= 16:
        return torch.einsum("bgcf,gocf->bgof", spectrum_x, spectrum_w)
    y = spectrum_x[:, :, None, 0] * spectrum_w[None, :, :, 0]
    for c in range(1, per_group_in):
        y = y + spectrum_x[:, :, None, c] * spectrum_w[None, :, :, c]
    return y


def _fast_size(m: int) -> int:
    """The smallest size >= m whose only prime factors are 2, 3 and 5 (fast for pocketfft and cuFFT)."""
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


def fft_error_bound(x: torch.Tensor, weight: torch.Tensor, spec: ConvSpec) -> float:
    """A bound on ``max |fft(x, w) - exact|`` in the dtype of ``x`` (forward convolutions).

    Rounding in a length-L FFT perturbs the result by at most about ``eps log2(L)`` times
    the 2-norm of the transformed signal (Cooley-Tukey error analysis). Two forward
    transforms, the per-frequency channel products and one inverse transform give, for
    every output element,

        ``|error| <= (5 log2(L) + 1) * eps * ||x||_2 * ||w||_2``

    with L the padded FFT size and the norms over the whole input and weight (a
    deliberately loose constant). Observed errors are 10-100 times smaller; the tests
    check the bound in float32 and float64 against the float64 reference.
    """
    eps = torch.finfo(x.real.dtype if x.is_complex() else x.dtype).eps
    size = math.prod(_fast_size(m + lo + hi) for m, (lo, hi) in zip(x.shape[-spec.dims :], spec.padding))
    norm = float(x.double().abs().pow(2).sum().sqrt() * weight.double().abs().pow(2).sum().sqrt())
    return (5 * math.log2(max(size, 2)) + 1) * eps * norm
