"""``convnd.conv`` and ``convnd.conv_transpose``: the functional entry points.

Both read the rank from the weight (N = weight.dim() - 2), build the spec once,
check the operands against it and hand them to the planner. For N <= 3 the plan
is a single call of torch's own kernel with the user's arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .caching import tracing
from .checks import check_operands, check_tensor
from .errors import fail
from .layout import DEFAULT_CHANNEL_DIM, resolve_layout
from .lowering import bound, execute, native, plan, wants_grad
from .spec import ConvSpec, IntOrTuple, PaddingArg, argument_key, make_spec


def run(
    input: Any,
    weight: Any,
    bias: Any,
    spec: ConvSpec,
    *,
    native_rank: int | None = None,
    channel_dim: int = DEFAULT_CHANNEL_DIM,
    spatial_dims: Sequence[int] | None = None,
    convolution: bool = False,
) -> torch.Tensor:
    """Check operands against ``spec`` and run it; the one path every convnd client takes.

    Args:
        input, weight, bias: the operands (see :func:`conv`).
        spec: the validated convolution.
        native_rank: force the rank of the native kernels (used by ``emulate``).
        channel_dim, spatial_dims: where the input's axes are (see :mod:`convnd.layout`); the
            input moves to (B, C, *spatial) by a view and the result moves back.
        convolution: flip the kernel over its spatial dims (true convolution); the flip is
            part of the autograd graph and leaves ``weight`` itself untouched.
    """
    if (
        convolution is False
        and spatial_dims is None
        and type(channel_dim) is int
        and channel_dim == DEFAULT_CHANNEL_DIM
    ):
        # torch's own layout and no flip, the common case: nothing to resolve or move, so skip it
        check_operands(input, weight, bias, spec)
        if native_rank is None and len(spec.kernel) <= 3:
            return native(input, weight, bias, spec)  # the direct plan, without asking for it: every N <= 3 call
        training = spec.dims > 3 and wants_grad(input, weight, bias)  # only lowered plans weigh it: no N <= 3 cost
        how = plan(spec, native_rank, input_shape=input.shape, weight_shape=weight.shape, training=training)
        return execute(input, weight, bias, spec, how)
    input = check_tensor("input", input)
    layout = resolve_layout(input.dim(), spec.dims, channel_dim, spatial_dims)
    if not isinstance(convolution, bool):
        fail("convolution", convolution, "True or False", kind="type")
    if convolution:
        weight = check_tensor("weight", weight)
        weight = weight.flip(tuple(range(2, weight.dim())))
    x = layout.to_canonical(input)
    check_operands(x, weight, bias, spec)
    how = plan(
        spec,
        native_rank,
        input_shape=x.shape,
        weight_shape=weight.shape,
        channels_first=channels_first(x, spec),
        training=spec.dims > 3 and wants_grad(x, weight, bias),
    )
    y = execute(x, weight, bias, spec, how)
    return layout.from_canonical(y, input.shape)


# N <= 3 calls in torch's layout that passed every check, by :func:`direct_key`: the native call each ran, bound to
# its arguments (:func:`convnd.lowering.bound`)
_DIRECT: dict[tuple[Any, ...], tuple[Callable[..., torch.Tensor], tuple[Any, ...]]] = {}
_DIRECT_MAX = 4096


def direct_key(
    transposed: bool, input: Any, weight: Any, bias: Any, arguments: tuple[Any, ...], layout: tuple[Any, Any, Any]
) -> tuple[Any, ...] | None:
    """Everything that decides whether a functional call passes convnd's checks and which spec it runs: its
    arguments' values (:func:`convnd.spec.argument_key`) and each operand's shape, dtype and device (a tensor of any
    type: the checks ask no more), and the weight's strides (whether torch reads it right as it is, see
    :func:`convnd.lowering.bound`). A call with the key of one that ran as a single native call (N <= 3, torch's
    layout) runs as that call did, without parsing its arguments or checking its operands again, its native call
    bound to its arguments (one torch call): 7.5 -> 6.0-6.3 us over F.conv2d on a tiny input before the binding
    (fastest rounds), about 1.4 us less with it in a tight loop.

    None (no shortcut) while tracing, for another layout (``layout``: channel_dim, spatial_dims, convolution), or
    for an operand that is not a tensor or an argument that is not plain ints and words.
    """
    channel_dim, spatial_dims, convolution = layout
    if (
        tracing()
        or convolution is not False
        or spatial_dims is not None
        or type(channel_dim) is not int
        or channel_dim != DEFAULT_CHANNEL_DIM
        or not isinstance(input, torch.Tensor)
        or not isinstance(weight, torch.Tensor)
        or weight.dim() > 5  # a lowered call: microseconds do not count there
    ):
        return None
    frozen = argument_key(arguments)
    if frozen is None:
        return None
    key = (transposed, frozen, input.shape, input.dtype, input.device, weight.shape, weight.stride(), weight.dtype,
           weight.device)  # fmt: skip
    if bias is None:
        return key
    if not isinstance(bias, torch.Tensor):
        return None
    return (*key, bias.shape, bias.dtype, bias.device)


def _remember(key: tuple[Any, ...] | None, spec: ConvSpec, weight: torch.Tensor) -> None:
    """Keep the native call of ``spec``, bound to its arguments for this weight's shape and strides
    (:func:`convnd.lowering.bound`), under ``key`` once a call has run it (a key is only made for a weight of at
    most 5 dims in torch's layout, N <= 3: one native call, see :func:`direct_key`)."""
    if key is None:
        return
    if len(_DIRECT) >= _DIRECT_MAX:
        _DIRECT.clear()
    _DIRECT[key] = bound(spec, weight)


def channels_first(x: torch.Tensor, spec: ConvSpec) -> bool:
    """Whether the channel axis of the (B, C, *spatial) view is outside its spatial axes in memory."""
    return spec.dims <= 3 or x.stride(-spec.dims - 1) >= max(x.stride()[-spec.dims :])


def kernel_of(weight: Any) -> tuple[int, ...]:
    """The kernel size a weight implies; its length is the rank."""
    shape = check_tensor("weight", weight).shape
    if len(shape) < 3:
        fail("weight", weight, "a tensor with at least 3 dims: (C_out, C_in / groups, *kernel)")
    if 0 in shape:
        fail("weight", weight, "a tensor with no zero-sized dim")
    return shape[2:]  # a torch.Size, a tuple (make_spec keys on it as on one, without copying it)


def conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    channel_dim: int = DEFAULT_CHANNEL_DIM,
    spatial_dims: Sequence[int] | None = None,
    convolution: bool = False,
) -> torch.Tensor:
    """N-d convolution (cross-correlation) where N is the weight's number of spatial dims.

    Args:
        input: (B, C_in, *spatial) or unbatched (C_in, *spatial).
        weight: (C_out, C_in / groups, *kernel); N = weight.dim() - 2.
        bias: (C_out,) or None.
        stride: an int or N ints.
        padding: an int, N ints, N (low, high) pairs (or a mix), ``'valid'`` or ``'same'``.
        dilation: an int or N ints.
        groups: splits the channels into this many independent convolutions.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``, for any N.
        channel_dim: the input's channel axis (negative counts from the end).
        spatial_dims: the input's N spatial axes, in the order of the kernel's dims; default:
            the N trailing axes other than ``channel_dim``. Every other axis is a batch axis
            (none, one or several). With both defaults the layout is torch's.
        convolution: True for true (mathematical) convolution: the kernel is flipped over its
            spatial dims; the stored weight is not touched.

    Shape:
        out[i] = floor((L[i] + low[i] + high[i] - dilation[i] * (kernel[i] - 1) - 1) / stride[i]) + 1
        per spatial dim; output (B, C_out, *out) or (C_out, *out), or in the input's own layout
        (same axis positions) when channel_dim/spatial_dims are given. Complex input and weight
        (same dtype) work for any N.

    Example:
        >>> x = torch.randn(2, 3, 5, 6, 7, 8)
        >>> w = torch.randn(4, 3, 3, 3, 3, 3)
        >>> conv(x, w, padding=1).shape
        torch.Size([2, 4, 5, 6, 7, 8])
        >>> conv(x.movedim(1, -1), w, padding=1, channel_dim=-1).shape  # (B, U, V, S, T, C)
        torch.Size([2, 5, 6, 7, 8, 4])
    """
    layout = (channel_dim, spatial_dims, convolution)
    return _call(input, weight, bias, (stride, padding, dilation, groups, padding_mode, 0), False, layout)


def conv_transpose(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    channel_dim: int = DEFAULT_CHANNEL_DIM,
    spatial_dims: Sequence[int] | None = None,
    convolution: bool = False,
) -> torch.Tensor:
    """N-d transposed convolution: the adjoint of :func:`conv` with the same arguments.

    Args:
        input: (B, C_in, *spatial) or unbatched (C_in, *spatial).
        weight: (C_in, C_out / groups, *kernel); N = weight.dim() - 2.
        bias: (C_out,) or None.
        stride, padding, dilation, groups: those of the convolution this is the adjoint of.
        output_padding: extra size on the high side, below max(stride, dilation) per dim.
        channel_dim, spatial_dims, convolution: as :func:`conv`; the output keeps the input's layout.

    Shape:
        out[i] = (L[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1)
        + output_padding[i] + 1 per spatial dim.

    Example:
        >>> x = torch.randn(1, 4, 3, 3, 3, 3)
        >>> w = torch.randn(4, 2, 2, 2, 2, 2)
        >>> conv_transpose(x, w, stride=2).shape
        torch.Size([1, 2, 6, 6, 6, 6])
    """
    layout = (channel_dim, spatial_dims, convolution)
    return _call(input, weight, bias, (stride, padding, dilation, groups, "zeros", output_padding), True, layout)


def _call(
    input: Any, weight: Any, bias: Any, arguments: tuple[Any, ...], transposed: bool, layout: tuple[Any, Any, Any]
) -> torch.Tensor:
    """:func:`conv` and :func:`conv_transpose`: a remembered direct call (:func:`direct_key`), else the spec from the
    weight and ``arguments`` (stride, padding, dilation, groups, padding_mode, output_padding) run by :func:`run`."""
    key = direct_key(transposed, input, weight, bias, arguments, layout)
    remembered = None if key is None else _DIRECT.get(key)
    if remembered is not None:
        fn, native_arguments = remembered
        return fn(input, weight, bias, *native_arguments)
    stride, padding, dilation, groups, padding_mode, output_padding = arguments
    spec = make_spec(
        kernel_of(weight), stride, padding, dilation, groups, padding_mode,
        transposed=transposed, output_padding=output_padding,
    )  # fmt: skip
    channel_dim, spatial_dims, convolution = layout
    y = run(input, weight, bias, spec, channel_dim=channel_dim, spatial_dims=spatial_dims, convolution=convolution)
    _remember(key, spec, weight)
    return y
