"""Which lowering runs a convolution past the native rank: a cost model, a measured cache, a switch.

- :func:`strategy` (exported as ``convnd.strategy``) forces a strategy, the native dims
  and/or a memory budget inside a ``with`` block.
- :func:`choose` is the default: the native dims are the largest ones; the strategy is
  the cheapest by :func:`cost`, a two-term model (arithmetic at a rate that grows with
  the GEMM's reduction length, plus memory traffic), calibrated on a 2-core CPU, which
  also weighs whether a gradient will be computed (``training``) where the backward differs.
- ``strategy("measure")`` times every strategy once per (spec, shapes, dtype, device)
  and caches the fastest, as ``torch.backends.cudnn.benchmark`` does.

Only shapes (ints) are read here, never tensor values, so plans are traceable by
``torch.compile`` and ``torch.export``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from . import chunking, dft, lowering, strategies, winograd
from .caching import trace_safe_cache
from .errors import fail
from .spec import ConvSpec

STRATEGIES = ("tapsum", "fold", "unfold", "fft", "band", "spread", "winograd", "foldspread", "dft")
_FORCED: list[dict[str, Any]] = []
_MEASURED: dict[tuple[Any, ...], str] = {}


@contextlib.contextmanager
def strategy(
    name: str | None = None,
    *,
    native_axes: Sequence[int] | None = None,
    max_memory: int | None = None,
    custom_backward: bool | None = None,
) -> Iterator[None]:
    """Force how convolutions past the native rank run inside a ``with`` block.

    Args:
        name: ``tapsum``, ``fold``, ``unfold``, ``fft``, ``band``, ``spread``, ``winograd``, ``foldspread``,
            ``dft``, or ``measure`` (time each once and cache the fastest); None keeps the cost model's choice.
        native_axes: the spatial dims the native kernels run over (as many as the native rank).
        max_memory: a byte budget for temporary buffers; outputs are computed in pieces within it.
        custom_backward: True: gradients through :mod:`convnd.autograd`; False: autograd through the
            lowering; None: the planner's rule (:func:`custom_backward_pays`).

    Example:
        >>> x, w = torch.randn(1, 2, 5, 5, 5, 5), torch.randn(3, 2, 3, 3, 3, 3)
        >>> with strategy("fold", max_memory=1 << 20):
        ...     y = convnd.conv(x, w)
    """
    if name is not None and name not in (*STRATEGIES, "measure"):
        fail("strategy", name, "one of " + ", ".join(repr(s) for s in (*STRATEGIES, "measure")))
    if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory < 1):
        fail(
            "max_memory",
            max_memory,
            "a positive int (bytes)",
            kind="type" if not isinstance(max_memory, int) else "value",
        )
    axes = None if native_axes is None else tuple(sorted(native_axes))
    if axes is not None and (len(set(axes)) != len(axes) or any(not isinstance(a, int) or a < 0 for a in axes)):
        fail("native_axes", native_axes, "distinct spatial dim indices >= 0")
    _FORCED.append(
        {"strategy": name, "native_axes": axes, "max_memory": max_memory, "custom_backward": custom_backward}
    )
    try:
        yield
    finally:
        _FORCED.pop()


def choose(
    spec: ConvSpec,
    rank: int,
    input_shape: Sequence[int] | None,
    weight_shape: Sequence[int] | None,
    *,
    native_only: bool = False,
    channels_first: bool = True,
    training: bool = False,
) -> lowering.Plan:
    """The plan for N > r: forced settings first, then the cost model (tapsum without shapes).

    ``channels_first`` False (a channels-last input) leaves ``band`` out of the cost model's candidates.
    ``training``: a gradient will be computed, which the cost model weighs (see :func:`cost`).

    ``native_only`` is for callers that chose the rank (``emulate``, ``rewrite``): their plans
    are the plain tap sum over the trailing dims unless :func:`strategy` says otherwise, so the
    native calls they promise (and ``explain`` counts) are the ones that run.
    """
    forced = _FORCED[-1] if _FORCED else {}
    if input_shape is not None and symbolic(input_shape):
        input_shape = None  # a traced symbolic size takes the shape-free plan (see symbolic)
    return _choose(
        spec,
        rank,
        None if input_shape is None else tuple(input_shape),
        None if weight_shape is None else tuple(weight_shape),
        tuple(forced.get(key) for key in _FORCED_KEYS),
        native_only,
        channels_first,
        training,
    )


_FORCED_KEYS = ("strategy", "native_axes", "max_memory", "custom_backward")


@trace_safe_cache(maxsize=4096)
def _choose(
    spec: ConvSpec,
    rank: int,
    input_shape: tuple[int, ...] | None,
    weight_shape: tuple[int, ...] | None,
    forced: tuple[Any, ...],
    native_only: bool,
    channels_first: bool,
    training: bool,
) -> lowering.Plan:
    """:func:`choose` on hashable arguments, the forced settings as a tuple of :data:`_FORCED_KEYS` (cached: a
    lowered call's plan costs tens of microseconds of arithmetic, the same on every call of a layer)."""
    name, axes, budget, custom = forced
    if axes is not None and (len(axes) != rank or axes[-1] >= spec.dims):
        fail("native_axes", axes, f"{rank} distinct spatial dims below {spec.dims}", reason=f"native rank {rank}")
    if native_only or input_shape is None or weight_shape is None:
        name = name or "tapsum"
        custom = custom_backward_pays(spec, rank, name) if custom is None else custom
        return lowering.Plan(rank, name, axes or (), budget, custom, pinned=native_only)
    x_shape = _batched(input_shape, spec)
    base = lowering.Plan(rank, "tapsum", axes or largest_axes(x_shape[2:], rank), budget)
    if name is None:
        candidates = STRATEGIES if channels_first else tuple(s for s in STRATEGIES if s != "band")
        name = cheapest(spec, base, x_shape, tuple(weight_shape), candidates, training)
    how = running(base, name, spec, x_shape, axes is not None)
    if custom is None:
        macs = _geometry(spec, base, x_shape, tuple(weight_shape))["macs"]
        custom = custom_backward_pays(spec, how.native_rank, name, macs)
    return replace(how, custom_backward=custom)


def running(
    how: lowering.Plan, name: str, spec: ConvSpec, x_shape: Sequence[int], forced_axes: bool = False
) -> lowering.Plan:
    """``how`` with strategy ``name``. Un-patching (:func:`unpatches`) interleaves the largest dim last (its GEMM's
    copies then move whole output rows, :func:`convnd.strategies._unpatch`) and keeps rank 1 for its backward's
    native calls, unless the rank is pinned (``emulate``, ``rewrite``) or :func:`strategy` forced the native dims
    (``forced_axes``)."""
    if name == "unfold" and unpatches(spec) and not how.pinned and not forced_axes:
        return replace(how, strategy=name, native_rank=1, native_axes=largest_axes(x_shape[2:], 1))
    return replace(how, strategy=name)


@trace_safe_cache(maxsize=4096)
def cheapest(
    spec: ConvSpec,
    how: lowering.Plan,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    candidates: tuple[str, ...] = STRATEGIES,
    training: bool = False,
) -> str:
    """The strategy the cost model prefers (cached: it is pure arithmetic on hashable arguments)."""
    costs = [chunked_cost(s, spec, how, x_shape, w_shape, training) for s in candidates]
    return candidates[costs.index(min(costs))]  # not min(key=...): torch.compile cannot trace that


def custom_backward_pays(spec: ConvSpec, rank: int, name: str = "tapsum", macs: int | None = None) -> bool:
    """Whether :mod:`convnd.autograd` beats autograd through the lowering ``name`` (``macs``: the
    convolution's multiply-adds, when the shapes are known).

    ``fold``, ``spread``, ``winograd`` and ``foldspread`` (forward): from :data:`FOLD_BACKWARD_MIN_MACS`
    multiply-adds on (or whatever the size, without shapes). Their backward is fold's, one native backward call per
    piece on the rebuilt folded input (:func:`convnd.strategies.fold_backward`), or the phase backward
    (:func:`phase_backward_pays`), where autograd
    through fold also copies the whole folded gradient once per tap and through spread runs a
    plain-layout backward: 1.3-1.9x faster from 70M multiply-adds up; below, its fixed cost
    (about 0.2 ms here) loses to autograd through fold under about 20M and through spread
    under about 2M (forward+backward, side by side). Through foldspread, from four 5-d shapes of 4-16
    channels (18M-860M multiply-adds): the custom backward 1.2x faster on the bench's 5d, 1.08x on one,
    level at 18M, 0.84-0.94x on two; priced as fold's. Through dft, on the bench's 7-wide kernel (283M
    multiply-adds): the custom backward 66 ms forward+backward, autograd through dft 118; its threshold is
    spread's, not measured for dft on small shapes.
    Otherwise: for kernels wider than 3 in a lowered dim. Measured side by side (README,
    forward+backward): with 3-wide kernels autograd through the lowering was 1.1-2x
    faster than the lowered adjoint (its per-tap native backward computes both gradients
    in one call on slices it already holds); with the 7-wide kernel the adjoint was 2x
    faster. The custom backward always holds less memory (only input and weight).
    """
    if name in FOLD_BACKWARD_MIN_MACS and not spec.transposed:
        return macs is None or macs >= FOLD_BACKWARD_MIN_MACS[name]
    return max(spec.kernel[: spec.dims - rank], default=0) > 3


FOLD_BACKWARD_MIN_MACS = {
    "fold": 20_000_000,
    "spread": 2_000_000,
    "winograd": 20_000_000,
    "foldspread": 20_000_000,
    "dft": 2_000_000,
}


def phase_backward_pays(x_shape: Sequence[int], w_shape: Sequence[int], out_numel: int) -> bool:
    """Whether a ``fold``, ``spread``, ``foldspread`` or ``winograd`` plan's gradients come from
    :func:`convnd.strategies.phase_backward` rather than :func:`convnd.strategies.fold_backward`: at
    least :data:`PHASE_MIN_CHANNELS` input channels per group and an output no larger than the input.

    Phase's buffers scale with the output, fold's with the input, and phase's native call sees
    the plain input channels where fold's sees them times the taps. Measured A/B (both gradients,
    ten 4-d shapes): 1.35-1.47x faster with stride 2 and 16 channels, 1.1x on the bench's 4d-wide,
    1.0-1.12x with 32 channels; 0.63-0.81x with 4 or 8 input channels (stride 2 included), 0.89x
    where the output is twice the input.
    """
    return w_shape[1] >= PHASE_MIN_CHANNELS and out_numel <= math.prod(x_shape)


PHASE_MIN_CHANNELS = 16


@trace_safe_cache(maxsize=4096)
def phase_pieces(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int], itemsize: int
) -> int:
    """How many runs of frames (first outer dim) each phase of :func:`convnd.strategies.phase_backward` runs in,
    so that one run's buffers (the gathered output gradient, the phase's input and its gradient) fit the
    plan's budget; one frame per run at most. Bounded above by the largest phase's frames and taps."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    moved, n_outer, inner_shape = g["spec"], g["n_outer"], g["inner_shape"]
    outer = moved.select(range(n_outer))
    frames = [math.ceil(n / s) for n, s in zip(g["outer_shape"], outer.stride)]
    taps = math.prod([math.ceil(k * d / s) for k, d, s in zip(outer.kernel, outer.dilation, outer.stride)])
    out_inner = math.prod(moved.select(range(n_outer, moved.dims)).output_size(inner_shape))
    buffers = taps * g["out_channels"] * out_inner + 2 * g["channels"] * math.prod(inner_shape)
    per_frame = g["batch"] * math.prod(frames[1:]) * buffers
    fit = max(1, int(chunking.budget_bytes(g["in"], g["out"], itemsize, how) // (per_frame * itemsize)))
    return math.ceil(frames[0] / min(fit, frames[0]))


def symbolic(shape: Sequence[Any]) -> bool:
    """Whether a traced size is a ``torch.SymInt`` (dynamic shapes, an export ``Dim``).

    The cost model compares costs, so on symbolic sizes it would add a guard per comparison
    (failing export's range check for a ``Dim``): such traces take the shape-free plan. Dynamo
    shows symbolic sizes to Python as ints, so under ``torch.compile(dynamic=True)`` the cost
    model runs and its choices become guards (a recompile when one flips).
    """
    return any(isinstance(size, torch.SymInt) for size in shape)


def _batched(shape: Sequence[int], spec: ConvSpec) -> tuple[int, ...]:
    shape = tuple(shape)
    return shape if len(shape) == spec.dims + 2 else (1, *shape)


def largest_axes(spatial: Sequence[int], rank: int) -> tuple[int, ...]:
    """The ``rank`` largest spatial dims (the later one on ties), ascending: they stay native."""
    # picked by comparisons, not sorted((size, axis)): torch.compile cannot sort symbolic sizes
    left, chosen = list(range(len(spatial))), []
    for _ in range(rank):
        best = left[0]
        for axis in left[1:]:
            if spatial[axis] >= spatial[best]:  # the later axis wins a tie
                best = axis
        left.remove(best)
        chosen.append(best)
    return tuple(sorted(chosen))


def axis_order(dims: int, rank: int, native_axes: tuple[int, ...]) -> tuple[int, ...]:
    """Lowered dims first, native dims last (both ascending)."""
    native = native_axes or tuple(range(dims - rank, dims))
    return (*(a for a in range(dims) if a not in native), *native)


def chunk_axis(dims: int, how: lowering.Plan) -> int:
    """The spatial dim a too-large output is split along: the first lowered one."""
    return axis_order(dims, how.native_rank, how.native_axes)[0]


# --- the model --------------------------------------------------------------------------


@trace_safe_cache(maxsize=4096)
def _geometry(spec: ConvSpec, how: lowering.Plan, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> dict[str, Any]:
    """Sizes the model reads, with the native dims moved to the back."""
    order = axis_order(spec.dims, how.native_rank, how.native_axes)
    spec = spec.select(order)
    spatial = tuple(x_shape[2 + a] for a in order)
    n_outer = spec.dims - how.native_rank
    out = spec.output_size(spatial)
    batch, channels = x_shape[:2]
    out_channels = w_shape[1] * spec.groups if spec.transposed else w_shape[0]
    per_group_in = channels // spec.groups
    return {
        "spec": spec,
        "n_outer": n_outer,
        "in": batch * channels * math.prod(spatial),
        "out": batch * out_channels * math.prod(out),
        "outer_taps": math.prod(spec.kernel[:n_outer]),
        "inner_taps": math.prod(spec.kernel[n_outer:]),
        "outer_out": math.prod(out[:n_outer]),
        "first_out": out[0],
        # spread runs over these (after a padding mode's explicit padding, which it applies first)
        "first_in": spatial[0] + (sum(spec.padding[0]) if spec.padding_mode != "zeros" else 0),
        "outer_rest": math.prod(spatial[1:n_outer]),  # frames of the other outer dims
        "inner_shape": spatial[n_outer:],
        "outer_shape": spatial[:n_outer],
        "weight": math.prod(w_shape),
        "outer_in": math.prod(spatial[:n_outer]),
        "inner_in": math.prod(spatial[n_outer:]),
        "batch": batch,
        "channels": channels,
        "out_channels": out_channels,
        "per_group_in": per_group_in,
        "per_group_out": out_channels // spec.groups,
        # strategies.fft_sizes before rounding up to a fast size (no comparisons of sizes: they would be guards)
        "fft_size": math.prod(
            [m + strategies.fft_margin(lo, hi, w) for m, (lo, hi), w in zip(spatial, spec.padding, spec.window)]
        )
        if not spec.transposed
        else math.prod(out) + math.prod(spec.window),
        "macs": batch
        * out_channels
        * per_group_in
        * math.prod(spec.kernel)
        * math.prod(out if not spec.transposed else spatial),
        # band: every (output, input) pair of outer positions, per inner tap and inner output position
        "band_macs": (
            batch * channels * (out_channels // spec.groups) * math.prod(spatial) * math.prod(out[:n_outer])
            if spec.transposed
            else batch * out_channels * per_group_in * math.prod(out) * math.prod(spatial[:n_outer])
        )
        * math.prod(spec.kernel[n_outer:]),
        "band_weight": out_channels
        * per_group_in
        * math.prod(out[:n_outer])
        * math.prod(spatial[:n_outer])
        * math.prod(spec.kernel[n_outer:]),
        # winograd: one transformed frame set (a frame per tile of m output frames) and its products
        "winograd_in": batch * channels * math.ceil(out[0] / winograd.tile(out[0])) * math.prod(spatial[n_outer:]),
        "winograd_out": batch * out_channels * math.ceil(out[0] / winograd.tile(out[0])) * math.prod(out[n_outer:]),
        # dft: the spectrum of the first outer dim (L / 2 groups of two halves: L frames) and its products
        "dft_in": batch * channels * _dft_length(spatial[0], spec.padding[0]) * math.prod(spatial[n_outer:]),
        "dft_out": batch * out_channels * _dft_length(spatial[0], spec.padding[0]) * math.prod(out[n_outer:]),
        # and the kernel's spectra: per frequency group a 2 x 2 block of (C_out, C/G, *inner kernel) weights
        "dft_weight": 2
        * _dft_length(spatial[0], spec.padding[0])
        * out_channels
        * per_group_in
        * math.prod(spec.kernel[n_outer:]),
        # spread's native output: every outer tap's slab of every input frame (output-sized otherwise); a forward
        # one over strided outer dims computes per phase only the taps that read it (strategies._spread_phases)
        "slabs": batch
        * out_channels
        * math.prod(out[n_outer:])
        * math.prod(
            [  # a list, not a generator: dynamo cannot pass a generator to math.prod
                n * k if spec.transposed else _phase_products(n, k, s, d, lo)
                for n, k, s, d, (lo, _) in zip(spatial, spec.kernel, spec.stride, spec.dilation, spec.padding[:n_outer])
            ]
        ),
        # foldspread: the folded input (the outer dims but the last folded, every input frame of the last) and the
        # slabs (the last outer dim's taps of each of those frames' outputs)
        "foldspread_in": batch
        * channels
        * math.prod(spec.kernel[: n_outer - 1])
        * math.prod(out[: n_outer - 1])
        * math.prod(spatial[n_outer - 1 :]),
        "foldspread_slabs": batch
        * out_channels
        * spec.kernel[n_outer - 1]
        * math.prod(out[: n_outer - 1])
        * spatial[n_outer - 1]
        * math.prod(out[n_outer:]),
        # what unfold and fft compute: a transposed convolution as the forward one over zero-spaced input
        "dense_macs": batch * out_channels * per_group_in * math.prod(spec.kernel) * math.prod(out),
    }


def _dft_length(size: int, padding: tuple[int, int]) -> int:
    """:func:`convnd.dft.length` of the first outer dim (after a padding mode's explicit padding, the same)."""
    return dft.length(size, *padding)


def _phase_products(size: int, kernel: int, stride: int, dilation: int, low: int) -> int:
    """Along one outer dim: (frame, tap) pairs where the tap reads the frame's phase, summed over phases
    (``size * kernel`` with stride 1; :func:`convnd.strategies.phase_taps`)."""
    return sum(
        [
            len(range(r, size, stride)) * len(taps)
            for r, taps in enumerate(strategies.phase_taps(stride, dilation, kernel, low))
        ]
    )


def workspace(name: str, spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int]) -> int:
    """Elements of temporary buffers strategy ``name`` allocates for the whole convolution (an estimate).

    A native call holds its own copies too (oneDNN reorders its input and output into
    blocked layouts): counted as one input and two outputs per call, as measured with
    peak RSS (see ``convnd.bench.peak_extra_memory``).
    """
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    native = g["in"] + 2 * g["out"]
    if name == "tapsum":
        if lowering.channels_innermost(g["channels"], g["spec"]):
            # the input's channels-last copy, the running sum and one tap's result; oneDNN reads and writes
            # channels-last batches in place (measured peak of the bench's depthwise whole: 5% below this)
            return g["in"] + 2 * g["out"]
        # outer dims moved in front, the output and one tap's result, the native copies
        return g["in"] + 2 * g["out"] + native
    if name == "spread" or (name == "fold" and g["spec"].transposed):
        # per run of input frames, its input and the native call's slabs three times (oneDNN's blocked copies);
        # the weight with its taps moved, twice. Fitted (0-14% above measured peaks) while a leftover view kept the
        # previous run's slabs alive; without it the large-kernel workload's one-frame runs peak at about half this
        # (README, Memory). The output accumulates in place: not counted
        return g["in"] + 3 * g["slabs"] + 2 * g["weight"]
    if name == "fold":
        # the folded input and the native result: channels_last, oneDNN reads and writes both in place
        # (measured peaks of the bench's fold workloads: within 7% of this, the output not counted)
        folded = g["batch"] * g["channels"] * g["outer_taps"] * g["outer_out"] * g["inner_in"]
        return folded + g["out"]
    if name == "foldspread":
        if not strategies.foldspread_applies(g["spec"], how.native_rank):
            return workspace("fold", spec, how, x_shape, w_shape)
        # the folded input and the slabs, and oneDNN's copies of both (its blocked layouts): fitted as spread's was,
        # with the previous run's slabs alive; the bench's 5d in runs of two rows now peaks at about 0.65x this (the
        # output accumulates in place: not counted)
        return 2 * (g["foldspread_in"] + g["foldspread_slabs"])
    if name == "winograd":
        return _winograd_workspace(g, whole=True)
    if name == "dft":
        # the spectrum and its channel-grouped copy, the products, the kernel's spectra, and the output's
        # accumulator (the products' inverse transform is added into it in place). Fresh-process peaks of the
        # bench's large-kernel workload: whole 2.94x input + output, 14% below this; in its 3 runs 1.10x, 3% below
        # this run's share (README)
        return 2 * g["dft_in"] + g["dft_out"] + g["dft_weight"] + g["out"]
    if name == "band":
        # the banded weight, oneDNN's reordered copy of it, and the native call's copies of its merged input and output
        return 2 * g["band_weight"] + native
    if name == "unfold":
        if unpatches(g["spec"]) and not how.pinned:  # (the GEMMs of call_rank 0, whatever strategy how names)
            # un-patching by GEMMs: the input's channels_last copy and the GEMM's result, then that result and one
            # run of its transposed copy (strategies._unpatch_by_gemm; a whole piece's where a piece is one row)
            return max(g["in"] + g["out"], g["out"] + g["out"] // strategies.COPY_RUNS)
        if unpatches(g["spec"]):
            # by native calls of a pinned rank: the input moved, the native call's result and oneDNN's copy of it
            # (measured peak of the bench's 4d-transposed in one piece, at rank 1: within 1% of this)
            return g["in"] + 2 * g["out"]
        if g["spec"].transposed:
            # every tap's columns of every input position; col2im adds them into a zeroed output
            return g["in"] + g["macs"] // max(g["per_group_in"], 1) + g["out"]
        return g["dense_macs"] // max(g["per_group_out"], 1) + g["out"]
    # fft: input, output and weight spectra (complex halves, about one real element per point) and the inverse
    per_point = g["batch"] * (g["channels"] + 2 * g["out_channels"]) + g["out_channels"] * g["per_group_in"]
    return 2 * per_point * g["fft_size"] + g["in"]  # x2: complex temporaries of the product, measured


def cost(
    name: str,
    spec: ConvSpec,
    how: lowering.Plan,
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    training: bool = False,
) -> float:
    """Estimated seconds for strategy ``name`` on a CPU: arithmetic at a reduction-dependent rate plus traffic.

    The forward's; ``training`` (a gradient will be computed) only drops the depthwise tap sum's own rate,
    whose native backward is torch's slow depthwise kernel (see :func:`_depthwise_channels_last`).
    """
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    traffic = workspace(name, spec, how, x_shape, w_shape) * _SECONDS_PER_ELEMENT
    flops = 2 * g["macs"]
    inner = g["per_group_in"] * g["inner_taps"]
    taps = g["outer_taps"] * g["inner_taps"]
    if name == "tapsum":
        calls = g["outer_taps"]
        if _depthwise_channels_last(g) and not training:
            # oneDNN's depthwise kernel on channels-last batches, vectorised over the channels (measured at about
            # twice _PEAK in the bench's depthwise: 3 calls, 0.57 ms; priced at _PEAK), then the input copied in,
            # each tap's result added and the sum copied out. Fitted to six stride-1 depthwise shapes (16-128
            # channels, kernels 3 and 5): fastest on five (1.1-10x band, 1.1-1.4x winograd); band 1.2x faster on
            # 16 channels of 8^4
            moved = g["in"] + g["out"] * (calls + 1)
            return flops / _PEAK + moved * _SECONDS_PER_ELEMENT + calls * _CALL
        rate = _rate(inner, g["per_group_out"], g["per_group_in"])
        return flops / rate + traffic * calls / 2 + calls * _CALL
    if name == "spread" or (name == "fold" and g["spec"].transposed):
        # the outer taps are the native call's extra output channels (a forward one over strided outer dims: per
        # phase, only the taps that read it, counted in "slabs"), then each slab is added into place
        rate = _rate(inner, g["per_group_out"] * g["outer_taps"], g["per_group_in"])
        native = g["macs"] if g["spec"].transposed else g["slabs"] * g["per_group_in"] * g["inner_taps"]
        return 2 * native / rate + traffic + _CALL
    if name == "fold":  # the outer taps are the native call's extra input channels
        rate = _rate(inner * g["outer_taps"], g["per_group_out"], g["per_group_in"] * g["outer_taps"])
        if g["per_group_in"] == 1 < g["spec"].groups:
            rate /= 8  # folding taps makes a depthwise weight merely grouped: oneDNN's depthwise kernel is lost
        if any(s > 1 for s in g["spec"].stride[: g["n_outer"]]):
            # strided outer dims: the folded buffer is gathered frame by frame from every stride-th frame, twice
            # the traffic it is counted at. Fitted to the bench's 4d-strided with other work between calls:
            # fold 1.62-1.70 ms, spread's phases 1.41-1.50 ms (in a tight loop both 1.4-1.5 ms)
            traffic *= 2
        return flops / rate + traffic + _CALL
    if name == "foldspread":  # the fold taps as extra input channels, the last outer dim's taps as extra outputs
        if not strategies.foldspread_applies(g["spec"], how.native_rank):
            return math.inf
        fold_taps, k_last = g["outer_taps"] // g["spec"].kernel[g["n_outer"] - 1], g["spec"].kernel[g["n_outer"] - 1]
        reduction = g["per_group_in"] * fold_taps
        rate = _rate(inner * fold_taps, g["per_group_out"] * k_last, reduction)
        native = g["foldspread_slabs"] * reduction * g["inner_taps"]
        return 2 * native / rate + traffic + _CALL
    if name == "winograd":  # m + 2 native calls per tile of m output frames (F(m, 3)), transforms as matrix products
        if not winograd.applies(g["spec"], how.native_rank):
            return math.inf
        rate = _rate(inner, g["per_group_out"], g["per_group_in"])
        window = winograd.tile(g["first_out"]) + 2  # transformed frames (native calls) per tile
        native = 2 * g["per_group_in"] * g["inner_taps"] * window * g["winograd_out"]
        # the input laid out frame-major, the transformed frames written, the products copied into the workspace
        # and read by A^T, the output's frames copied into place
        passes = 2 * g["in"] + 2 * window * g["winograd_in"] + 3 * window * g["winograd_out"] + 3 * g["out"]
        return native / rate + traffic + passes * _SECONDS_PER_ELEMENT + window * _CALL
    if name == "dft":  # one grouped native call over L / 2 frequency groups, each a complex product as a real block
        if not dft.applies(g["spec"], how.native_rank):
            return math.inf
        per_in, per_out = 2 * g["per_group_in"], 2 * g["per_group_out"]
        rate = _rate(per_in * g["inner_taps"], per_out, per_in)
        native = 2 * g["dft_out"] * per_in * g["inner_taps"]  # 2 L single-frame products against k * out
        # the transforms: matrix products over the frames, L rows against each input frame and each output frame
        # (skinny: priced at a quarter of the GEMM peak), the copy that groups the spectrum's channels, the products
        # written, and the output's one copy out of the accumulator's frame-major layout
        frames_in, frames_out = g["outer_shape"][0], g["first_out"]
        transforms = 2 * (g["dft_in"] * frames_in + g["dft_out"] * frames_out)
        passes = g["in"] + 3 * g["dft_in"] + g["dft_out"] + 2 * g["out"]
        return native / rate + transforms / (_PEAK / 4) + traffic + passes * _SECONDS_PER_ELEMENT + _CALL
    if name == "band":  # outer positions as channels: a deeper, wider GEMM over the band's mostly-zero terms
        band_flops = 2 * g["band_macs"]
        rate = _rate(inner * g["outer_in"], g["per_group_out"] * g["outer_out"], g["per_group_in"] * g["outer_in"])
        return band_flops / (rate * _BAND_FILL) + traffic + _CALL
    if name == "unfold":
        if unpatches(g["spec"]):
            # un-patching: one GEMM (strategies._columns) at a flat rate, then two copies of the output, 2.2x
            # slower per element where the last kernel dim's taps cannot move as one element (a gradient recorded,
            # or no dtype of their size: 3 float32 taps). Fitted to nine tiling shapes (4-128 channels, tiles of 2
            # and 3) against spread's price there: unfold ran 1.1-2x faster on eight, level on 32 channels, tile 3
            moved = 1.1 if _moves_tiles_whole(g["spec"].kernel[-1], training) else 2.4
            return flops / (0.8 * _PEAK) + (g["in"] + moved * g["out"]) * _SECONDS_PER_ELEMENT + _CALL
        if g["spec"].transposed:  # (B * S_in, C/G) @ (C/G, C_out/G * taps), then col2im
            return flops / _rate(g["per_group_in"], g["per_group_out"] * taps, gemm=True) + 2 * traffic
        return 2 * g["dense_macs"] / _rate(inner * g["outer_taps"], g["per_group_out"], gemm=True) + traffic
    points = g["fft_size"]
    # the weight's transforms are pruned to the kernel's extent first (strategies._transform): about a third
    transforms = (g["batch"] * (g["channels"] + g["out_channels"]) + g["out_channels"] * g["per_group_in"] / 3) * points
    products = 4 * g["batch"] * g["out_channels"] * g["per_group_in"] * points
    return (5 * transforms * math.log2(max(points, 2)) + products) / _FFT_RATE + traffic


def chunked_cost(
    name: str,
    spec: ConvSpec,
    how: lowering.Plan,
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    training: bool = False,
) -> float:
    """:func:`cost` when the memory budget splits the output into pieces (float32 assumed for a byte budget).

    A piece of output rows pays its calls again, smaller, and re-reads a halo of input rows:
    12% of the whole cost per extra piece (fitted to the bench's forced strategies). ``fold``
    splits its folded batch instead (no halo, one native call per piece): 3% per extra piece,
    twice the work when a piece is a single frame of a single sample (run as a batch of two).
    """
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    limit = chunking.budget_bytes(g["in"], g["out"], 4, how) / 4  # in float32 elements
    overshoot = workspace(name, spec, how, x_shape, w_shape) / max(limit, 1)
    whole = cost(name, spec, how, x_shape, w_shape, training)
    if name == "fold" and not g["spec"].transposed:
        if overshoot > g["first_out"]:
            return math.inf  # even one output row's folded input would not fit
        pieces = fold_piece_count(spec, how, x_shape, w_shape, 4)
        # a piece of one frame and one sample runs as a batch of two (lowering.native_lowered): twice the work
        rows = g["batch"] * g["outer_out"] // g["first_out"] * math.ceil(g["first_out"] / pieces)
        return _in_runs(whole, g, pieces, rows, g["per_group_in"] * g["outer_taps"])
    if name == "foldspread":
        if whole == math.inf or overshoot > g["first_out"]:
            return math.inf  # not applicable, or even one output row's buffers would not fit
        pieces = foldspread_pieces(spec, how, x_shape, w_shape, 4)
        # the native call's channels and batch (every output row's frames of the last dim), per run of rows
        channels = g["channels"] * g["outer_taps"] // g["spec"].kernel[g["n_outer"] - 1]
        frames = g["foldspread_in"] // max(channels * g["inner_in"], 1)
        rows = math.ceil(g["first_out"] / pieces)
        return _in_runs(whole, g, pieces, frames // max(g["first_out"], 1) * rows, channels)
    if name == "winograd":
        runs = math.ceil(g["first_out"] / winograd.tile(g["first_out"]))
        if whole == math.inf or _winograd_workspace(g, whole=False) > limit * runs:
            return math.inf  # not applicable, or even one tile's buffers would not fit
        pieces = winograd_pieces(spec, how, x_shape, w_shape, 4)
        return _in_runs(whole, g, pieces, g["batch"] * g["outer_rest"] * math.ceil(runs / pieces), g["channels"])
    if name == "dft":
        if whole == math.inf:
            return whole
        return _in_runs(whole, g, dft_pieces(spec, how, x_shape, w_shape, 4), g["batch"], 2 * g["channels"])
    if name == "spread":
        per_frame, fixed = _spread_workspace(spec, how, x_shape, w_shape)
        if per_frame + fixed > limit:
            return math.inf  # even one input frame's slabs would not fit
        pieces = spread_pieces(spec, how, x_shape, w_shape, limit)
        frames = g["batch"] * g["outer_rest"] * math.ceil(g["first_in"] / pieces)
        return _in_runs(whole, g, pieces, frames, g["channels"])
    if name == "unfold" and unpatches(g["spec"]):  # runs of input rows, each a GEMM (or a pinned rank's native call)
        return whole * (1 + _PIECE * (unpatch_pieces(spec, how, x_shape, w_shape, 4) - 1))
    pieces = math.ceil(overshoot)
    if pieces > g["batch"] * max(2, g["first_out"] // 2):
        return math.inf  # even the smallest pieces chunking makes (two rows) would not fit
    return whole * (1 + _PIECE * max(pieces - 1, 0))


def _in_runs(whole: float, g: dict[str, Any], pieces: int, batch: int, channels: int) -> float:
    """The cost ``whole`` of a strategy that runs its own ``pieces`` (fold's, winograd's, spread's): each extra
    piece costs a native call and a slice of the copies; a piece whose native call sees one small image of
    ``channels`` (a ``batch`` of one) runs as a batch of two (:func:`convnd.lowering.native_lowered`): twice the
    work."""
    return whole * (2 if _doubled(g, batch, channels) else 1) * (1 + _FOLD_PIECE * (pieces - 1))


def runs_as_itself(
    name: str,
    spec: ConvSpec,
    how: lowering.Plan,
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
) -> bool:
    """Whether strategy ``name`` runs as itself for this plan, on the plan's dim order: ``winograd`` where F(m, 3)
    applies (:func:`convnd.winograd.applies`) to a ``dtype`` of :data:`convnd.winograd.DTYPES`, ``dft`` likewise
    (:func:`convnd.dft.applies`, :data:`convnd.dft.DTYPES`), ``foldspread``
    where it does (:func:`convnd.strategies.foldspread_applies`); elsewhere both run ``fold``. Every other
    strategy always does."""
    moved = _geometry(spec, how, tuple(x_shape), tuple(w_shape))["spec"]
    if name == "winograd":
        return winograd.applies(moved, how.native_rank) and dtype in winograd.DTYPES
    if name == "dft":
        return dft.applies(moved, how.native_rank) and dtype in dft.DTYPES
    if name == "foldspread":
        return strategies.foldspread_applies(moved, how.native_rank)
    return True


@trace_safe_cache(maxsize=4096)
def winograd_pieces(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int], itemsize: int
) -> int:
    """How many runs of tiles ``winograd`` computes, so that one run's workspace fits the budget (a tile per run
    at most); the run (:func:`convnd.chunking.run_within`) and the cost model both ask here."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    limit = chunking.budget_bytes(g["in"], g["out"], itemsize, how)
    if _winograd_workspace(g, whole=True) * itemsize <= limit:
        return 1
    tiles = math.ceil(g["first_out"] / winograd.tile(g["first_out"]))
    return _fewest_runs(tiles, limit, _winograd_workspace(g, whole=False) * itemsize)


def _winograd_workspace(g: dict[str, Any], whole: bool) -> int:
    """``winograd``'s buffers (:func:`convnd.winograd.winograd`): a run's workspace holds its m + 2 transformed
    frame sets and then, over them, their products; before it, the run's input frames laid out frame-major
    (in the output's storage when the convolution runs ``whole`` and the output is no smaller); during the
    native calls, oneDNN's copies of a frame set and its product. The bench's 4d-wide whole: 1.13x input + output
    by this estimate, 1.19-1.26x measured (fresh-process peaks; the rest is oneDNN's own scratch and the kernels)."""
    sets = winograd.tile(g["first_out"]) + 2
    frames = 0 if whole and g["out"] >= g["in"] else g["in"]
    return sets * max(g["winograd_in"], g["winograd_out"]) + max(frames, g["winograd_in"] + 2 * g["winograd_out"])


@trace_safe_cache(maxsize=4096)
def dft_pieces(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int], itemsize: int
) -> int:
    """How many runs of frequency groups ``dft`` computes, so that one run's spectrum and products fit the budget
    (a group per run at most); the run and the cost model both ask here."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    units = dft.groups(g["outer_shape"][0], *g["spec"].padding[0])
    return _runs_within("dft", spec, how, x_shape, w_shape, itemsize, units)


@trace_safe_cache(maxsize=4096)
def foldspread_pieces(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int], itemsize: int
) -> int:
    """How many runs of output rows (first outer dim) ``foldspread`` computes, so that one run's folded input and
    slabs fit the budget and its slabs are at most :data:`convnd.chunking.FOLD_OUTPUT_PIECE` bytes, as fold's
    output pieces (a row per run at most); the run and the cost model both ask here. Measured on a 5-d
    32-channel shape: 2.4 MB of slabs in one run 1.35x slower than in runs within that size."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    rows = g["first_out"]
    fit = max(1, int(rows * chunking.FOLD_OUTPUT_PIECE // max(g["foldspread_slabs"] * itemsize, 1)))
    by_slabs = math.ceil(rows / min(fit, rows))
    return max(_runs_within("foldspread", spec, how, x_shape, w_shape, itemsize, rows), by_slabs)


@trace_safe_cache(maxsize=4096)
def unpatch_pieces(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int], itemsize: int
) -> int:
    """How many runs of input rows of the first dim ``unfold`` un-patches in (a transposed convolution whose
    kernels tile their strides, :func:`convnd.strategies._unpatch`), so that one run's workspace fits the budget."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    return _runs_within("unfold", spec, how, x_shape, w_shape, itemsize, g["first_in"])


def _runs_within(
    name: str,
    spec: ConvSpec,
    how: lowering.Plan,
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    itemsize: int,
    units: int,
) -> int:
    """The fewest runs of ``units`` (equal shares of strategy ``name``'s workspace) whose largest fits the budget;
    one unit per run at most."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    limit = chunking.budget_bytes(g["in"], g["out"], itemsize, how)
    return _fewest_runs(units, limit, workspace(name, spec, how, x_shape, w_shape) * itemsize)


def _fewest_runs(units: int, limit: float, whole: float) -> int:
    """The fewest runs of ``units`` equal shares of a ``whole`` workspace whose largest fits ``limit`` (the same
    unit of memory); one unit per run at most."""
    fit = max(1, int(units * limit // max(whole, 1)))
    return math.ceil(units / min(fit, units))


@trace_safe_cache(maxsize=4096)
def fold_piece_count(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int], itemsize: int
) -> int:
    """How many pieces ``fold`` splits its folded batch into (runs of output rows of the first outer dim):
    each piece's workspace within the budget, and its output at most :data:`convnd.chunking.FOLD_OUTPUT_PIECE`
    bytes; one row per piece at most. The run (:func:`convnd.chunking.fold_pieces`) and the cost model both ask here.
    """
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    limit = chunking.budget_bytes(g["in"], g["out"], itemsize, how)
    overshoot = max(
        workspace("fold", spec, how, x_shape, w_shape) * itemsize / limit,
        g["out"] * itemsize / chunking.FOLD_OUTPUT_PIECE,
    )
    rows = g["first_out"]
    # the fewest pieces whose largest (ceil(rows / pieces) rows) fits
    return next((p for p in range(1, rows) if math.ceil(rows / p) * overshoot <= rows), rows)


def _spread_workspace(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int]
) -> tuple[float, int]:
    """``spread``'s workspace as (elements per input frame of a run, elements whatever the run: the weight's)."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    fixed = 2 * g["weight"]
    return (workspace("spread", spec, how, x_shape, w_shape) - fixed) / g["first_in"], fixed


def _doubled(g: dict[str, Any], batch: int, channels: int) -> bool:
    """Whether an inner native call of this batch and channel count runs as a batch of two
    (:func:`convnd.lowering.doubled`)."""
    inner = g["spec"].select(range(g["n_outer"], g["spec"].dims))
    return lowering.doubled((batch, channels, *g["inner_shape"]), inner)


@trace_safe_cache(maxsize=4096)
def spread_pieces(
    spec: ConvSpec, how: lowering.Plan, x_shape: Sequence[int], w_shape: Sequence[int], limit: float
) -> int:
    """How many runs of input frames (first outer dim) ``spread`` computes, so that one run's workspace
    (its slabs and copies, and the weight's) fits ``limit`` elements; one frame per run at most."""
    g = _geometry(spec, how, tuple(x_shape), tuple(w_shape))
    frames = g["first_in"]
    per_frame, fixed = _spread_workspace(spec, how, x_shape, w_shape)
    if per_frame <= 0:
        return 1  # an empty batch
    fit = int((limit - fixed) // per_frame) if limit > fixed else 0
    if _doubled(g, g["batch"] * g["outer_rest"], g["channels"]):
        fit = max(fit, 2)  # a run of one frame of one sample would run as a batch of two: take two frames instead
    # runs of ceil(frames / pieces) <= fit frames each
    return math.ceil(frames / min(max(fit, 1), frames))


def _moves_tiles_whole(last_kernel: int, training: bool, itemsize: int = 4) -> bool:
    """Whether un-patching's copies move the last kernel dim's taps as one element
    (:func:`convnd.strategies._unpatch_by_gemm`)."""
    return not training and last_kernel * itemsize in strategies.UNITS


def call_rank(spec: ConvSpec, how: lowering.Plan) -> int:
    """The rank of the native calls ``how``'s strategy runs for ``spec``: the plan's, but 0 (no native call: GEMMs,
    :func:`convnd.strategies._unpatch`) for un-patching (:func:`unpatches`) that no caller pinned to a rank. The
    plan keeps its rank for the backward's native weight-gradient calls."""
    if how.strategy == "unfold" and not how.pinned and unpatches(spec):
        return 0
    return how.native_rank


def unpatches(spec: ConvSpec) -> bool:
    """Whether a transposed convolution's kernel exactly tiles its stride (un-patching): each output element is
    one tap's, which ``unfold`` runs as :func:`convnd.strategies._unpatch`."""
    return (
        spec.transposed and all(s == k for s, k in zip(spec.stride, spec.kernel)) and all(d == 1 for d in spec.dilation)
    )


# calibrated on the README's 2-core machine (see benchmarks/); only ratios matter for the choice
_PEAK = 150e9  # float32 FLOP/s of a large GEMM
_FFT_RATE = 2e9
_SECONDS_PER_ELEMENT = 0.5e-9
_CALL = 30e-6
_PIECE = 0.12  # an output piece with its halo of input rows: its calls again, smaller (fitted to the bench)
_FOLD_PIECE = 0.03  # a piece of fold's folded batch costs a native call and a slice of the output copy
# the band's GEMM measured at about half the rate _rate gives its shape (its weight is mostly zeros, which oneDNN
# multiplies anyway, and it reorders that big weight on every call): fitted to the bench's depthwise workload
# (band 1.5-1.7x faster than tapsum) and large-kernel one (band in pieces 1.15x slower than tapsum)
_BAND_FILL = 0.5
_BLOCK = 16  # oneDNN's channel block on AVX-512: a native call's input channels are padded up to a multiple


def _depthwise_channels_last(g: dict[str, Any]) -> bool:
    """Whether a tap sum runs oneDNN's depthwise kernel on channels-last batches with unit outer strides
    (:func:`convnd.lowering.channels_innermost`). A strided outer dim gathers every tap's frames in a copy: there
    spread measured 1.5x faster on a stride-2 depthwise shape, so the generic rate stays. Only the forward is
    fast: torch's depthwise 3-d backward is not oneDNN's (4.8 ms for both gradients of one call the forward
    runs in 0.19 ms), and the bench's depthwise forward+backward ran 2x slower than band's."""
    spec = g["spec"]
    return (
        g["per_group_in"] == 1 == g["per_group_out"]
        and lowering.channels_innermost(g["channels"], spec)
        and all(s == 1 for s in spec.stride[: g["n_outer"]])
    )


def _rate(reduction: int, outputs: int, channels: int = 1, gemm: bool = False) -> float:
    """FLOP/s of a native convolution (or GEMM) whose reduction is ``reduction`` long, ``outputs`` wide,
    over ``channels`` input channels per group.

    Past 8 channels oneDNN pads them to a multiple of its block (small counts take kernels of
    their own); the square of the padded fraction is fitted to the bench: 24 folded channels
    ran at 0.73x the speed of 8 unfolded ones on the same 4-d workload (README).
    """
    fill = reduction / (reduction + (64 if gemm else 128)) * outputs / (outputs + 8)
    if channels > 8:
        fill *= (channels / (_BLOCK * math.ceil(channels / _BLOCK))) ** 2
    return _PEAK * fill


# --- measured ----------------------------------------------------------------------------


def measured(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    how: lowering.Plan,
    timed: bool = True,
) -> lowering.Plan:
    """The fastest strategy for these operands, timed once per (spec, shapes, dtype, device) and cached.

    Only the strategies the cost model puts within 4x of its favourite are timed (twice
    each, best of two, within the memory budget), so the first call costs a few calls,
    not an FFT of a volume the model already knows is hopeless. While compiling, or with
    ``timed`` False (``explain``, on meta tensors), the cost model decides alone.
    """
    shapes = (tuple(x.shape), tuple(weight.shape))
    forced_axes = bool(_FORCED) and _FORCED[-1].get("native_axes") is not None
    if not timed or torch.compiler.is_compiling():
        return running(how, cheapest(spec, how, *shapes), spec, x.shape, forced_axes)
    # the budget is part of the key: a choice timed in one budget's pieces is not another budget's
    key = (spec, how.native_rank, how.native_axes, how.max_memory, *shapes, x.dtype, x.device.type)
    if key not in _MEASURED:
        costs = {name: chunked_cost(name, spec, how, *shapes) for name in STRATEGIES}
        best = min(costs.values())
        times = {}
        with torch.no_grad():
            for name in STRATEGIES:
                if costs[name] <= 4 * best:
                    trial = running(how, name, spec, x.shape, forced_axes)
                    times[name] = min(_seconds(x, weight, bias, spec, trial) for _ in range(2))
        _MEASURED[key] = min(times, key=times.__getitem__)
    return running(how, _MEASURED[key], spec, x.shape, forced_axes)


def _seconds(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, how: lowering.Plan
) -> float:
    start = time.perf_counter()
    chunking.run_within(x, weight, bias, spec, how)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start
