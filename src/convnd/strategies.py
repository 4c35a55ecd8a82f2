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
- ``spread``: taps of the outer dims folded into the *output* channels: one native r-d
  call over every input frame, then each tap's slab added where it lands (col2im over the
  outer dims; the transposed ``fold`` is this). Widens a native call that has few output
  channels; costs ``prod(outer kernel)`` output-sized slabs, computed in runs of input frames.
  Over strided outer dims, one call per phase of the input frames with only the taps that
  read it (:func:`_spread_phases`).
- ``foldspread``: both at once where two or more outer dims are lowered: the taps of all
  but the last folded into the input channels, the last one's taps into the output channels
  (:func:`foldspread`), for convolutions too narrow on both sides for either alone.
- ``band``: the outer dims become channels, one native call with a banded weight.
- ``unfold``: the whole convolution as one contraction of a strided window view with
  the weight (im2col + batched GEMM over all N dims); for depthwise and grouped
  weights it is a batched GEMM per group, with no native convolution at all. A
  transposed kernel that tiles its stride (un-patching) runs one GEMM per run of input
  rows, then interleaves the tiles in two copies (:func:`_unpatch`; native transposed calls
  of the rank a caller pinned).
- ``fft``: convolution theorem with ``torch.fft``: ``O((C_in + C_out) F log F)`` work
  instead of ``O(C_in C_out prod(kernel) F)``, for large kernels. Not exact to the last
  bit: see :func:`fft_error_bound`.

The gradients of ``fold``, ``spread`` and ``foldspread`` plans (and of :mod:`convnd.winograd`'s and
:mod:`convnd.dft`'s) come from
:func:`fold_backward` or :func:`phase_backward` (see :mod:`convnd.autograd`).

``unfold`` and ``fft`` run a transposed convolution as the forward convolution it
equals (:func:`as_forward`): zeros inserted between input elements (stride), the
kernel flipped and its channel axes swapped, padding ``d (k - 1) - p``.
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from . import lowering, selection, transposes
from .caching import trace_safe_cache
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
    if spec.transposed:  # taps as the native transposed call's output channels
        return spread(x, weight, bias, spec, rank)
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    n_outer = spec.dims - rank
    outer, inner = spec.split(rank)
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
    for first, rows in row_runs(out_outer[0], pieces):
        folded = _folded(src, outer, (rows, *out_outer[1:]), first, x.shape[2:])
        part = lowering.native_lowered(folded.flatten(0, n_outer).flatten(1, -rank - 1), w, bias, inner)
        y_outer[first : first + rows] = part.reshape((rows, *out_outer[1:], batch, out_channels, *out_inner))
        del folded, part  # before the next piece's buffers: one piece's at a time
    return y


def fold_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    rank: int,
    pieces: int,
    needs: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input and weight gradients of :func:`fold` (symmetric zero padding), piece by piece as it ran.

    Each piece's folded input is rebuilt (only ``x`` is saved), one native backward call
    gives the gradients of the folded input and of the folded weight at once, and the
    folded input's gradient is added back where each tap read it (col2im over the outer
    dims). Autograd through :func:`fold` did the same work plus a zero-filled copy of the
    whole folded buffer per tap it had written.
    """
    n_outer = spec.dims - rank
    outer, inner = spec.split(rank)
    batch, out_channels = x.shape[0], weight.shape[0]
    w = weight.reshape((out_channels, weight.shape[1] * math.prod(outer.kernel), *weight.shape[2 + n_outer :]))
    out_outer, size = tuple(grad.shape[2 : 2 + n_outer]), tuple(x.shape[2 : 2 + n_outer])
    grouped = (batch, spec.groups, x.shape[1] // spec.groups, *x.shape[2:])
    src = x.reshape(grouped).permute(_outer_first(n_outer, 3, rank))
    # the input gradient accumulates in the folded gradient's memory order (channels innermost), so each tap's
    # add streams both operands alike; one copy at the end puts it in x's layout (measured 2-3x faster than
    # adding channels-innermost slices into a channels-first tensor tap by tap)
    grad_src = None
    if needs[0]:
        order = (*range(n_outer + 1), *range(n_outer + 3, n_outer + 3 + rank), n_outer + 1, n_outer + 2)
        shape = tuple(src.shape[a] for a in order)
        grad_src = x.new_zeros(shape).permute(tuple(order.index(a) for a in range(len(shape))))
    grad_outer = grad.permute(_outer_first(n_outer, 2, rank))
    grad_w = None
    for first, rows in row_runs(out_outer[0], pieces):
        out = (rows, *out_outer[1:])
        folded = _folded(src, outer, out, first, x.shape[2:])
        # the output gradient channels_last like the folded input: oneDNN's backward on a mix of layouts (or on
        # both plain) measured 2-4x slower (its reorders; a stride-2 data gradient in plain layout the worst)
        gy = _channels_last(grad_outer[first : first + rows], n_outer + 1).flatten(0, n_outer)
        g_folded, g_w = lowering.native_backward(gy, folded.flatten(0, n_outer).flatten(1, -rank - 1), w, inner, needs)
        if g_w is not None:
            grad_w = g_w if grad_w is None else grad_w + g_w
        if grad_src is not None:
            g_folded = g_folded.unflatten(1, folded.shape[n_outer + 1 : -rank])
            g_folded = g_folded.unflatten(0, folded.shape[: n_outer + 1])  # as ``folded``: (*out, B, G, C/G, *taps, ..)
            for tap, windows in lowering.tap_windows(
                lowering.gather_window, outer, size, out, -first * outer.stride[0]
            ):
                if windows is None:
                    continue  # this tap reads only padding in this piece
                # add_ on the view, not ``+=`` (a setitem on grad_src: under create_graph it fails when the
                # view is the whole tensor, as tapsum's comment on the same trap says)
                grad_src[tuple(s for s, _ in windows)].add_(
                    g_folded[(*(dst for _, dst in windows), Ellipsis, *tap, *(slice(None),) * rank)]
                )
        del folded, gy, g_folded
    grad_x = None
    if grad_src is not None:
        to_x = (n_outer, n_outer + 1, n_outer + 2, *range(n_outer), *range(n_outer + 3, n_outer + 3 + rank))
        grad_x = grad_src.permute(to_x).reshape(x.shape).contiguous()
    return grad_x, None if grad_w is None else grad_w.reshape(weight.shape)


def phase_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    rank: int,
    pieces: int,
    needs: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input and weight gradients of a convolution lowered over its outer dims (symmetric zero padding),
    as :func:`spread`'s adjoint: one native backward call per phase of the input frames, no col2im.

    Input frame ``f = o * stride + t * dilation - low`` of an outer dim is read by output ``o`` through
    tap ``t``; the frames with one residue ``f mod stride`` (a phase) are read only by the taps ``t``
    with ``t * dilation - low`` of that residue, output ``o = j + shift(t)`` reading the phase's frame
    ``j``. So per phase, the output gradient frames each tap pairs up are gathered into the channels
    (taps after each output channel, as :func:`spread`'s weight has them), and one native backward call
    of the phase's frames against that gathered gradient gives the phase's input gradient, every tap
    summed inside its GEMM and written where it belongs, and the weight gradient of the phase's taps.
    The buffers are output-sized (``taps / stride`` of them per outer dim) where :func:`fold_backward`'s
    are input-sized plus a col2im, which wins where the output is smaller than the input: strided
    outer dims. ``pieces`` > 1 splits each phase's frames of the first outer dim into runs.
    """
    n_outer = spec.dims - rank
    outer, inner = spec.split(rank)
    batch, channels, out_channels = x.shape[0], x.shape[1], weight.shape[0]
    size = tuple(x.shape[2 : 2 + n_outer])
    # the outer dims next to the batch: (B, *outer, C, *inner), so a phase's frames flatten into the batch
    grad_frames = grad.permute(_after_batch(n_outer, rank))
    grad_x = x.new_empty(x.shape) if needs[0] else None
    grad_w = torch.zeros_like(weight) if needs[1] else None
    for where, frames, taps, kept, w in _phase_calls(weight, outer, size):
        if 0 in frames:
            continue  # an outer dim shorter than its stride: no frame has this residue
        if not taps:  # no tap reads these frames: their gradient is zero
            if grad_x is not None:
                grad_x[where] = 0
            continue
        x_phase = x[where].permute(_after_batch(n_outer, rank))
        gx_phase = None if grad_x is None else grad_x[where].permute(_after_batch(n_outer, rank))
        for first, rows in row_runs(frames[0], pieces):
            piece = (rows, *frames[1:])
            count = batch * math.prod(piece)
            gathered = _gathered(grad_frames, taps, first, piece).reshape((count, -1, *grad.shape[2 + n_outer :]))
            xs = x_phase[:, first : first + rows].reshape((count, channels, *x.shape[2 + n_outer :]))
            gxs, gws = lowering.native_backward(gathered, xs, w, inner, needs)
            if gx_phase is not None:
                gx_phase[:, first : first + rows] = gxs.reshape((batch, *piece, *gxs.shape[1:]))
            if grad_w is not None:  # the phase's taps of the kernel, a strided view (see _phases)
                taps_w = grad_w[(slice(None), slice(None), *kept)]
                taps_w.add_(
                    gws.reshape((out_channels, *taps_w.shape[2 : 2 + n_outer], *gws.shape[1:])).movedim(1 + n_outer, 1)
                )
            del gathered, xs, gxs, gws  # before the next piece's buffers
    return grad_x, grad_w


def _gathered(
    grad_frames: torch.Tensor, taps: Sequence[tuple[int, ...]], first: int, piece: tuple[int, ...]
) -> torch.Tensor:
    """(B, *piece, C_out, taps, *inner): for frame ``j`` of the phase (``first`` onwards along the first outer
    dim), the output gradient frame ``j + shift`` of each tap, zero where that lies outside the output."""
    n_outer = len(piece)
    out, inner = grad_frames.shape[1 : 1 + n_outer], grad_frames.shape[1 + n_outer :]
    gathered = grad_frames.new_zeros((grad_frames.shape[0], *piece, inner[0], len(taps), *inner[1:]))
    for i, shifts in enumerate(taps):
        runs = _tap_runs(shifts, first, piece, out)
        if runs is not None:
            gathered[(slice(None), *runs[0], slice(None), i)] = grad_frames[(slice(None), *runs[1])]
    return gathered


def _tap_runs(
    shifts: tuple[int, ...], first: int, piece: tuple[int, ...], out: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """The phase frames (of a piece starting at frame ``first``) a tap pairs with output frames ``j + shift``,
    and those output frames, per outer dim; None where none lies inside the output."""
    shifts = (shifts[0] + first, *shifts[1:])
    runs = [(max(0, -h), min(n, m - h)) for h, n, m in zip(shifts, piece, out)]
    if any(lo >= hi for lo, hi in runs):
        return None
    return tuple(slice(lo, hi) for lo, hi in runs), tuple(slice(lo + h, hi + h) for (lo, hi), h in zip(runs, shifts))


def _after_batch(n_outer: int, rank: int) -> tuple[int, ...]:
    """Permutation (B, C, *outer, *inner) -> (B, *outer, C, *inner)."""
    return (0, *range(2, 2 + n_outer), 1, *range(2 + n_outer, 2 + n_outer + rank))


def _phase_calls(weight: torch.Tensor, outer: ConvSpec, size: tuple[int, ...]):
    """Per phase of the input frames (a residue mod stride per outer dim): the index of its frames in
    (B, C, *outer, *inner), their count per outer dim, its taps' per-dim shifts (the output reading the phase's
    frame ``j`` through a tap is ``j + shift``), the taps' slice of each outer kernel dim, and the native call's
    weight: those taps after each output channel, (C_out * taps, C/G, *inner_k), grouped by group as
    :func:`spread`'s."""
    n_outer = outer.dims
    for phase, taps, kept in _phases(outer):
        frames = tuple(len(range(r, n, s)) for r, n, s in zip(phase, size, outer.stride))
        where = (slice(None), slice(None), *(slice(r, None, s) for r, s in zip(phase, outer.stride)))
        # the taps a phase reads are a strided slice of each kernel dim: a view, then one copy into the layout
        w = weight[(slice(None), slice(None), *kept)].movedim(1, 1 + n_outer).flatten(0, n_outer) if taps else None
        yield where, frames, taps, kept, w


def phase_taps(stride: int, dilation: int, kernel: int, low: int) -> list[list[tuple[int, int]]]:
    """Along one outer dim, per residue r of the input frames mod ``stride``: the taps that read frames of that
    residue, each with its shift (output ``o = j + shift`` reads the residue's frame ``j``, input frame
    ``r + stride * j = o * stride + t * dilation - low``)."""
    return [
        [(t, (r - t * dilation + low) // stride) for t in range(kernel) if (r - t * dilation + low) % stride == 0]
        for r in range(stride)
    ]


@trace_safe_cache(maxsize=256)
def _phases(outer: ConvSpec) -> tuple[tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[slice, ...]], ...]:
    """Each phase (per-dim residue mod stride) with its taps' per-dim shifts (in row-major tap order) and the
    slice of each kernel dim they form (the taps ``t`` with ``t * dilation`` in one class mod ``stride`` are
    evenly spaced); no taps where some dim has none."""
    per_dim = [
        phase_taps(s, d, k, lo) for s, d, k, (lo, _) in zip(outer.stride, outer.dilation, outer.kernel, outer.padding)
    ]
    phases = []
    for phase in itertools.product(*(range(s) for s in outer.stride)):
        dims = [dim[r] for dim, r in zip(per_dim, phase)]
        shifts = tuple(itertools.product(*([h for _, h in taps] for taps in dims)))
        kept = tuple(_evenly(t for t, _ in taps) for taps in dims)
        phases.append((phase, shifts, kept))
    return tuple(phases)


def _evenly(taps: Iterable[int]) -> slice:
    """The slice of evenly spaced ascending ``taps`` (an empty slice for none)."""
    taps = list(taps)
    if not taps:
        return slice(0, 0)
    return slice(taps[0], taps[-1] + 1, taps[1] - taps[0] if len(taps) > 1 else 1)


def row_runs(rows: int, pieces: int) -> list[tuple[int, int]]:
    """(first, count) of ``pieces`` runs of output rows (fewer when rows are fewer)."""
    step = math.ceil(rows / min(max(pieces, 1), rows))
    return [(first, min(step, rows - first)) for first in range(0, rows, step)]


def _channels_last(t: torch.Tensor, channel_axis: int) -> torch.Tensor:
    """A copy of ``t`` with ``channel_axis`` innermost in memory (same shape): a channels_last batch, any rank."""
    order = (*(d for d in range(t.dim()) if d != channel_axis), channel_axis)
    return transposes.permuted_copy(t, order).movedim(-1, channel_axis)


def _folded(
    src: torch.Tensor, outer: ConvSpec, out: tuple[int, ...], first: int, size, batched: int | None = None
) -> torch.Tensor:
    """The folded input of output rows ``first ..`` (``out[0]`` of them) of the first outer dim:
    (*out, B, G, C/G, *outer_taps, *inner), zero where a tap reads outer padding.

    In memory the first ``batched`` inner dims come before the channels and the rest after them (None: all
    before, a channels_last batch, which is fold's; :func:`foldspread` batches its spread dim and keeps the
    native dims after the channels)."""
    n_outer, rank = len(out), src.dim() - 3 - len(out)
    shape = (*out, *src.shape[n_outer : n_outer + 3], *outer.kernel, *src.shape[-rank:])
    # channels (with their taps) innermost in memory: the folded batch is a channels_last tensor, which oneDNN
    # reads in place (no reorder into its blocked layout): measured 1.1-1.4x faster on the bench's fold workloads
    batched = rank if batched is None else batched
    inner = len(shape) - rank
    channels = range(n_outer + 1, inner)
    order = (*range(n_outer + 1), *range(inner, inner + batched), *channels, *range(inner + batched, len(shape)))
    buf = src.new_zeros(tuple(shape[a] for a in order)).permute(tuple(order.index(a) for a in range(len(shape))))
    # output rows first.. are the output of a conv whose low padding starts ``first`` strides later
    for tap, windows in lowering.tap_windows(
        lowering.gather_window, outer, tuple(size[:n_outer]), out, -first * outer.stride[0]
    ):
        if windows is not None:
            where = (*(dst for _, dst in windows), Ellipsis, *tap, *(slice(None),) * rank)
            buf[where] = src[tuple(s for s, _ in windows)]
    return buf


def spread(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """Outer kernel taps folded into the output channels: every input frame's contribution to each outer tap
    from one native r-d call, then each tap's slab added where it lands (col2im over the outer dims).

    ``fold`` widens the native call's reduction (taps as input channels); ``spread`` widens its
    output (taps as output channels), which is what oneDNN lacks when a convolution has few
    output channels: a 4-channel 7^4 kernel ran 3x faster as one call with 28 output channels
    than as 7 calls with 4. It computes every input frame's taps (``stride`` times the needed
    products along a strided outer dim) and holds ``prod(outer kernel)`` output-sized slabs,
    so ``pieces`` > 1 runs runs of input frames of the first outer dim, one native call each,
    every piece adding into the one output. A transposed convolution's native call is the
    transposed one (its taps land at ``input * stride + tap``), the forward one's gathers
    (output ``o`` takes tap ``t`` of input ``o * stride + t``).
    """
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    n_outer = spec.dims - rank
    outer, inner = spec.split(rank)
    batch, channels, groups = x.shape[0], x.shape[1], spec.groups
    per_group_out = weight.shape[1] if spec.transposed else weight.shape[0] // groups
    out_channels = per_group_out * groups
    in_outer = tuple(x.shape[2 : 2 + n_outer])
    out_outer = outer.output_size(in_outer)
    if not spec.transposed and any(s > 1 for s in outer.stride):
        y = _spread_phases(x, weight, outer, inner, pieces)
        return lowering.add_bias(y, bias)
    w = _taps_as_outputs(weight, spec, n_outer)
    src = x.permute(_outer_first(n_outer, 2, rank))
    # accumulated in place in the output (a view with the outer dims first; each slab's inner dims are
    # contiguous on both sides of the add). Plain layouts: channels_last runs and slabs measured 1.1-2x slower
    # here (their adds transpose), for less memory only where oneDNN pads few channels to its block
    y = x.new_empty((batch, out_channels, *out_outer, *inner.output_size(x.shape[2 + n_outer :])))
    y_outer = y.view((batch, groups, per_group_out, *y.shape[2:])).permute(_outer_first(n_outer, 3, rank))
    fresh = True
    # both windows are (input slice, output slice): transposed, input i lands on o = i * s + t * d - low; forward,
    # output o reads i = o * s + t * d - low. Input frames first.. are an input of their own whose low padding
    # is low - first * s (transposed) or low + first (forward)
    step = lowering.scatter_window if spec.transposed else lowering.gather_window
    shift = -outer.stride[0] if spec.transposed else 1
    for first, rows in row_runs(in_outer[0], pieces):
        frames = rows * math.prod(in_outer[1:])
        xs = src[first : first + rows].reshape((frames * batch, channels, *x.shape[2 + n_outer :]))
        slabs = lowering.native_lowered(xs, w, None, inner)
        slabs = slabs.reshape((rows, *in_outer[1:], batch, groups, per_group_out, *outer.kernel, *y.shape[-rank:]))
        taps = lowering.tap_windows(step, outer, (rows, *in_outer[1:]), out_outer, shift * first)
        for tap, windows in lowering.covering_first(taps, out_outer):
            if windows is not None:
                # the slab's view is not kept in a name: it would hold the piece's slabs past their del below
                where = (*(s for s, _ in windows), Ellipsis, *tap, *(slice(None),) * rank)
                fresh = lowering.land(y_outer, tuple(dst for _, dst in windows), slabs[where], fresh)
        del xs, slabs  # before the next piece's: one piece's at a time
    return lowering.add_bias(y.zero_() if fresh else y, bias)


def _spread_phases(
    x: torch.Tensor, weight: torch.Tensor, outer: ConvSpec, inner: ConvSpec, pieces: int
) -> torch.Tensor:
    """:func:`spread` over strided outer dims: per phase of the input frames (:func:`_phase_calls`), one native
    call with only the taps that read that phase as output channels, so no product is computed that no output
    uses (every tap of every frame would be ``prod(stride)`` times the needed products). With ``pieces`` > 1,
    each phase's frames of the first outer dim run in runs no longer than ``spread``'s runs of input frames."""
    n_outer, rank = outer.dims, inner.dims
    batch, channels, out_channels = x.shape[0], x.shape[1], weight.shape[0]
    size = tuple(x.shape[2 : 2 + n_outer])
    out = outer.output_size(size)
    y = x.new_empty((batch, out_channels, *out, *inner.output_size(x.shape[2 + n_outer :])))
    y_frames = y.permute(_after_batch(n_outer, rank))  # (B, *outer, C_out, *inner): each slab lands on a slice
    fresh = True
    # runs of at most as many frames as spread's runs of input frames: a phase frame holds no more than one of those
    most = math.ceil(size[0] / min(max(pieces, 1), max(size[0], 1)))
    for where, frames, taps, _, w in _phase_calls(weight, outer, size):
        x_phase = x[where].permute(_after_batch(n_outer, rank))
        for first, rows in row_runs(frames[0], math.ceil(frames[0] / most)) if taps and 0 not in frames else ():
            piece = (rows, *frames[1:])
            xs = x_phase[:, first : first + rows].reshape((batch * math.prod(piece), channels, *x.shape[2 + n_outer :]))
            slabs = lowering.native_lowered(xs, w, None, inner)
            slabs = slabs.reshape((batch, *piece, out_channels, len(taps), *slabs.shape[2:]))
            for i, shifts in enumerate(taps):
                runs = _tap_runs(shifts, first, piece, out)
                if runs is not None:
                    fresh = lowering.land(
                        y_frames, (slice(None), *runs[1]), slabs[(slice(None), *runs[0], slice(None), i)], fresh
                    )
            del xs, slabs  # before the next piece's buffers
    return y.zero_() if fresh else y


def foldspread(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """The outer dims but the last folded into the input channels (as :func:`fold`), the last one's taps into
    the output channels (as :func:`spread`): one native r-d call per piece, then each of the last dim's taps'
    slabs added where it lands.

    Both halves widen a narrow native call from its two sides: a 5-d convolution of 4 -> 8 channels with a
    3^5 kernel runs fold's call as 36 -> 8 channels and spread's as 4 -> 72, this one's as 12 -> 24, which
    oneDNN runs about twice as fast (its kernels pad output channels to blocks of 16; README, Performance).
    It holds the folded input (the fold taps times the input frames of the last dim each output row reads)
    and the slabs (the last dim's taps times those frames' outputs); ``pieces`` > 1 runs runs of output rows
    of the first outer dim, as fold's pieces. Where it does not apply (:func:`foldspread_applies`: a single
    outer dim, a strided last outer dim, a transposed convolution) it runs :func:`fold`.
    """
    if not foldspread_applies(spec, rank):
        return fold(x, weight, bias, spec, rank, pieces)
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    n_fold = spec.dims - rank - 1
    outer, inner = spec.split(rank)
    folding, last = outer.select(range(n_fold)), outer.select((n_fold,))
    batch, groups, size = x.shape[0], spec.groups, tuple(x.shape[2:])
    out_channels = weight.shape[0]
    out_fold = folding.output_size(size[:n_fold])
    in_last, out_last = size[n_fold], spec.output_size(size)[n_fold]
    y = x.new_empty((batch, out_channels, *out_fold, out_last, *inner.output_size(size[n_fold + 1 :])))
    # (*out_fold, B, out_last, G, C_out/G, *inner): a view where each tap's slab lands on a slice of the last dim
    y_rows = y.view((batch, groups, out_channels // groups, *y.shape[2:])).permute(
        (*range(3, 3 + n_fold), 0, 3 + n_fold, 1, 2, *range(4 + n_fold, 4 + n_fold + rank))
    )
    src = x.reshape((batch, groups, x.shape[1] // groups, *size)).permute(_outer_first(n_fold, 3, rank + 1))
    w = _folded_and_spread(weight, n_fold)
    # folded (*rows, B, G, C/G, *fold taps, last, *inner) lies in memory as (*rows, B, last, G, C/G, *taps, *inner)
    # (the last dim batched, the native dims after the channels: measured 1.3x faster here than channels_last)
    axis = 2 * n_fold + 3  # the spread dim's, in folded
    as_batch = (*range(n_fold + 1), axis, *range(n_fold + 1, axis), *range(axis + 1, axis + 1 + rank))
    taps = lowering.tap_windows(lowering.gather_window, last, (in_last,), (out_last,))  # the spread dim's
    for first, rows in row_runs(out_fold[0], pieces):
        piece = (rows, *out_fold[1:])
        folded = _folded(src, folding, piece, first, size, batched=1).permute(as_batch)
        xs = folded.reshape((math.prod(piece) * batch * in_last, -1, *size[n_fold + 1 :]))
        slabs = lowering.native_lowered(xs, w, None, inner)
        slabs = slabs.reshape((*piece, batch, in_last, groups, -1, last.kernel[0], *slabs.shape[2:]))
        # the pieces' output rows are disjoint, and each piece lands a slab: along an unstrided dim some tap
        # always reads the input
        y_piece, fresh = y_rows[first : first + rows], True
        lead = (slice(None),) * (n_fold + 1)
        for (tap,), windows in lowering.covering_first(taps, (out_last,)):
            if windows is not None:
                where = (*lead, windows[0][0], slice(None), slice(None), tap)  # no named view: see spread
                fresh = lowering.land(y_piece, (*lead, windows[0][1]), slabs[where], fresh)
        del folded, xs, slabs  # before the next piece's buffers: one piece's at a time
    return lowering.add_bias(y, bias)


def foldspread_applies(spec: ConvSpec, rank: int) -> bool:
    """Whether :func:`foldspread` runs as itself: two or more outer dims, the last of them unstrided, not transposed
    (a strided last dim would compute every frame's taps where spread computes a phase's)."""
    n_outer = spec.dims - rank
    return n_outer >= 2 and not spec.transposed and spec.stride[n_outer - 1] == 1


def _folded_and_spread(weight: torch.Tensor, n_fold: int) -> torch.Tensor:
    """:func:`foldspread`'s native weight: (C_out, C/G, *fold_k, k_last, *inner_k) -> (C_out * k_last,
    C/G * prod(fold_k), *inner_k), the last outer dim's taps after each output channel (so C_out stays
    group-major), the fold taps after each input channel (as the folded input's channels)."""
    out_channels, per_group_in = weight.shape[:2]
    k_last, inner_k = weight.shape[2 + n_fold], weight.shape[3 + n_fold :]
    w = weight.reshape((out_channels, per_group_in, -1, k_last, *inner_k))
    w = w.permute((0, 3, 1, 2, *range(4, 4 + len(inner_k))))
    return w.reshape((out_channels * k_last, -1, *inner_k))


def _taps_as_outputs(weight: torch.Tensor, spec: ConvSpec, n_outer: int) -> torch.Tensor:
    """The native call's weight, outer taps after each group's output channels.

    forward: (C_out, C/G, *outer_k, *inner_k) -> (C_out * taps, C/G, *inner_k), grouped by group;
    transposed: (C_in, C_out/G, *outer_k, *inner_k) -> (C_in, C_out/G * taps, *inner_k) (a view).
    """
    inner_k = weight.shape[2 + n_outer :]
    taps = math.prod(spec.kernel[:n_outer])
    if spec.transposed:
        return weight.reshape((weight.shape[0], weight.shape[1] * taps, *inner_k))
    rows, cols = weight.shape[:2]
    w = weight.reshape((rows, cols, taps, *inner_k)).transpose(1, 2)  # (C_out, taps, C/G, ..): C_out is group-major
    return w.reshape((rows * taps, cols, *inner_k))


def _outer_first(n_outer: int, lead: int, rank: int) -> tuple[int, ...]:
    """Permutation moving ``n_outer`` spatial dims (after ``lead`` leading dims) to the front."""
    return (*range(lead, lead + n_outer), *range(lead), *range(lead + n_outer, lead + n_outer + rank))


# --- band: outer dims into the channels -----------------------------------------------


def band(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int) -> torch.Tensor:
    """The outer dims become channels: one native r-d convolution with a banded weight.

    Input position i of the outer dims is a channel (x's (C, *outer) layout merges into
    C * prod(outer) channels as a view), so is output position o, and the weight from
    channel (c, i) to (c', o) is the kernel tap that pairs them (``i = o * stride + t * dilation
    - padding``; transposed: ``o = i * stride + t * dilation - padding``), zero where none
    does: a Toeplitz band. It multiplies ``prod(outer) / prod(outer kernel)`` times more terms
    than the convolution has (about), all in one native call whose GEMM is
    ``C / G * prod(outer)`` deep, with no gather, no partial sums to add and zero padding
    free. That trade wins where the other lowerings starve the native kernel: depthwise
    weights and few channels over short outer dims.
    """
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    n_outer = spec.dims - rank
    outer, inner = spec.split(rank)
    batch, channels, size = x.shape[0], x.shape[1], tuple(x.shape[2 : 2 + n_outer])
    out_outer = outer.output_size(size)
    out_channels = weight.shape[1] * spec.groups if spec.transposed else weight.shape[0]
    w = band_weight(weight, outer, size, out_outer)
    merged = x.reshape((batch, channels * math.prod(size), *x.shape[2 + n_outer :]))
    y = lowering.native_lowered(merged, w, None, inner)
    return lowering.add_bias(y.reshape((batch, out_channels, *out_outer, *y.shape[2:])), bias)


def band_weight(weight: torch.Tensor, outer: ConvSpec, size: tuple[int, ...], out: tuple[int, ...]) -> torch.Tensor:
    """The Toeplitz band of the outer dims, in the native kernel's weight layout, by one gather of the
    taps (so gradients flow back to ``weight``):

    - forward: (C_out, C/G, *outer_k, *inner_k) -> (C_out * prod(out), C/G * prod(size), *inner_k);
    - transposed: (C_in, C_out/G, *outer_k, *inner_k) -> (C_in * prod(size), C_out/G * prod(out), *inner_k).
    """
    rows, cols = weight.shape[:2]
    inner_k = weight.shape[2 + outer.dims :]
    flat = weight.reshape((rows, cols, math.prod(outer.kernel), *inner_k))
    padded = torch.cat((flat, flat.new_zeros((rows, cols, 1, *inner_k))), dim=2)  # the zero past the last tap
    pairs = padded.index_select(2, torch.tensor(_band_index(outer, size, out), dtype=torch.long, device=weight.device))
    # forward: (C_out, C/G, out, size); transposed: (C_in, C_out/G, size, out) -- the first position joins the rows
    first, second = (size, out) if outer.transposed else (out, size)
    pairs = pairs.reshape((rows, cols, math.prod(first), math.prod(second), *inner_k)).transpose(1, 2)
    return pairs.reshape((rows * math.prod(first), cols * math.prod(second), *inner_k))


@trace_safe_cache(maxsize=256)
def _band_index(outer: ConvSpec, size: tuple[int, ...], out: tuple[int, ...]) -> tuple[int, ...]:
    """The flat outer tap joining each pair of positions, ``prod(kernel)`` (the zero) where none does.

    Pairs run over (output, input) positions for a forward convolution, (input, output) for a transposed one.
    """
    taps = math.prod(outer.kernel)
    first, second = (size, out) if outer.transposed else (out, size)
    index = []
    for a in itertools.product(*map(range, first)):
        for b in itertools.product(*map(range, second)):
            flat = 0
            for a_, b_, k, s, d, (lo, _) in zip(a, b, outer.kernel, outer.stride, outer.dilation, outer.padding):
                # forward: input b = output a * s + t * d - lo; transposed: output b = input a * s + t * d - lo
                t, rest = divmod(b_ - a_ * s + lo, d)
                if rest or not 0 <= t < k:
                    flat = taps
                    break
                flat = flat * k + t
            index.append(flat)
    return tuple(index)


# --- transposed as forward ----------------------------------------------------------


def as_forward(x: torch.Tensor, weight: torch.Tensor, spec: ConvSpec) -> tuple[torch.Tensor, torch.Tensor, ConvSpec]:
    """The forward convolution a transposed one equals: ``(x', weight', spec')``.

    Zeros go between input elements (``stride - 1`` of them), the kernel is flipped and
    its per-group (in, out) axes swapped, stride becomes 1 and padding ``d (k - 1) - p``
    low, plus ``output_padding`` high. Padding below zero crops the input instead.
    """
    groups = spec.groups
    batch, channels = x.shape[:2]
    if any(s > 1 for s in spec.stride):
        spaced = x.new_zeros((batch, channels, *((m - 1) * s + 1 for m, s in zip(x.shape[2:], spec.stride))))
        spaced[(Ellipsis, *(slice(None, None, s) for s in spec.stride))] = x
        x = spaced
    w = adjoint_weight(weight, groups)
    pairs = forward_padding(spec)
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        x = F.pad(x, torch_pad_order(tuple((min(lo, 0), min(hi, 0)) for lo, hi in pairs)))  # negative pads crop
        pairs = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
    return x, w, make_spec(spec.kernel, 1, tuple(pairs), spec.dilation, groups)


def adjoint_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A convolution's weight as its adjoint's, for stride 1: (rows, cols / G, *kernel) -> (cols, rows / G,
    *kernel), each group's two channel axes swapped and the kernel flipped over its spatial dims. A transposed
    convolution's weight (C_in, C_out / G) becomes the forward one's (C_out, C_in / G), and a forward one's the
    weight of the forward convolution that is its input gradient."""
    rows = weight.shape[0]
    w = weight.unflatten(0, (groups, rows // groups)).transpose(1, 2).flatten(0, 1)
    return w.flip(tuple(range(2, w.dim())))


def forward_padding(spec: ConvSpec) -> list[tuple[int, int]]:
    """The (low, high) padding of the forward convolution a transposed ``spec`` equals: ``d (k - 1) - p`` per side,
    plus ``output_padding`` high; below zero where that forward convolution crops instead."""
    return [
        (d * (k - 1) - lo, d * (k - 1) - hi + op)
        for k, d, (lo, hi), op in zip(spec.kernel, spec.dilation, spec.padding, spec.output_padding)
    ]


# --- unfold: im2col + GEMM over all dims --------------------------------------------


def unfold(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int, pieces: int = 1
) -> torch.Tensor:
    """The convolution as one einsum of a strided window view with the weight (im2col + batched GEMM).

    ``pieces`` > 1: runs of input rows when un-patching (:func:`_unpatch`), which runs GEMMs (``rank`` 0) or, for a
    pinned rank, native calls of rank ``rank`` (:func:`convnd.selection.call_rank`); the other forms run none.
    """
    if spec.transposed:
        return _unfold_transposed(x, weight, bias, spec, pieces, rank)
    x = pad_nd(x, spec.padding, spec.padding_mode)
    if lowering.wants_grad(x):
        # as_strided's backward spreads a gradient over the storage: an input whose elements share memory (an
        # expanded batch, overlapping windows) would get each shared element's mean gradient, not its own. A
        # contiguous x is itself; the copy of another is small beside the windows' GEMM (and sorting its strides to
        # find overlap would break torch.compile's graph on symbolic strides)
        x = x.contiguous()
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
    return lowering.add_bias(
        torch.einsum(f"bgc{o}{k},gxc{k}->bgx{o}", view, w).reshape((batch, weight.shape[0], *out)), bias
    )


def _unfold_transposed(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, pieces: int = 1, rank: int = 1
) -> torch.Tensor:
    """Transposed: one (batched per group) GEMM of the input with the weight gives every tap's
    contribution of every input position (columns), then col2im adds them into place.

    No zeros are multiplied (the forward form would convolve ``prod(stride)`` times more
    positions). When every kernel exactly tiles its stride, see :func:`_unpatch`.
    """
    if selection.unpatches(spec):
        return _unpatch(x, weight, bias, spec, pieces, rank)
    n, groups = spec.dims, spec.groups
    batch, channels, size = x.shape[0], x.shape[1], tuple(x.shape[2:])
    per_group_in, per_group_out = channels // groups, weight.shape[1]
    # (G, B * S, C/G) @ (G, C/G, O/G * K): tap and output channel innermost, positions as GEMM rows
    rows = x.reshape((batch, groups, per_group_in, -1)).permute(1, 0, 3, 2).reshape((groups, -1, per_group_in))
    w = weight.reshape((groups, per_group_in, -1))
    # one group: mm, which reads the transposed rows in place (bmm was measured 5x slower on that view)
    cols = torch.mm(rows[0], w[0]) if groups == 1 else torch.bmm(rows, w)
    cols = cols.reshape((groups, batch, *size, per_group_out, *spec.kernel))
    # -> (B, G, O/G, *S, *K)
    cols = cols.permute((1, 0, 2 + n, *range(2, 2 + n), *range(3 + n, 3 + 2 * n)))
    out = spec.output_size(size)
    # col2im: each tap's columns added where they land, as the transposed tap sum scatters
    y = x.new_zeros((batch, groups, per_group_out, *out))
    for tap, windows in lowering.tap_windows(lowering.scatter_window, spec, tuple(size), tuple(out)):
        if windows is not None:
            y[(Ellipsis, *(dst for _, dst in windows))].add_(cols[(Ellipsis, *(src for src, _ in windows), *tap)])
    return lowering.add_bias(y.reshape((batch, groups * per_group_out, *out)).contiguous(), bias)


def _unpatch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, pieces: int = 1, rank: int = 1
) -> torch.Tensor:
    """Transposed, every kernel exactly tiling its stride (``kernel == stride``, no dilation: un-patching, as in
    decoders): each output element is one tap's product, so col2im adds nothing, it only interleaves.

    ``rank`` 0 (the planner's own plan, :func:`convnd.selection.call_rank`): no transposed convolution. One GEMM
    per run of input rows gives every tap of every input position, then two copies interleave them
    (:func:`_unpatch_by_gemm`): 1.1-2.2x faster than the rank-1 calls on eleven tiling shapes, 1.25-1.45x on the
    bench's 4-d transposed workload, where oneDNN's 1-d transposed call did its GEMM at 78 GFLOP/s.
    ``rank`` 1-3 (a pinned rank: ``emulate``, ``rewrite``): the GEMM and the last ``rank`` dims' interleave are
    one native transposed call of that rank, the other dims' taps its output channels; their interleave is then
    one permute whose runs are whole output rows.
    ``pieces`` > 1 runs runs of input rows of the first dim, each one GEMM or native call whose result is copied
    into place (the memory budget: :func:`convnd.selection.workspace`).
    """
    n, batch, size, kernel = spec.dims, x.shape[0], tuple(x.shape[2:]), spec.kernel
    out_channels = weight.shape[1] * spec.groups
    full = (batch, out_channels, *(m * k for m, k in zip(size, kernel)))
    low = tuple(lo for lo, _ in spec.padding)
    out = spec.output_size(size)
    cropped = low != (0,) * n or out != full[2:]
    if rank == 0:
        fused = bias is not None and not cropped  # the bias rides in the GEMM (addmm, differentiable)
        y = _unpatch_by_gemm(x, weight, bias if fused else None, spec, pieces)
    else:
        fused = bias is not None and not cropped and lowering.out_allowed(x, weight, bias)  # the bias in the copy
        y = x.new_empty(full)
        for first, rows in row_runs(size[0], pieces):
            tiles, target = _native_tiles(x.narrow(2, first, rows), weight, spec, rank, y, first)
            if fused:
                torch.add(tiles, bias.reshape((-1,) + (1,) * (tiles.dim() - 2)), out=target)
            else:
                target.copy_(tiles)
            del tiles
    if not cropped:
        return y if fused else lowering.add_bias(y, bias)
    # crop the padding; output_padding rows past the last tap's reach are zeros
    short = tuple(max(lo + o - f, 0) for lo, o, f in zip(low, out, full[2:]))
    if any(short):
        y = F.pad(y, torch_pad_order(tuple((0, m) for m in short)))
    return lowering.add_bias(y[(Ellipsis, *(slice(lo, lo + o) for lo, o in zip(low, out)))].contiguous(), bias)


def _native_tiles(
    part: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, rank: int, y: torch.Tensor, first: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-patching's run of input rows ``part`` (from row ``first``) by native transposed ``rank``-d calls: its
    tiles, a view of them in the order of their place in ``y``, and that place (a view of ``y``, same shape).
    Rank 1 ran fastest of the native forms (0.25 ms for the 1-d call on the bench's 4-d transposed workload,
    0.36 and 0.38 for 2-d and 3-d ones)."""
    n, lead, kernel = spec.dims, spec.dims - rank, spec.kernel  # the first ``lead`` dims' taps become channels
    batch, size = part.shape[0], tuple(part.shape[2:])
    w = weight.reshape((part.shape[1], -1, *kernel[lead:]))  # the first dims' taps after the output channels
    native = make_spec(kernel[lead:], kernel[lead:], groups=spec.groups, transposed=True)
    # (B * rows * S_2 .. S_lead, C_in, *S_rest) -> (.., C_out * K_1 .. K_lead, *L) with L = S * K per native dim
    tiles = lowering.native(part.movedim(1, lead + 1).flatten(0, lead), w, None, native)
    tiles = tiles.reshape((batch, *size[:lead], y.shape[1], *kernel[:lead], *tiles.shape[2:]))
    # (B, C_out, rows, K_1, S_2, K_2, .., S_lead, K_lead, *L): the native result's dims in y's order
    order = (0, lead + 1, *(a for i in range(lead) for a in (1 + i, lead + 2 + i)), *range(2 * lead + 2, n + lead + 2))
    tiles = tiles.permute(order)
    return tiles, y.narrow(2, first * kernel[0], size[0] * kernel[0]).view(tiles.shape)


# fewer input channels per group: the GEMM as torch.mm on the input in place (one group, one sample) or torch.bmm,
# which ran 1.3-1.5x faster than the 1x1 call (and its channels_last copy of the input) at 4 and 8 channels, 0.9x at
# 16 (one group), and 1.2x at 8 per group of 2
POINTWISE_MIN_CHANNELS = 16
# un-patching's GEMM path interleaves each piece's result in this many runs of input rows: its transposed copy is a
# third of that result (the budget fits the bench's 4-d transposed workload in one piece: 1.3x faster than two)
COPY_RUNS = 3
# bytes -> a dtype of that size: un-patching's copies move a tile's row (the last kernel dim's taps) as one element
UNITS = {2: torch.int16, 4: torch.int32, 8: torch.int64, 16: torch.complex128}


def _unpatch_by_gemm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, pieces: int
) -> torch.Tensor:
    """Un-patching by GEMMs (N >= 2 dims; the output uncropped): per run of input rows, every tap of every input
    position from one GEMM (:func:`_columns`, ``bias`` added in it), then interleaved into place.

    The output interleaves positions and taps at every dim, so one permute copy would move single taps (its
    innermost run is the last kernel dim: 2 elements on the bench). Instead the last kernel dim's taps move as one
    element (a dtype of their size), first transposed within each row of positions (a block that stays in the L1
    cache), then permuted with whole output rows as runs: 0.07 + 0.06 ms on the bench's 4-d transposed workload,
    0.26 ms in one pass. The two copies run in :data:`COPY_RUNS` runs of input rows, so the transposed buffer is a
    third of the GEMM's result. Where a gradient is recorded (or torch.compile traces) each piece's tiles are copied
    out whole and the pieces joined: autograd would clone and zero the whole output's gradient for each copy into
    a view of the output (2.2 against 1.4-1.6 ms forward and backward on the bench's workload), and a bit-cast view
    carries no gradient.
    """
    n, kernel, batch, size = spec.dims, spec.kernel, x.shape[0], tuple(x.shape[2:])
    full = (batch, weight.shape[1] * spec.groups, *(m * k for m, k in zip(size, kernel)))
    in_place = lowering.out_allowed(x, weight, bias)
    unit = UNITS.get(kernel[-1] * x.element_size()) if in_place else None
    last = 1 if unit is not None else kernel[-1]  # the last kernel dim's taps per element moved
    y = x.new_empty(full) if in_place else None
    y_moved = y if unit is None else y.view(unit)
    parts = []
    for first, rows in row_runs(size[0], pieces):
        part = x if rows == size[0] else x.narrow(2, first, rows)  # (a narrow's gradient is a zeroed copy)
        cols, groups = _columns(part, weight, bias, spec.groups, math.prod(kernel))
        per_group = full[1] // groups
        # (G, B, rows, S_2 .. S_n-1, S_n, C_out/G * K_1 .. K_n-1, last)
        cols = (cols if unit is None else cols.view(unit)).view(
            (groups, batch, rows, *size[1:], per_group * math.prod(kernel[:-1]), last)
        )
        for sub, count in row_runs(rows, COPY_RUNS if in_place else 1):
            # the last input dim's positions after the taps: (.., C_out/G * K_1 .. K_n-1, S_n, last)
            run = cols if count == rows else cols.narrow(2, sub, count)
            blocks = run.transpose(-3, -2).contiguous()
            blocks = blocks.view((groups, batch, count, *size[1:-1], per_group, *kernel[:-1], size[-1] * last))
            # -> (B, G, C_out/G, S_1, K_1, .., S_n-1, K_n-1, S_n * K_n): the output's order
            tiles = blocks.permute((1, 0, n + 1, *(a for i in range(n - 1) for a in (2 + i, n + 2 + i)), 2 * n + 1))
            if in_place:
                y_moved.narrow(2, (first + sub) * kernel[0], count * kernel[0]).view(tiles.shape).copy_(tiles)
            else:
                parts.append(tiles.reshape((*full[:2], count * kernel[0], *full[3:])))
            del run, blocks, tiles  # before the next run's: one run's at a time
        del cols  # before the next piece's GEMM
    if in_place:
        return y
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _columns(
    part: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int, taps: int
) -> tuple[torch.Tensor, int]:
    """Every tap of every input position: (G, B * P, C_out/G * taps) and G, or where one call serves every group,
    (B * P, C_out * taps) and 1.

    From :data:`POINTWISE_MIN_CHANNELS` input channels per group, a native 1x1 2-d call on the positions as a
    channels_last batch, (B, C_in, P, 1) -> (B, C_out * taps, P, 1): oneDNN's, 1.1-1.8x faster than ``torch.mm``
    on the same operands from 16 channels, whose result lies in memory as (B * P, C_out * taps). Fewer: ``torch.mm``
    on the input in place (one group, one sample) or ``torch.bmm``.
    """
    batch, channels = part.shape[:2]
    per_group = channels // groups
    flat_shape = (batch, channels, math.prod(part.shape[2:]), 1)
    pointwise = make_spec((1, 1), groups=groups) if per_group >= POINTWISE_MIN_CHANNELS else None
    # (not where torch would run the 1x1 call on its own slow kernel: one small sample)
    if pointwise is not None and not lowering.doubled(flat_shape, pointwise):
        # output channels (G, C_out/G, *K): y's channels, then the taps
        w = weight.reshape((groups, per_group, -1)).transpose(1, 2).reshape((-1, per_group, 1, 1))
        b = None if bias is None else bias.repeat_interleave(taps)
        flat = part.reshape(flat_shape).contiguous(memory_format=torch.channels_last)
        cols = lowering.native(flat, w, b, pointwise)
        # a view where oneDNN wrote channels_last (a copy where torch's own 1x1 kernel or a meta tensor did not)
        return cols.permute(0, 2, 3, 1).contiguous().view((-1, w.shape[0])), 1
    w = weight.reshape((groups, per_group, -1))
    b = None if bias is None else bias.reshape((groups, 1, -1)).repeat_interleave(taps, dim=2)
    if groups == 1 and batch == 1:  # mm reads the transposed positions in place (bmm measured 5x slower on them)
        rows = part.reshape((channels, -1)).t()
        return (torch.mm(rows, w[0]) if b is None else torch.addmm(b[0], rows, w[0])), 1
    rows = part.reshape((batch, groups, per_group, -1)).permute(1, 0, 3, 2).reshape((groups, -1, per_group))
    return (torch.bmm(rows, w) if b is None else torch.baddbmm(b, rows, w)), groups


# --- fft ------------------------------------------------------------------------------


def fft(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int) -> torch.Tensor:
    """Convolution theorem: a circular correlation of the unpadded input, read back strided (exact up to rounding).

    Zero padding costs nothing here: the input sits at the start of a transform of size
    :func:`fft_sizes`, long enough that every tap reading padding wraps onto its zero tail,
    and output o is circular position ``o * stride - low`` (mod the size). The transforms
    of a small kernel skip most of its zero fill (see :func:`_transform`).
    """
    if x.shape[0] == 0:  # nothing to transform (oneMKL refuses empty transforms): the exact GEMM form's empty result
        return unfold(x, weight, bias, spec, rank)
    del rank
    if x.dtype in _NO_FFT:  # torch.fft has no half/bfloat16 kernels on CPU (and few on CUDA): transform in float32
        b = None if bias is None else bias.float()
        return fft(x.float(), weight.float(), b, spec, 0).to(x.dtype)
    if spec.transposed:
        x, weight, spec = as_forward(x, weight, spec)
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    n, groups = spec.dims, spec.groups
    batch, channels = x.shape[:2]
    axes = tuple(range(-n, 0))
    size = fft_sizes(spec, x.shape[2:])
    # dilation: the kernel spread over its window; a zero-filled window is exact
    w = weight
    if any(d > 1 for d in spec.dilation):
        w = weight.new_zeros((*weight.shape[:2], *spec.window))
        w[(Ellipsis, *(slice(None, None, d) for d in spec.dilation))] = weight
    # correlation: Y = X * conj(FFT(conj(w))); real signals keep only half the spectrum
    real = not (x.is_complex() or w.is_complex())
    spectrum_x = _transform(x, size, real).reshape((batch, groups, channels // groups, -1))
    spectrum_w = _transform(w.conj(), size, real, pruned=True).conj()
    spectrum_w = spectrum_w.reshape((groups, weight.shape[0] // groups, channels // groups, -1))
    spectrum_y = _channel_product(spectrum_x, spectrum_w)
    half = (*size[:-1], size[-1] // 2 + 1) if real else size
    spectrum_y = spectrum_y.reshape((batch, weight.shape[0], *half))
    y = torch.fft.irfftn(spectrum_y, s=size, dim=axes) if real else torch.fft.ifftn(spectrum_y, s=size, dim=axes)
    # output o is circular position o * stride - low: roll the low padding back in front, then stride
    y = torch.roll(y, tuple(lo for lo, _ in spec.padding), axes)
    out = spec.output_size(x.shape[2:])
    return lowering.add_bias(
        y[(Ellipsis, *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, spec.stride)))].contiguous(), bias
    )


_NO_FFT = (torch.float16, torch.bfloat16)


def fft_sizes(spec: ConvSpec, size: Sequence[int]) -> tuple[int, ...]:
    """Per dim, the transform size of :func:`fft`: the smallest fast size that holds the kernel's window,
    the input with its longer padding side, so every tap that reads padding lands on zeros
    (``n + max(low, high)``, not ``n + low + high``), and every output position (``n + low + high -
    window + 1``, longer when both sides pad at least a window)."""
    return tuple(
        _fast_size(max(m + fft_margin(lo, hi, window), window))
        for m, (lo, hi), window in zip(size, spec.padding, spec.window)
    )


def fft_margin(low: int, high: int, window: int) -> int:
    """How much longer than the input :func:`fft_sizes` makes a transform (before rounding to a fast size)."""
    return max(low, high, low + high - window + 1)


def _transform(t: torch.Tensor, size: tuple[int, ...], real: bool, pruned: bool = False) -> torch.Tensor:
    """``rfftn``/``fftn`` of ``t`` zero-filled to ``size`` over its trailing dims.

    ``pruned`` (for a kernel, much smaller than ``size``): the last two axes first, then the
    others, so the first transform runs over the kernel's extent of the leading axes instead of
    the full size (measured 1.4-2.4x faster for a 7^4 kernel in 15x15x20x20; staging every axis
    separately was slower: each non-trailing axis costs a copy).
    """
    n = len(size)
    first = (torch.fft.rfftn if real else torch.fft.fftn) if not pruned or n <= 2 else None
    if first is not None:
        return first(t, s=size, dim=tuple(range(-n, 0)))
    t = (torch.fft.rfftn if real else torch.fft.fftn)(t, s=size[-2:], dim=(-2, -1))
    return torch.fft.fftn(t, s=size[:-2], dim=tuple(range(-n, -2)))


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

    with L the transform size (:func:`fft_sizes`) and the norms over the whole input and weight (a
    deliberately loose constant). Observed errors are 10-100 times smaller; the tests
    check the bound in float32 and float64 against the float64 reference.
    """
    eps = torch.finfo(x.real.dtype if x.is_complex() else x.dtype).eps
    size = math.prod(fft_sizes(spec, x.shape[-spec.dims :]))
    norm = float(x.double().abs().pow(2).sum().sqrt() * weight.double().abs().pow(2).sum().sqrt())
    return (5 * math.log2(max(size, 2)) + 1) * eps * norm
