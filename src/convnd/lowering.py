"""Plans: how a :class:`ConvSpec` runs on torch's native 1-, 2- and 3-d kernels.

A plan fixes the *native rank* r, the rank of every torch convolution that runs,
and a *strategy* for the dims that rank cannot hold:

- ``direct``: N == r, one native call with the user's own arguments (bit-identical to torch).
- ``lift``: N < r, singleton spatial dims are prepended; still one native call.
- ``tapsum``: N > r, the leading N - r ("outer") dims are convolved by hand: for each
  outer kernel tap, the input positions that tap reads are folded into the batch and
  one native r-d convolution runs over the trailing dims; its result is added into the
  output positions that tap writes. Taps that would read only zero padding are skipped,
  so zero padding of outer dims costs no copy. The transposed convolution scatters the
  same way. No loop ever runs over output positions, only over outer kernel taps.
- ``fold``, ``spread``, ``foldspread``, ``band``, ``unfold``, ``fft``, ``winograd``, ``dft``: the other lowerings
  past the native rank (:mod:`convnd.strategies`, :mod:`convnd.winograd`, :mod:`convnd.dft`);
  :mod:`convnd.selection` chooses among them all from the shapes and from whether a gradient will be computed.

``convnd.conv`` (N > 3), ``convnd.emulate`` and ``convnd.rewrite`` all run through here.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

# the strategy modules call back into this one (native, the gather/scatter steps) at run time
from . import autograd, dft, selection, strategies, transposes, winograd
from .caching import trace_safe_cache
from .errors import fail
from .padding import pad_nd, torch_pad_order
from .spec import ConvSpec

NATIVE_RANKS = (1, 2, 3)
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class Plan:
    """How to run a spec.

    Attributes:
        native_rank: the spatial rank of every native torch convolution the plan runs.
        strategy: ``direct``, ``lift``, or for N > r one of :data:`LOWERINGS` (see the module
            docstring and :mod:`convnd.strategies`), or ``measure`` (time them once, cache the best).
        native_axes: N > r: the spatial dims the native kernel runs over, ascending; () means
            the trailing r. The others are lowered.
        max_memory: N > r: a byte budget for the plan's temporary buffers; the output is
            computed in pieces that fit (None: the default budget, 1.25x the input plus output
            size and at least 256 KiB; unbounded for a pinned plan, see :func:`convnd.chunking.budget`).
        custom_backward: N > r: gradients through :mod:`convnd.autograd` (lowered adjoint
            convolutions) instead of autograd through the lowering's slices.
        pinned: the caller chose ``native_rank`` (emulate, rewrite): the backward keeps it too.
    """

    native_rank: int
    strategy: str
    native_axes: tuple[int, ...] = ()
    max_memory: int | None = None
    custom_backward: bool = True
    pinned: bool = False


_DIRECT = {rank: Plan(rank, "direct") for rank in NATIVE_RANKS}


def plan(
    spec: ConvSpec,
    native_rank: int | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    weight_shape: Sequence[int] | None = None,
    channels_first: bool = True,
    training: bool = False,
) -> Plan:
    """Choose how to run ``spec``; ``native_rank`` forces the rank of the native kernels.

    Past the native rank the strategy, the native dims and the memory budget come from
    :func:`convnd.strategy` when it forces them, else from the cost model in
    :mod:`convnd.selection` when the operand shapes are given, else ``tapsum`` over the trailing dims.

    Args:
        spec: the convolution.
        native_rank: 1, 2 or 3; by default the spec's own rank, capped at 3.
        input_shape, weight_shape: the operands' shapes (batched or not), for the cost model.
        channels_first: whether the input's memory holds channels before spatial dims (torch's
            layout); False (a channels-last view) rules out ``band``, which would copy it to merge them.
        training: whether a gradient will be computed (the cost model weighs the backward where it differs).
    """
    rank = min(spec.dims, 3) if native_rank is None else native_rank
    if rank not in NATIVE_RANKS:
        fail("dims", native_rank, "1, 2 or 3", reason="torch has native convolutions of these ranks only")
    if spec.dims == rank:
        return _DIRECT[rank]  # prebuilt: this runs on every N <= 3 call, and Plan() costs a microsecond
    if spec.dims < rank:
        return Plan(rank, "lift")
    # a rank the caller chose (emulate, rewrite) promises the plain tap sum's native calls of that rank
    return selection.choose(
        spec,
        rank,
        input_shape,
        weight_shape,
        native_only=native_rank is not None,
        channels_first=channels_first,
        training=training,
    )


def execute(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, how: Plan
) -> torch.Tensor:
    """Run ``spec`` on checked operands following ``how``.

    Shape:
        x: (B, C_in, *spatial) or (C_in, *spatial); the output keeps x's batching.
    """
    if how.strategy == "direct":
        return native(x, weight, bias, spec)
    batched = x.dim() == spec.dims + 2
    if not batched:
        x = x.unsqueeze(0)
    if how.strategy == "lift":
        y = _lift(x, weight, bias, spec, how.native_rank)
    elif x.shape[0] == 0 or unread_dims(spec, tuple(x.shape[2:])):
        # nothing to convolve (an empty batch, or every output reading only padding): the strategies' reshapes
        # of an empty batch are ambiguous, and their graphs would miss x or the weight
        y = _bias_alone(x, weight, bias, spec)
    else:
        # contiguous like torch's own output (unfold's einsum can leave its result permuted: y.view would fail)
        y = autograd.run(x, weight, bias, spec, how).contiguous()
    return y if batched else y.squeeze(0)


@trace_safe_cache(maxsize=1024)
def unread_dims(spec: ConvSpec, size: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial dims along which no output of ``spec`` on a spatial input of ``size`` reads an input element
    (no tap of theirs is live, :func:`live_taps`): then the output is the bias alone. Other padding modes pad with
    input elements, so they always read it. Cached: every lowered call asks (6 us uncached on a 4-d kernel of 2,
    0.4 cached)."""
    if spec.padding_mode != "zeros":
        return ()
    return tuple(axis for axis, taps in enumerate(live_taps(spec, size)) if next(taps, None) is None)


def live_taps(spec: ConvSpec, size: Sequence[int]) -> tuple[Iterator[tuple[int, Window]], ...]:
    """Per spatial dim, the kernel taps that touch an input element on a spatial input of ``size``, each with its
    (input, output) slices (:func:`gather_window`; transposed, :func:`scatter_window`); a tap that reads only zero
    padding (transposed: lands only on the cropped margin) is left out.

    Lazily: a caller that only asks whether a dim has one computes no further window (under torch.compile every
    window compares symbolic sizes, and each comparison is a guard that can make a new size recompile).
    """
    step = scatter_window if spec.transposed else gather_window
    per_dim = zip(size, spec.output_size(size), spec.kernel, spec.stride, spec.dilation, spec.padding)
    return tuple(_live(step, n, o, k, s, d, lo) for n, o, k, s, d, (lo, _) in per_dim)


def _live(step, n: int, o: int, k: int, s: int, d: int, lo: int) -> Iterator[tuple[int, Window]]:
    """One dim's live taps (:func:`live_taps`): a function of its own, so each dim's generator keeps its values."""
    return ((t, w) for t in range(k) if (w := step(t, n, o, s, d, lo)) is not None)


def _bias_alone(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
    """The output of a batched convolution that reads no input element (an empty batch, or :func:`unread_dims`):
    zeros plus the bias, still a function of ``x`` and ``weight`` when a gradient is recorded, so that theirs are
    zeros as torch's native kernels give (a lowering that skipped every tap would leave them out of the graph: None,
    or no graph at all)."""
    out_channels = weight.shape[1] * spec.groups if spec.transposed else weight.shape[0]
    y = x.new_zeros((x.shape[0], out_channels, *spec.output_size(x.shape[2:])))
    if wants_grad(x, weight):
        # sums over empty views: exactly zero whatever x holds (0 * inf would be nan), and no copy of x
        y = y + (x.narrow(1, 0, 0).sum() + weight.narrow(0, 0, 0).sum())
    return add_bias(y, bias)


def lowered(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, how: Plan, pieces: int = 1
) -> torch.Tensor:
    """Run a batched N > r convolution with ``how.strategy``, its native dims moved to the back first.

    ``pieces`` > 1 (``fold``, ``foldspread``, ``spread``, ``winograd``, ``dft`` and un-patching ``unfold``, see
    :mod:`convnd.chunking`) splits their work: fold's and foldspread's folded batch into runs of output rows,
    spread's input into runs of frames, winograd's tiles into runs of tiles, dft's frequencies into runs of groups,
    un-patching's input into runs of rows.
    """
    order = selection.axis_order(spec.dims, how.native_rank, how.native_axes)
    if order != tuple(range(spec.dims)):
        back = tuple(order.index(a) for a in range(spec.dims))
        moved = replace(how, native_axes=())
        return move_axes(
            lowered(move_axes(x, order), move_axes(weight, order), bias, spec.select(order), moved, pieces), back
        )
    rank = selection.call_rank(spec, how)
    if pieces > 1:
        return LOWERINGS[how.strategy](x, weight, bias, spec, rank, pieces=pieces)
    return LOWERINGS[how.strategy](x, weight, bias, spec, rank)


def move_axes(t: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """Reorder the spatial dims (the trailing ``len(order)``) of ``t``."""
    lead = t.dim() - len(order)
    return t.permute((*range(lead), *(lead + a for a in order)))


def native(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
    """One torch convolution of rank ``spec.dims`` (1..3), exactly as torch.nn would call it.

    Non-zero padding modes pad first and convolve unpadded (what torch.nn's modules do);
    asymmetric zero padding pads the difference and passes the common part.
    """
    if spec.transposed:
        return _CONV_T[spec.dims](x, weight, bias, *_transposed_arguments(spec))
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    weight = _readable(weight)
    stride, padding, dilation = spec.native_arguments
    if padding is None:
        common = tuple(min(pair) for pair in spec.padding)
        x = F.pad(x, torch_pad_order(tuple((lo - c, hi - c) for (lo, hi), c in zip(spec.padding, common))))
        padding = common
    return _CONV[len(spec.kernel)](x, weight, bias, stride, padding, dilation, spec.groups)


def _transposed_arguments(spec: ConvSpec) -> tuple[Any, ...]:
    """torch's arguments after (input, weight, bias) for a transposed spec (symmetric zero padding)."""
    return spec.stride, tuple(lo for lo, _ in spec.padding), spec.output_padding, spec.groups, spec.dilation


def bound(spec: ConvSpec, weight: torch.Tensor) -> tuple[Callable[..., torch.Tensor], tuple[Any, ...]]:
    """:func:`native` of ``spec`` as ``(fn, arguments)``, run as ``fn(x, weight, bias, *arguments)``: torch's own
    function where the call is just that for a weight of this shape and these strides (zero padding, symmetric, a
    weight torch reads right as it is, see :func:`_readable`), else :func:`native` with the spec bound. The
    functional direct-call memo keeps it per (arguments, operand shapes, weight strides), so a repeated call is one
    torch call."""
    if spec.transposed:
        return _CONV_T[spec.dims], _transposed_arguments(spec)
    stride, padding, dilation = spec.native_arguments
    if spec.padding_mode == "zeros" and padding is not None and _readable(weight) is weight:
        return _CONV[len(spec.kernel)], (stride, padding, dilation, spec.groups)
    return functools.partial(native, spec=spec), ()


_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _readable(weight: torch.Tensor) -> torch.Tensor:
    """``weight``, or a fresh copy in its layout where a size-1 dim of it carries a stride that layout would not give.

    torch counts such a weight as dense (a size-1 dim's stride addresses nothing), so no copy normalizes it, and its
    CPU convolution (oneDNN, float32 and bfloat16; torch 2.13) then reads it wrongly: 22 of 1500 random weights
    with such strides gave wrong outputs, e.g. (6, 9, 3, 1, 1) strided (27, 1, 9, 1, 1) on a channels-last input.
    Lowerings make them (a reshaped or sliced weight with a kernel of 1 or one channel per group); a fresh copy
    in the same layout is read right. Transposed calls read them right (none of 1500).
    """
    if 1 not in weight.shape or not weight.is_cpu:
        return weight  # the common case first: this runs on every native call
    layout = _misread_layout(weight.shape, weight.stride())
    return weight if layout is None else weight.clone(memory_format=layout)


@trace_safe_cache(maxsize=1024)
def _misread_layout(shape: tuple[int, ...], stride: tuple[int, ...]) -> torch.memory_format | None:
    """The layout to copy a weight of this shape and these strides into (see :func:`_readable`), or None: it is read
    right as it is (its size-1 dims have the strides of its layout), or it is not dense (torch copies it itself).
    Cached: every native call with a size-1 weight dim asks (a single-channel one among them)."""
    # contiguous first: a weight dense in both layouts with channels-last's own strides, (2, 1, 3, 2) strided
    # (6, 1, 2, 1), is misread beside a contiguous input too (a depthwise one's copy stays bit-identical: tested)
    layouts = [torch.contiguous_format] + ([_LAST[len(shape)]] if len(shape) in _LAST else [])
    for layout in layouts:
        dense = _dense_strides(shape, layout)
        if all(s == d for n, s, d in zip(shape, stride, dense) if n != 1):  # dense in this layout
            return None if tuple(stride) == dense else layout
    return None


def _dense_strides(shape: Sequence[int], layout: torch.memory_format) -> tuple[int, ...]:
    """The strides of a dense tensor of ``shape`` in ``layout`` (channels last: channels fastest, then the
    spatial dims from the last, then the batch)."""
    fastest_first = range(len(shape) - 1, -1, -1)
    if layout is not torch.contiguous_format:
        fastest_first = (1, *range(len(shape) - 1, 1, -1), 0)
    strides, step = [0] * len(shape), 1
    for axis in fastest_first:
        strides[axis], step = step, step * max(shape[axis], 1)
    return tuple(strides)


def native_lowered(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
    """:func:`native` for the inner calls of a lowering, which may see a batch of one small image.

    torch sends a float32 CPU convolution of one small image (batch 1, N*C*D*H <= 20480,
    no groups) to its im2col kernel (``slow_conv3d``), measured 9x slower than oneDNN on a
    16-channel 16^3 image and holding a 27x-input buffer. Lowered pieces and edge taps
    make such calls, so they run as a batch of two (the image seen twice through a
    stride-0 view; the second result is dropped, so gradients stay exact): oneDNN's path,
    at worst twice a small call. Still ``aten.convolution``, so it traces and exports.
    """
    if _slow_single(x, spec):
        return native(x.expand((2, *x.shape[1:])), weight, bias, spec)[:1]
    return native(x, weight, bias, spec)


def _slow_single(x: torch.Tensor, spec: ConvSpec) -> bool:
    """Whether torch would send this call to its slow im2col kernel (see :func:`native_lowered`)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and doubled(tuple(x.shape), spec)


def doubled(shape: Sequence[int], spec: ConvSpec) -> bool:
    """Whether :func:`native_lowered` runs a float32 CPU input of ``shape`` as a batch of two: one small image,
    no groups, and a kernel torch does not send to oneDNN anyway (wider than 3 in its last two dims)."""
    large_kernel = spec.dims >= 2 and spec.kernel[-1] > 3 and spec.kernel[-2] > 3
    return shape[0] == 1 and spec.groups == 1 and math.prod(shape[:4]) <= 20480 and not large_kernel


def add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y + bias`` over the channel axis (dim 1), in place: every caller passes an output buffer of its own
    (a fresh result, never an input or a tensor autograd saved), so no extra output-sized pass is allocated."""
    return y if bias is None else y.add_(bias.reshape((-1,) + (1,) * (y.dim() - 2)))


def contiguous_with_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``add_bias(y.contiguous(), bias)`` for a ``y`` of the caller's own, the bias added in the copy's pass where no
    gradient is recorded (out= records none) and not under torch.compile (inductor fuses the add itself)."""
    if bias is None or y.is_contiguous() or not out_allowed(y, bias):
        return add_bias(y.contiguous(), bias)
    return torch.add(
        y, bias.reshape((-1,) + (1,) * (y.dim() - 2)), out=torch.empty_like(y, memory_format=torch.contiguous_format)
    )


def wants_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def out_allowed(*tensors: torch.Tensor | None) -> bool:
    """Whether a result computed from ``tensors`` may be written through ``out=`` (into a buffer or a view of one):
    no gradient is recorded (``out=`` records none) and torch.compile is not tracing (dynamo takes no strided
    ``out=``, inductor cannot lower one into a view, and both fuse such writes themselves)."""
    return not wants_grad(*tensors) and not torch.compiler.is_compiling()


def native_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, needs: tuple[bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input and weight gradients of ``native_lowered(x, weight, None, spec)`` (symmetric zero padding),
    both from one native backward call (``needs`` says which).

    A batch of one small image runs as two (the image and a zero gradient), for the reason
    :func:`native_lowered` gives; the second half's input gradient is dropped and adds
    nothing to the weight gradient.
    """
    single = _slow_single(x, spec)
    if single:
        x, grad = x.expand((2, *x.shape[1:])), torch.cat((grad, grad.new_zeros(grad.shape)))
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad,
        x,
        weight,
        None,
        spec.stride,
        tuple(lo for lo, _ in spec.padding),
        spec.dilation,
        False,
        (0,) * spec.dims,
        spec.groups,
        (needs[0], needs[1], False),
    )
    if single and grad_x is not None:
        grad_x = grad_x[:1]
    return grad_x, grad_w


def _lift(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int) -> torch.Tensor:
    """Run an N-d convolution as an r-d one (r > N) over singleton leading spatial dims."""
    extra = rank - spec.dims
    y = native(
        _insert_singletons(x, extra, spec.dims), _insert_singletons(weight, extra, spec.dims), bias, spec.lifted(extra)
    )
    return y.flatten(1, 1 + extra)


def _insert_singletons(t: torch.Tensor, count: int, dims: int) -> torch.Tensor:
    """Insert ``count`` size-1 dims in front of the last ``dims`` dims (a view)."""
    return t.reshape(t.shape[: t.dim() - dims] + (1,) * count + t.shape[t.dim() - dims :])


def _tapsum(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, rank: int
) -> torch.Tensor:
    """Convolve the leading N - r dims tap by tap, the trailing r natively (see module docstring)."""
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    n_outer = spec.dims - rank
    outer, inner = spec.split(rank)
    batch, channels = x.shape[:2]
    out_channels = weight.shape[1] * spec.groups if spec.transposed else weight.shape[0]
    out_size = spec.output_size(x.shape[2:])
    # outer dims in front of the batch, so a run of outer positions folds into the batch as a view
    to_front = (*range(2, 2 + n_outer), 0, 1, *range(2 + n_outer, 2 + spec.dims))
    from_front = tuple(to_front.index(a) for a in range(2 + spec.dims))
    step = scatter_window if spec.transposed else gather_window
    taps = tap_windows(step, outer, tuple(x.shape[2 : 2 + n_outer]), tuple(out_size[:n_outer]))
    taps = covering_first(taps, tuple(out_size[:n_outer]))
    full = bool(taps) and taps[0][1] is not None and _covers(taps[0][1], out_size)
    if channels_innermost(channels, spec):
        # channels innermost (input and running sum): each tap's slice is a channels_last batch that oneDNN convolves
        # without reorders, its result added in the same layout. Measured 1.1-1.4x faster with 16 or more channels
        # (depthwise about 3x per call), slower with 4 or 8, where oneDNN's blocked kernels win.
        last = (*range(2, 2 + n_outer), 0, *range(2 + n_outer, 2 + spec.dims), 1)
        back = (*range(n_outer + 1), spec.dims + 1, *range(n_outer + 1, spec.dims + 1))
        xp = transposes.permuted_copy(x, last).permute(back)
        # the full tap's result already lies in the running sum's layout: it becomes the sum, no copy at all
        yp = None if full else x.new_empty((*out_size[:n_outer], batch, *out_size[n_outer:], out_channels))
        yp = yp if yp is None else yp.permute(back)
    else:
        xp = x.permute(to_front).contiguous()
        yp = x.new_empty((batch, out_channels, *out_size)).permute(to_front)
    fresh = True
    for tap, windows in taps:
        if windows is None:
            continue  # this tap reads only zero padding
        xs = xp[tuple(src for src, _ in windows)]
        counts = xs.shape[:n_outer]
        folded = xs.reshape((math.prod(counts) * batch, channels, *xs.shape[n_outer + 2 :]))
        ys = native_lowered(folded, weight[(slice(None), slice(None), *tap)], None, inner)
        ys = ys.reshape((*counts, batch, out_channels, *ys.shape[2:]))
        if yp is None:
            yp, fresh = ys, False  # the full tap's result (a view in yp's layout: channels innermost)
        else:
            fresh = land(yp, tuple(dst for _, dst in windows), ys, fresh)
        del folded, ys  # before the next tap's buffers: one tap's at a time
    yp = yp.zero_() if fresh else yp
    return contiguous_with_bias(yp.permute(from_front), bias)  # channels_last sums: into the standard layout


def land(y: torch.Tensor, where: tuple[slice, ...], part: torch.Tensor, fresh: bool) -> bool:
    """Add ``part`` into ``y[where]``; returns False: ``y`` has been written.

    While ``y`` is ``fresh`` (uninitialized, nothing landed yet), a part that covers all of it (a centre tap's
    result) is copied in instead, which saves filling the output with zeros and reading them back; any other
    first part zeroes it first. The lowerings that add taps' results into their output start it with
    ``new_empty`` and land every part here (and zero it if nothing landed).
    """
    target = y[where]
    if fresh and target.shape == y.shape:
        target.copy_(part)
        return False
    if fresh:
        y.zero_()
    # add_ on the view, not `+=`: Python's `y[i] += v` also runs y[i] = ..., a copy that autograd rejects once the
    # indexed view is y itself (a slice covering a whole dim)
    target.add_(part)
    return False


def covering_first(taps: Sequence[tuple[Any, tuple[Window, ...] | None]], out: Sequence[int]) -> tuple[Any, ...]:
    """``taps`` ((tap, per-dim windows) pairs, as :func:`tap_windows` gives them) with the first tap whose windows
    cover all ``out`` positions of every dim (a centre tap) moved to the front: its result starts the output
    (:func:`land` copies it in), so no tap's order costs a fill with zeros."""
    full = next((i for i, (_, w) in enumerate(taps) if w is not None and _covers(w, out)), None)
    return tuple(taps) if full is None else (taps[full], *taps[:full], *taps[full + 1 :])


def channels_innermost(channels: int, spec: ConvSpec) -> bool:
    """Whether :func:`_tapsum` runs on channels-last copies (16 or more channels, forward)."""
    return channels >= 16 and not spec.transposed


def _covers(windows: tuple[Window, ...], out_size: Sequence[int]) -> bool:
    """Whether a tap's output slices (every outer dim) cover all of that dim's output positions."""
    return all(dst.start == 0 and dst.stop == n and dst.step in (None, 1) for (_, dst), n in zip(windows, out_size))


Window = tuple[slice, slice]

# N > r strategies by name: tapsum lives here, the others in convnd.strategies
LOWERINGS = {
    "tapsum": _tapsum,
    "fold": strategies.fold,
    "unfold": strategies.unfold,
    "fft": strategies.fft,
    "band": strategies.band,
    "spread": strategies.spread,
    "winograd": winograd.winograd,
    "foldspread": strategies.foldspread,
    "dft": dft.dft,
}


def gather_window(tap: int, size: int, out: int, stride: int, dilation: int, low: int) -> Window | None:
    """Along one outer dim: the input slice tap ``tap`` reads and the output slice it writes.

    Output o reads input ``o * stride + tap * dilation - low``; keep the o inside the input.
    """
    run = _strided_run(out, size, stride, tap * dilation - low)
    return None if run is None else (run[1], run[0])


def scatter_window(tap: int, size: int, out: int, stride: int, dilation: int, low: int) -> Window | None:
    """Transposed: the input slice tap ``tap`` spreads and the (strided) output slice it lands on.

    Input i lands on output ``i * stride + tap * dilation - low``; keep the i landing inside.
    """
    return _strided_run(size, out, stride, tap * dilation - low)


@trace_safe_cache(maxsize=1024)
def tap_windows(
    step, outer: ConvSpec, size: tuple[int, ...], out: tuple[int, ...], low_shift: int = 0
) -> tuple[tuple[tuple[int, ...], tuple[Window, ...] | None], ...]:
    """Each tap of ``outer``'s kernel with its per-dim (input, output) slices from ``step``
    (:func:`gather_window` or :func:`scatter_window`), None where the tap touches only padding,
    for ``size`` input and ``out`` output positions; ``low_shift`` moves the first dim's low
    padding (a piece of rows: fold's output rows, spread's input frames).

    Cached: pure arithmetic on shapes (a 5-d fold's 9 taps per piece: 4% of its time, measured A/B).
    """
    if low_shift:
        outer = replace(outer, padding=((outer.padding[0][0] + low_shift, 0), *outer.padding[1:]))
    return tuple((tap, _windows(step, tap, size, out, outer)) for tap in itertools.product(*map(range, outer.kernel)))


def _windows(step, tap, size, out, outer: ConvSpec) -> tuple[Window, ...] | None:
    """Per dim, the (source, destination) slices of one tap, or None when it touches only padding."""
    windows = tuple(
        step(t, n, o, s, d, lo)
        for t, n, o, s, d, (lo, _) in zip(tap, size, out, outer.stride, outer.dilation, outer.padding)
    )
    return None if any(w is None for w in windows) else windows


def _strided_run(count: int, limit: int, stride: int, offset: int) -> Window | None:
    """The positions p in [0, count) whose image ``p * stride + offset`` lies in [0, limit), and their images."""
    first = max(0, _ceil_div(-offset, stride))
    last = min(count - 1, (limit - 1 - offset) // stride)
    if last < first:
        return None
    start = first * stride + offset
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
