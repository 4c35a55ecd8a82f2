"""The memory budget of a lowered convolution: compute the output in pieces that fit.

A lowering strategy's temporary buffers scale with the part of the output it computes
(:func:`convnd.selection.workspace` estimates them). When the whole convolution's
estimate exceeds the plan's budget, ``fold`` splits its folded batch into runs of output
rows of the first lowered dim (:func:`convnd.strategies.fold`: no halos, one native call
each), ``foldspread`` runs of output rows the same way, ``spread`` runs of input frames
(:func:`convnd.strategies.spread`), ``winograd`` runs of tiles, ``dft`` runs of frequencies and
un-patching ``unfold`` runs of input rows; the other strategies split the batch, then the
first lowered spatial dim, each piece running as its own convolution over the input rows it
reads, with that piece's share of the padding (transposed: each piece of input rows adds its
full output where it lands, since the pieces overlap).
Every piece is written straight into the output, so the peak is one piece's buffers plus the output.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from . import lowering, selection
from .padding import pad_nd
from .spec import ConvSpec

MIN_DEFAULT_BUDGET = 256 * 1024
# the default budget in units of input + output bytes; the estimates include oneDNN's copies, and the
# measured peaks stayed below the estimate (README); 1.25 leaves margin under the target of 1.5x
DEFAULT_BUDGET_RATIO = 1.25
# fold computes its output in pieces of at most this many bytes even within budget: each piece's native
# result is still in the caches (2 MiB of L2 on the README's machine) when it is copied into place.
# Measured on the bench: 4-d (6 MB of output) 1.2-2x faster in 3 pieces than in one; 4-d-strided
# (0.6 MB) fastest in one
FOLD_OUTPUT_PIECE = 2 << 20


def budget(x: torch.Tensor, out_numel: int, how: lowering.Plan) -> int:
    """The plan's byte budget for temporaries (:func:`budget_bytes` for ``x`` and an output of ``out_numel``)."""
    return budget_bytes(x.numel(), out_numel, x.element_size(), how)


def budget_bytes(in_numel: int, out_numel: int, itemsize: int, how: lowering.Plan) -> int:
    """``max_memory``, else 1.25x the input plus output size (>= 256 KiB), unbounded for a pinned plan
    (see :class:`convnd.lowering.Plan`); the cost model prices pieces with the same rule.

    The floor keeps small convolutions in one piece, where splitting would cost time and save nothing.
    """
    if how.max_memory is not None:
        return how.max_memory
    if how.pinned:  # emulate/rewrite promise one native call per tap (explain counts them): split only on request
        return 1 << 62
    return max(int(DEFAULT_BUDGET_RATIO * (in_numel + out_numel) * itemsize), MIN_DEFAULT_BUDGET)


def run_within(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, how: lowering.Plan
) -> torch.Tensor:
    """Run a batched lowered convolution, in as many output pieces as the budget needs."""
    if how.strategy == "measure":
        how = selection.measured(x, weight, bias, spec, how)
    if how.max_memory is None and selection.symbolic(x.shape):
        # a symbolic size (export Dim): the default budget would guard on it, so run in one piece
        return lowering.lowered(x, weight, bias, spec, how)
    out_channels = weight.shape[1] * spec.groups if spec.transposed else weight.shape[0]
    out_size = spec.output_size(x.shape[2:])
    limit = budget(x, x.shape[0] * out_channels * math.prod(out_size), how)

    def fits(shape: tuple[int, ...]) -> bool:
        return selection.workspace(how.strategy, spec, how, shape, tuple(weight.shape)) * x.element_size() <= limit

    if how.strategy == "fold" and not spec.transposed:  # fold splits its own folded batch, without halos
        return lowering.lowered(x, weight, bias, spec, how, fold_pieces(x, weight, spec, how))
    shapes = (tuple(x.shape), tuple(weight.shape))
    if how.strategy in ("winograd", "foldspread", "dft") and not selection.runs_as_itself(
        how.strategy, spec, how, *shapes, x.dtype
    ):
        return run_within(x, weight, bias, spec, replace(how, strategy="fold"))  # what a forced one runs there
    # winograd runs of tiles (each reading its own input frames), dft runs of frequency groups (each transforming
    # the whole input for its own), foldspread runs of output rows (as fold's),
    # un-patching runs of input rows (no overlap): each strategy splits its own work
    runs = _RUNS.get("unpatch" if how.strategy == "unfold" and selection.unpatches(spec) else how.strategy)
    if runs is not None:
        pieces = getattr(selection, runs)(spec, how, *shapes, x.element_size())
        return lowering.lowered(x, weight, bias, spec, how, pieces)
    if how.strategy == "spread":  # spread runs runs of input frames, each adding into the one output
        spread = selection.spread_pieces(spec, how, *shapes, limit // x.element_size())
        return lowering.lowered(x, weight, bias, spec, how, spread)
    if fits(tuple(x.shape)):
        return lowering.lowered(x, weight, bias, spec, how)
    # a transposed convolution's spatial pieces overlap and are added: zeros; otherwise every element is written once
    spatial = not fits((1, *x.shape[1:]))
    shape = (x.shape[0], out_channels, *out_size)
    y = x.new_zeros(shape) if spec.transposed and spatial else x.new_empty(shape)
    if spatial:  # one sample is too big: split a lowered spatial dim
        axis = selection.chunk_axis(spec.dims, how)
        if spec.padding_mode != "zeros":
            x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
        pieces = _pieces_along(x, spec, axis, out_size, fits)
        for sample in range(x.shape[0]):
            _spatial_pieces(y[sample : sample + 1], x[sample : sample + 1], weight, spec, how, axis, pieces)
    else:
        per_piece = max(n for n in range(1, x.shape[0] + 1) if fits((n, *x.shape[1:])))
        for rows in _split(x.shape[0], math.ceil(x.shape[0] / per_piece)):
            y[rows] = lowering.lowered(x[rows], weight, None, spec, how)
    return lowering.add_bias(y, bias)


# the strategies that split their own work into runs, and how many runs the budget needs ("unpatch": un-patching
# ``unfold``); fold and spread are handled apart (a symbolic size, a byte limit)
# (selection's functions by name: the two modules import each other)
_RUNS = {
    "winograd": "winograd_pieces",
    "foldspread": "foldspread_pieces",
    "dft": "dft_pieces",
    "unpatch": "unpatch_pieces",
}


def fold_pieces(x: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, how: lowering.Plan) -> int:
    """How many pieces ``fold`` computes its output in: what the budget needs, and pieces of at most
    :data:`FOLD_OUTPUT_PIECE` bytes of output (its backward rebuilds the same pieces)."""
    if how.max_memory is None and selection.symbolic(x.shape):
        return 1
    return selection.fold_piece_count(spec, how, tuple(x.shape), tuple(weight.shape), x.element_size())


def _pieces_along(x: torch.Tensor, spec: ConvSpec, axis: int, out_size: tuple[int, ...], fits) -> int:
    """The fewest pieces along ``axis`` whose input (with its halo of overlapping rows) fits the budget.

    Pieces keep two rows at least: a native call on a batch of one small image makes torch
    pick its slow im2col kernel (``slow_conv3d``) over oneDNN, slower and far hungrier.
    """
    length = x.shape[2 + axis] if spec.transposed else out_size[axis]
    most = max(2, length // 2)
    for pieces in range(2, most + 1):
        rows = math.ceil(length / pieces)
        reads = rows if spec.transposed else min((rows - 1) * spec.stride[axis] + spec.window[axis], x.shape[2 + axis])
        if fits((1, *x.shape[1 : 2 + axis], reads, *x.shape[3 + axis :])):
            return pieces
    return most  # the budget is below two rows' workspace: go as small as is still fast


def _spatial_pieces(
    y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, how: lowering.Plan, axis: int, pieces: int
) -> None:
    """Fill ``y`` piece by piece along ``axis``: output rows from their input rows, or (transposed) input rows
    scattered and added into the output rows they reach."""
    lead = (slice(None), slice(None), *(slice(None),) * axis)
    if not spec.transposed:
        for rows in _split(y.shape[2 + axis], pieces):
            xs, piece = _input_rows(x, spec, axis, rows)
            if xs.shape[2 + axis] == 0:  # these rows read only zero padding: no strategy has input to run on
                y[(*lead, rows)] = 0
            else:
                y[(*lead, rows)] = lowering.lowered(xs, weight, None, piece, how)
        return
    # transposed: each input piece's full (uncropped) output, added where it lands
    padding, output_padding = list(spec.padding), list(spec.output_padding)
    padding[axis], output_padding[axis] = (0, 0), 0
    full = replace(spec, padding=tuple(padding), output_padding=tuple(output_padding)).select(range(spec.dims))
    for rows in _split(x.shape[2 + axis], pieces):
        part = lowering.lowered(x[(*lead, rows)], weight, None, full, how)
        start = rows.start * spec.stride[axis] - spec.padding[axis][0]
        first, last = max(start, 0), min(start + part.shape[2 + axis], y.shape[2 + axis])
        y[(*lead, slice(first, last))].add_(part.narrow(2 + axis, first - start, last - first))


def _split(length: int, pieces: int) -> list[slice]:
    """``length`` positions in at most ``pieces`` contiguous runs of near-equal size."""
    step = math.ceil(length / min(pieces, length))
    return [slice(start, min(start + step, length)) for start in range(0, length, step)]


def _input_rows(x: torch.Tensor, spec: ConvSpec, axis: int, rows: slice) -> tuple[torch.Tensor, ConvSpec]:
    """The input rows output rows ``rows`` read along spatial ``axis``, and the spec with that piece's padding."""
    lo = spec.padding[axis][0]
    size = x.shape[2 + axis]
    start = rows.start * spec.stride[axis] - lo
    stop = (rows.stop - 1) * spec.stride[axis] + spec.window[axis] - lo
    first = min(max(start, 0), size)
    last = max(min(stop, size), first)  # rows that read only padding: an empty run of input (the caller's zeros)
    padding = list(spec.padding)
    padding[axis] = (first - start, stop - last)
    # select() over every dim re-derives torch's native padding form for the new pairs
    piece = replace(spec, padding=tuple(padding)).select(range(spec.dims))
    return x.narrow(2 + axis, first, last - first), piece
