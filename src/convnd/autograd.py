"""The backward pass of a lowered convolution, written as lowered convolutions.

Autograd through a lowering records every tap's slices and copies and replays them
backwards. This :class:`torch.autograd.Function` saves only the input and the weight
and computes, through the same planner:

- the input gradient of a convolution as the lowered *transposed* convolution of the
  output gradient (and of a transposed convolution as the lowered convolution), so the
  backward gets its own strategy choice and memory budget;
- the weight gradient as a correlation of the input with the output gradient: for each
  outer kernel tap, one native r-d weight-gradient kernel
  (``aten.convolution_backward``) over the folded slices that tap pairs up;
- the bias gradient as a sum;
- for a ``fold``, ``spread``, ``foldspread``, ``winograd`` or ``dft`` plan, both gradients at once instead (they do not
  depend on how the forward summed): per phase of the input frames, one native backward call
  against the output gradient gathered into the channels (:func:`convnd.strategies.phase_backward`,
  from 16 input channels), or per piece one on the rebuilt folded input, then col2im
  (:func:`convnd.strategies.fold_backward`).

Every step is itself differentiable, so double backward works. Only shapes (ints) steer
the computation, never tensor values, so it traces under ``torch.compile`` and
``torch.export``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from . import chunking, lowering, selection, strategies
from .padding import pad_nd, torch_pad_order
from .spec import ConvSpec, make_spec


def run(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, how: lowering.Plan
) -> torch.Tensor:
    """A batched lowered convolution, with the custom backward when a gradient is needed and the plan asks."""
    wants_grad = lowering.wants_grad(x, weight, bias)
    if not (wants_grad and how.custom_backward):
        return chunking.run_within(x, weight, bias, spec, how)
    if how.strategy == "measure":  # settle the choice now: the backward follows the strategy that ran
        how = selection.measured(x, weight, bias, spec, how)
    if spec.padding_mode != "zeros" or not spec.symmetric:
        # explicit padding (its own backward is autograd's), so the adjoint below sees symmetric zeros
        x, spec = pad_nd(x, spec.padding, spec.padding_mode), spec.unpadded()
    return LoweredConv.apply(x, weight, bias, spec, how)


class LoweredConv(torch.autograd.Function):
    """``y = lowered(x, w, b)`` with the backward above (see the module docstring)."""

    @staticmethod
    def forward(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec, how: lowering.Plan
    ) -> torch.Tensor:
        return chunking.run_within(x, weight, bias, spec, how)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, weight, _, spec, how = inputs
        ctx.save_for_backward(x, weight)
        ctx.spec, ctx.how = spec, how

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        spec, how = ctx.spec, ctx.how
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, *range(2, grad.dim())))
        if how.strategy in FOLD_BACKWARD and not spec.transposed and any(ctx.needs_input_grad[:2]):
            adjoint = forward_adjoint(grad, weight, spec, how) if ctx.needs_input_grad[0] else None
            if adjoint is None:
                grad_x, grad_w = fold_grads(grad, x, weight, spec, how, tuple(ctx.needs_input_grad[:2]))
                return grad_x, grad_w, grad_b, None, None
            # the input gradient runs with fewer products than a direct convolution; the native backward does the rest
            if ctx.needs_input_grad[1]:
                grad_w = fold_grads(grad, x, weight, spec, how, (False, True))[1]
            grad_x = run(grad, strategies.adjoint_weight(weight, spec.groups), None, *adjoint)
            return grad_x, grad_w, grad_b, None, None
        if ctx.needs_input_grad[0]:
            grad_x = input_grad(grad, weight, spec, tuple(x.shape[2:]), how)
        if ctx.needs_input_grad[1]:
            if spec.transposed:  # y = T(x, w) is the adjoint of z = conv(u, w): dw pairs u = grad with dz = x
                grad_w = weight_grad(grad, x, weight, _forward_of(spec), how)
            else:
                grad_w = weight_grad(x, grad, weight, spec, how)
        return grad_x, grad_w, grad_b, None, None


# forward plans whose gradients come from fold's or the phase backward (same dims, same products; fold's measured
# 1.5-2.5x faster than the lowered adjoint or autograd through spread; winograd's and dft's forwards sum
# differently, their gradients are the convolution's all the same)
FOLD_BACKWARD = ("fold", "spread", "winograd", "foldspread", "dft")


def fold_grads(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    how: lowering.Plan,
    needs: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input and weight gradients of a ``fold`` (or ``spread``) plan, in the plan's dim order:
    :func:`convnd.strategies.phase_backward` where :func:`convnd.selection.phase_backward_pays` (in pieces
    within the budget), else :func:`convnd.strategies.fold_backward` (in the pieces fold's forward runs in)."""
    order = selection.axis_order(spec.dims, how.native_rank, how.native_axes)
    back = tuple(order.index(a) for a in range(spec.dims))
    how = replace(how, strategy="fold")
    if selection.phase_backward_pays(tuple(x.shape), tuple(weight.shape), grad.numel()):
        pieces = selection.phase_pieces(spec, how, tuple(x.shape), tuple(weight.shape), x.element_size())
        backward = strategies.phase_backward
    else:
        pieces, backward = chunking.fold_pieces(x, weight, spec, how), strategies.fold_backward
    moved = (lowering.move_axes(t, order) for t in (grad, x, weight))
    grad_x, grad_w = backward(*moved, spec.select(order), how.native_rank, pieces, needs)
    return tuple(None if g is None else lowering.move_axes(g, back) for g in (grad_x, grad_w))


# forward strategies that compute a convolution with fewer products than a direct one (Winograd's, the DFT's)
FEWER_PRODUCTS = ("winograd", "dft")


def forward_adjoint(
    grad: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, how: lowering.Plan
) -> tuple[ConvSpec, lowering.Plan] | None:
    """The input gradient of a stride-1 convolution as a forward convolution of ``grad`` with the flipped,
    transposed weight (:func:`convnd.strategies.adjoint_weight`) and padding ``dilation * (kernel - 1) - padding``
    (:func:`convnd.strategies.forward_padding`, symmetric zeros), with its plan, where the planner runs it as itself
    with one of :data:`FEWER_PRODUCTS`; else None.

    Planned as the transposed convolution it also is, neither applies; and the combined native backward of a
    ``fold``-family plan computes both gradients at a direct convolution's products. Forward+backward A/B on the
    bench's workloads: 4d-wide 1.03-1.11x faster (winograd), the 7-wide kernel 1.16x (dft); 4d's input gradient
    (16 -> 8 channels) plans to ``spread`` and stays combined, as 5d's would (``foldspread``, measured slower split).
    """
    if spec.transposed or how.pinned or any(s != 1 for s in spec.stride):
        return None
    # the transposed convolution the input gradient is (stride 1: no output padding), as the forward one it equals
    transposed = make_spec(
        spec.kernel, 1, tuple(lo for lo, _ in spec.padding), spec.dilation, spec.groups, transposed=True
    )
    padding = strategies.forward_padding(transposed)
    if min(min(pair) for pair in padding) < 0:  # padding past the kernel's reach: the adjoint would crop
        return None
    adjoint = make_spec(spec.kernel, 1, tuple(padding), spec.dilation, spec.groups)
    w_shape = (weight.shape[1] * spec.groups, weight.shape[0] // spec.groups, *weight.shape[2:])
    plan = lowering.plan(adjoint, input_shape=grad.shape, weight_shape=w_shape)
    if plan.strategy not in FEWER_PRODUCTS or not selection.runs_as_itself(
        plan.strategy, adjoint, plan, tuple(grad.shape), w_shape, grad.dtype
    ):
        return None
    return adjoint, plan


def _forward_of(spec: ConvSpec) -> ConvSpec:
    """The convolution a transposed spec is the adjoint of (symmetric zero padding)."""
    return make_spec(spec.kernel, spec.stride, tuple(lo for lo, _ in spec.padding), spec.dilation, spec.groups)


def input_grad(
    grad: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, size: tuple[int, ...], how: lowering.Plan
) -> torch.Tensor:
    """The input gradient: the adjoint convolution of ``grad``, planned like any other, cropped to ``size``."""
    padding = tuple(lo for lo, _ in spec.padding)
    if spec.transposed:
        adjoint = _forward_of(spec)
    else:
        natural = make_spec(spec.kernel, spec.stride, padding, spec.dilation, spec.groups, transposed=True)
        extra = tuple(n - m for n, m in zip(size, natural.output_size(grad.shape[2:])))
        adjoint = make_spec(
            spec.kernel, spec.stride, padding, spec.dilation, spec.groups, transposed=True, output_padding=extra
        )
    rank = how.native_rank if how.pinned else None  # an emulation's backward keeps its rank; else re-plan
    adjoint_plan = lowering.plan(adjoint, rank, input_shape=grad.shape, weight_shape=weight.shape)
    y = run(grad, weight, None, adjoint, adjoint_plan)
    # a transposed conv whose output_padding >= stride (dilation > stride) leaves rows no input reads
    for axis, n in enumerate(size):
        y = y.narrow(2 + axis, 0, n)
    return y


def weight_grad(
    u: torch.Tensor, gz: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, how: lowering.Plan
) -> torch.Tensor:
    """d<z, gz>/dw for ``z = conv(u, w)`` (symmetric zero padding): one native weight-gradient call per outer tap."""
    order = selection.axis_order(spec.dims, how.native_rank, how.native_axes)
    back = tuple(order.index(a) for a in range(spec.dims))
    u, gz, w = (lowering.move_axes(t, order) for t in (u, gz, weight))
    spec = spec.select(order)
    n_outer = spec.dims - how.native_rank
    outer, inner = spec.split(how.native_rank)
    grad_w = torch.zeros_like(w)
    batch = u.shape[0]
    size, out = tuple(u.shape[2 : 2 + n_outer]), tuple(gz.shape[2 : 2 + n_outer])
    for tap, windows in lowering.tap_windows(lowering.gather_window, outer, size, out):
        if windows is None:
            continue  # this tap reads only zero padding: its gradient is zero
        us = _fold(u[(slice(None), slice(None), *(src for src, _ in windows))], n_outer, batch)
        gzs = _fold(gz[(slice(None), slice(None), *(dst for _, dst in windows))], n_outer, batch)
        us = _pad_inner(us, gzs, inner)
        w_tap = w[(slice(None), slice(None), *tap)]
        tap_grad = lowering.native_backward(gzs, us, w_tap, inner.unpadded(), (False, True))[1]  # padded above
        grad_w[(slice(None), slice(None), *tap)] = tap_grad
    return lowering.move_axes(grad_w, back)


def _fold(t: torch.Tensor, n_outer: int, batch: int) -> torch.Tensor:
    """(B, C, *outer, *inner) -> (prod(outer) * B, C, *inner): outer positions into the batch."""
    t = t.movedim(tuple(range(2, 2 + n_outer)), tuple(range(n_outer)))
    return t.reshape((math.prod(t.shape[:n_outer]) * batch, *t.shape[n_outer + 1 :]))


def _pad_inner(us: torch.Tensor, gzs: torch.Tensor, inner: ConvSpec) -> torch.Tensor:
    """Pad explicitly, then keep exactly the rows the outputs read, so the native kernel's sizes match.

    (A transposed convolution's output gradient can be longer than its forward
    convolution reads, and symmetric native padding cannot express the crop.)
    """
    us = F.pad(us, torch_pad_order(inner.padding))
    for axis, (m, s, w) in enumerate(zip(gzs.shape[2:], inner.stride, inner.window)):
        us = us.narrow(2 + axis, 0, (m - 1) * s + w)
    return us
