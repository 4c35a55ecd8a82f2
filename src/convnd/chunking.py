"""The memory budget of a lowered convolution: compute the output in pieces that fit.

A lowering strategy's temporary buffers scale with the part of the output it computes
(:func:`convnd.selection.workspace` estimates them). When the whole convolution's
estimate exceeds the plan's budget, the output is split along its first lowered
spatial dim (along the batch for transposed convolutions, whose pieces would overlap)
and each piece runs as its own convolution over the input rows it reads, with that
piece's share of the padding. Every piece is written straight into the output, so the
peak is one piece's buffers plus the output.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from . import lowering, selection
from .padding import pad_nd
from .spec import ConvSpec

MIN_DEFAULT_BUDGET = 256 * 1024


def budget(x: torch.Tensor, out_numel: int, how: lowering.Plan) -> int:
    """The plan's byte budget for temporaries: ``max_memory``, else the input plus output size (>= 256 KiB).

    The floor keeps small convolutions in one piece, where splitting would cost time and save nothing.
    """
    if how.max_memory is not None:
        return how.max_memory
    return max((x.numel() + out_numel) * x.element_size(), MIN_DEFAULT_BUDGET)


def run_within(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, how: lowering.Plan
) -> torch.Tensor:
    """Run a batched lowered convolution, in as many output pieces as the budget needs."""
    if how.strategy == "measure":
        how = selection.measured(x, weight, bias, spec, how)
    out_channels = weight.shape[1] * spec.groups if spec.transposed else weight.shape[0]
    out_size = spec.output_size(x.shape[2:])
    out_numel = x.shape[0] * out_channels * math.prod(out_size)
    need = selection.workspace(how.strategy, spec, how, tuple(x.shape), tuple(weight.shape)) * x.element_size()
    pieces = math.ceil(need / max(budget(x, out_numel, how), 1))
    if pieces <= 1:
        return lowering.lowered(x, weight, bias, spec, how)
    y = x.new_empty((x.shape[0], out_channels, *out_size))
    if spec.transposed or x.shape[0] >= pieces:
        for rows in _split(x.shape[0], pieces):
            y[rows] = lowering.lowered(x[rows], weight, bias, spec, how)
        return y
    if spec.padding_mode != "zeros":
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    axis = selection.chunk_axis(spec.dims, how)
    for rows in _split(out_size[axis], pieces):
        xs, piece = _input_rows(x, spec, axis, rows)
        y[(slice(None), slice(None), *(slice(None),) * axis, rows)] = lowering.lowered(xs, weight, bias, piece, how)
    return y


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
    first, last = max(start, 0), min(stop, size)
    padding = list(spec.padding)
    padding[axis] = (first - start, stop - last)
    # select() over every dim re-derives torch's native padding form for the new pairs
    piece = replace(spec, padding=tuple(padding)).select(range(spec.dims))
    return x.narrow(2 + axis, first, last - first), piece
