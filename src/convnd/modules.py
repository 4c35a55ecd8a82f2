"""Convolution modules for any rank, drop-in for torch.nn's Conv and ConvTranspose classes.

One base class holds everything; the public classes differ only in the rank they
assume for an int ``kernel_size`` (``None`` for the N-d classes, which then need
``dims=``). Attribute names, parameter shapes, initialisation (the same RNG calls
in the same order), ``repr`` and ``state_dict`` keys follow ``torch.nn.ConvXd``, so
checkpoints load both ways and a seed gives the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import init

from .checks import check_tensor
from .errors import fail
from .functional import run
from .layout import DEFAULT_CHANNEL_DIM, check_keywords, resolve_layout
from .padding import torch_pad_order
from .spec import ConvSpec, IntOrTuple, PaddingArg, as_int, as_tuple, make_spec, module_spec, resolve_kernel

# the attributes a module's spec is built from; assigning one invalidates the kept spec
_SPEC_ATTRIBUTES = frozenset(
    ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode", "transposed", "output_padding")
)


class _ConvBase(nn.Module):
    """Shared state and behaviour of every convnd convolution module (see module docstring)."""

    _rank: int | None = None  # the rank an int kernel_size means; None: ask for dims=
    # layout keywords: plain attributes (never in state_dict); class defaults let older pickles load
    channel_dim: int = DEFAULT_CHANNEL_DIM
    spatial_dims: tuple[int, ...] | None = None
    convolution: bool = False
    __constants__ = (
        "stride", "padding", "dilation", "groups", "padding_mode", "output_padding",
        "in_channels", "out_channels", "kernel_size",
    )  # fmt: skip

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple,
        padding: PaddingArg,
        dilation: IntOrTuple,
        transposed: bool,
        output_padding: IntOrTuple,
        groups: int,
        bias: bool,
        padding_mode: str,
        device: Any = None,
        dtype: Any = None,
        dims: int | None = None,
        *,
        channel_dim: int = DEFAULT_CHANNEL_DIM,
        spatial_dims: Any = None,
        convolution: bool = False,
    ) -> None:
        super().__init__()
        kernel = resolve_kernel(kernel_size, self._rank, dims)
        self.channel_dim, self.spatial_dims = check_keywords(len(kernel), channel_dim, spatial_dims)
        if not isinstance(convolution, bool):
            fail("convolution", convolution, "True or False", kind="type")
        self.convolution = convolution
        spec = make_spec(
            kernel,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            transposed=transposed,
            output_padding=output_padding,
        )
        self.in_channels = as_int("in_channels", in_channels, minimum=1)
        self.out_channels = as_int("out_channels", out_channels, minimum=1)
        for name, count in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if count % spec.groups:
                fail(name, count, f"divisible by groups={spec.groups}")
        self.kernel_size = spec.kernel
        self.stride = spec.stride
        self.padding = _padding_attribute(padding, spec)
        self.dilation = spec.dilation
        self.transposed = transposed
        self.output_padding = spec.output_padding
        self.groups = spec.groups
        self.padding_mode = spec.padding_mode
        # F.pad order (last dim first), as torch.nn keeps it for non-zero padding modes
        self._reversed_padding_repeated_twice = torch_pad_order(spec.padding)
        factory = {"device": device, "dtype": dtype}
        if transposed:
            shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        else:
            shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's initialisation, call for call: kaiming-uniform weight, uniform bias in ±1/sqrt(fan_in)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    @property
    def dims(self) -> int:
        """The number of spatial dims this module convolves."""
        return len(self.kernel_size)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _SPEC_ATTRIBUTES:
            self.__dict__.pop("_spec", None)  # rebuilt (and validated) on the next forward

    @property
    def spec(self) -> ConvSpec:
        """The validated spec of the current attributes: assigning any of them takes effect on the next call.

        Kept between calls (rebuilding it would cost more than torch's own per-call overhead) and
        dropped whenever one of the attributes it is built from is assigned.
        """
        spec = self.__dict__.get("_spec")
        if spec is None:
            spec = self.__dict__["_spec"] = module_spec(self)
        return spec

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.padding):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        if self.channel_dim != DEFAULT_CHANNEL_DIM:
            s += ", channel_dim={channel_dim}"
        if self.spatial_dims is not None:
            s += ", spatial_dims={spatial_dims}"
        if self.convolution:
            s += ", convolution=True"
        return s.format(**{**self.__dict__, **self._layout_keywords()})

    def _layout_keywords(self, *, with_flip: bool = True) -> dict[str, Any]:
        """The keywords that say where the input's axes are (and whether the kernel is flipped)."""
        keywords = {"channel_dim": self.channel_dim, "spatial_dims": self.spatial_dims}
        return {**keywords, "convolution": self.convolution} if with_flip else keywords


def _padding_attribute(padding: PaddingArg, spec: ConvSpec) -> str | tuple[Any, ...]:
    """What ``module.padding`` holds: the word, one int per dim (as torch), or (low, high) pairs."""
    if isinstance(padding, str):
        return padding
    if spec.symmetric:
        return tuple(lo for lo, _ in spec.padding)
    return spec.padding


class ConvNd(_ConvBase):
    """Convolution over N spatial dims, N taken from a tuple ``kernel_size`` or ``dims=``.

    Args:
        in_channels: channels of the input.
        out_channels: channels produced.
        kernel_size: a tuple (its length is N) or an int together with ``dims=``.
        stride: an int or N ints.
        padding: an int, N ints, N (low, high) pairs, ``'valid'`` or ``'same'``.
        dilation: an int or N ints.
        groups: channel groups; must divide both channel counts.
        bias: add a learnable bias.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``, for any N.
        dims: the rank, needed when ``kernel_size`` is an int.

    Shape:
        input (B, C_in, *spatial) or (C_in, *spatial) -> (B, C_out, *out) with
        out[i] = floor((L[i] + low[i] + high[i] - dilation[i] * (kernel[i] - 1) - 1) / stride[i]) + 1.

    Attributes:
        weight: (out_channels, in_channels / groups, *kernel_size).
        bias: (out_channels,) or None.

    Example:
        >>> m = ConvNd(2, 4, kernel_size=(3, 3, 3, 3), padding="same")
        >>> m(torch.randn(1, 2, 5, 5, 5, 5)).shape
        torch.Size([1, 4, 5, 5, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: PaddingArg = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        dims: int | None = None,
        channel_dim: int = DEFAULT_CHANNEL_DIM,
        spatial_dims: Any = None,
        convolution: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0, groups, bias, padding_mode,
            device, dtype, dims, channel_dim=channel_dim, spatial_dims=spatial_dims, convolution=convolution,
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return run(
            input, self.weight, self.bias, self.spec,
            channel_dim=self.channel_dim, spatial_dims=self.spatial_dims, convolution=self.convolution,
        )  # fmt: skip


class Conv1d(ConvNd):
    """Drop-in for ``torch.nn.Conv1d``; a tuple ``kernel_size`` of another length sets the rank (see ConvNd)."""

    _rank = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: PaddingArg = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        channel_dim: int = DEFAULT_CHANNEL_DIM,
        spatial_dims: Any = None,
        convolution: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device,
            dtype, channel_dim=channel_dim, spatial_dims=spatial_dims, convolution=convolution,
        )  # fmt: skip


class Conv2d(Conv1d):
    """Drop-in for ``torch.nn.Conv2d``; a tuple ``kernel_size`` of another length sets the rank (see ConvNd)."""

    _rank = 2


class Conv3d(Conv1d):
    """Drop-in for ``torch.nn.Conv3d``; a tuple ``kernel_size`` of another length sets the rank (see ConvNd)."""

    _rank = 3


class ConvTransposeNd(_ConvBase):
    """Transposed convolution over N spatial dims: the adjoint of ConvNd, N from the kernel or ``dims=``.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, bias, dilation, dims: as ConvNd.
        padding: an int or N ints: how much the full output is cropped on each side.
        output_padding: extra size on the high side of each dim, below max(stride, dilation).
        padding_mode: only ``'zeros'`` (as torch).

    Shape:
        input (B, C_in, *spatial) or (C_in, *spatial) -> (B, C_out, *out) with
        out[i] = (L[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + output_padding[i] + 1.

    Attributes:
        weight: (in_channels, out_channels / groups, *kernel_size).
        bias: (out_channels,) or None.

    Example:
        >>> m = ConvTransposeNd(4, 2, kernel_size=(2, 2, 2, 2), stride=2)
        >>> m(torch.randn(1, 4, 3, 3, 3, 3)).shape
        torch.Size([1, 2, 6, 6, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrTuple = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        dims: int | None = None,
        channel_dim: int = DEFAULT_CHANNEL_DIM,
        spatial_dims: Any = None,
        convolution: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, True, output_padding, groups, bias,
            padding_mode, device, dtype, dims, channel_dim=channel_dim, spatial_dims=spatial_dims,
            convolution=convolution,
        )  # fmt: skip

    def forward(self, input: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        """Run the transposed convolution; ``output_size`` picks the output_padding (as torch.nn).

        Args:
            input: (B, C_in, *spatial) or (C_in, *spatial).
            output_size: the spatial output size, optionally preceded by the input's batch and
                channel sizes (as torch.nn); overrides ``output_padding`` for this call. Each size
                must lie between the output without output_padding and that plus
                ``max(stride, dilation) - 1``.
        """
        spec = self.spec
        if output_size is not None:
            spec = spec_for_output_size(spec, input, output_size, **self._layout_keywords(with_flip=False))
        return run(input, self.weight, self.bias, spec, **self._layout_keywords())


def spec_for_output_size(
    spec: ConvSpec,
    input: torch.Tensor,
    output_size: Any,
    *,
    channel_dim: int = DEFAULT_CHANNEL_DIM,
    spatial_dims: Sequence[int] | None = None,
) -> ConvSpec:
    """The transposed ``spec`` whose output_padding makes the output ``output_size``.

    Args:
        spec: a transposed convolution.
        input: the input it will run on (its rank and spatial sizes are read).
        output_size: N spatial sizes (in kernel order), or a whole output shape: N + 2 (batched) /
            N + 1 (unbatched) sizes as torch.nn takes it, or input.dim() sizes in the input's own
            layout. The range rule is :meth:`ConvSpec.output_padding_for`.
        channel_dim, spatial_dims: the input's layout (see :mod:`convnd.layout`).
    """
    n = spec.dims
    layout = resolve_layout(check_tensor("input", input).dim(), n, channel_dim, spatial_dims)
    if layout.torch_layout and input.dim() not in (n + 1, n + 2):
        return spec  # run() reports the input's rank
    size = tuple(output_size) if isinstance(output_size, Sequence) else output_size
    if isinstance(size, tuple) and len(size) == input.dim():
        size = layout.spatial_size(size)  # a whole output shape; its spatial axes are where the input's are
    if not isinstance(size, tuple) or len(size) != n:
        whole = "with the input's leading sizes in front" if layout.torch_layout else "in the input's layout"
        fail(
            "output_size",
            size,
            f"a sequence of {n} spatial sizes, or {input.dim()} {whole}",
            reason=f"the input has {input.dim()} dims",
            kind="type" if not isinstance(size, tuple) else "value",
        )
    size = as_tuple("output_size", size, n, minimum=1)
    return spec.with_output_padding(spec.output_padding_for(layout.spatial_size(input.shape), size))


class ConvTranspose1d(ConvTransposeNd):
    """Drop-in for ``torch.nn.ConvTranspose1d``; a tuple ``kernel_size`` of another length sets the rank."""

    _rank = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrTuple = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        channel_dim: int = DEFAULT_CHANNEL_DIM,
        spatial_dims: Any = None,
        convolution: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias, dilation,
            padding_mode, device, dtype, channel_dim=channel_dim, spatial_dims=spatial_dims, convolution=convolution,
        )  # fmt: skip


class ConvTranspose2d(ConvTranspose1d):
    """Drop-in for ``torch.nn.ConvTranspose2d``; a tuple ``kernel_size`` of another length sets the rank."""

    _rank = 2


class ConvTranspose3d(ConvTranspose1d):
    """Drop-in for ``torch.nn.ConvTranspose3d``; a tuple ``kernel_size`` of another length sets the rank."""

    _rank = 3
