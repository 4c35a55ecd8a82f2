"""Checks of the tensors a convolution is called with, against its spec.

Run before any kernel so a user never sees an ATen internal message: each
check names the argument, what it got and what the convolution expected.
"""

from __future__ import annotations

from typing import Any

import torch

from .caching import tracing
from .errors import fail
from .padding import check_padding_fits
from .spec import ConvSpec

# (id(spec), input shape, weight shape, bias shape) -> (spec, batched), for operands whose shapes
# passed every check: a call with shapes seen before skips straight to the dtype/device checks.
_PASSED: dict[tuple[Any, ...], tuple[ConvSpec, bool]] = {}
_PASSED_MAX = 4096


def check_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` must be a floating or complex tensor."""
    if not isinstance(value, torch.Tensor):
        fail(name, value, "a torch.Tensor", kind="type")
    dtype = value.dtype
    if not (dtype.is_floating_point or dtype.is_complex):
        fail(name, value, "a floating-point or complex tensor", kind="type")
    return value


def check_operands(input: Any, weight: Any, bias: Any, spec: ConvSpec) -> bool:
    """Validate input, weight and bias for ``spec``; return whether the input is batched.

    Types, dtypes and devices are checked on every call; shapes once per distinct
    (spec, shapes) combination, since they alone decide the outcome of those checks.

    Shape:
        input (B, C_in, *spatial) or (C_in, *spatial); weight (C_out, C_in/groups, *kernel),
        or (C_in, C_out/groups, *kernel) when transposed; bias (C_out,).
    """
    dtype, device = check_tensor("input", input).dtype, input.device
    # the passing case inline (this runs on every call); _check_like says what is wrong
    if not isinstance(weight, torch.Tensor) or weight.dtype is not dtype or weight.device != device:
        _check_like(weight, "weight", dtype, device)
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype is not dtype or bias.device != device):
        _check_like(bias, "bias", dtype, device)
    if tracing():  # traced shapes may be symbolic (unhashable): see convnd.caching
        return _check_shapes(input, weight, bias, spec)
    # keyed by id(spec), cheaper than hashing it; the entry holds the spec, so the id stays its own
    key = (id(spec), input.shape, weight.shape, None if bias is None else bias.shape)
    passed = _PASSED.get(key)
    if passed is not None and passed[0] is spec:
        return passed[1]
    batched = _check_shapes(input, weight, bias, spec)
    if len(_PASSED) >= _PASSED_MAX:
        _PASSED.clear()
    _PASSED[key] = (spec, batched)
    return batched


def _check_shapes(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> bool:
    """The shape checks of :func:`check_operands`; returns whether the input is batched."""
    n = spec.dims
    if input.dim() not in (n + 1, n + 2):
        fail(
            "input",
            input,
            f"a tensor with {n + 1} (unbatched) or {n + 2} (batched) dims",
            reason=f"the weight of shape {tuple(weight.shape)} makes this a {n}-d convolution",
        )
    if tuple(weight.shape[2:]) != spec.kernel or weight.dim() != n + 2:
        expected = f"a tensor with kernel size {spec.kernel} in its last {n} dims"
        fail("weight", weight, expected, reason="kernel_size and weight disagree")
    batched = input.dim() == n + 2
    _check_channels(input, batched, weight, spec)
    out_channels = weight.shape[1] * spec.groups if spec.transposed else weight.shape[0]
    if bias is not None and tuple(bias.shape) != (out_channels,):
        fail("bias", bias, f"a tensor of shape ({out_channels},)", reason="one value per output channel")
    _check_spatial(input, spec)
    return batched


def _check_like(other: Any, name: str, dtype: torch.dtype, device: torch.device) -> None:
    """``other`` must be a tensor of the input's dtype (so floating or complex too) and device."""
    if not isinstance(other, torch.Tensor):
        fail(name, other, "a torch.Tensor", kind="type")
    if other.dtype is not dtype:  # dtypes are singletons
        check_tensor(name, other)  # an integer tensor is a type error before it is a dtype mix
        reason = "convnd does not mix dtypes"
        if other.dtype.is_complex != dtype.is_complex:
            # torch's kernels reject real x complex too; converting the real side keeps every value
            real, target = ("input", other.dtype) if other.dtype.is_complex else (name, dtype)
            reason = f"torch's convolutions do not mix real and complex; convert with {real}.to({target})"
        fail(name, other, f"a tensor of the input's dtype {dtype}", reason=reason)
    if other.device != device:
        fail(name, other, f"a tensor on the input's device {device}", reason=f"it is on {other.device}")


def _check_channels(input: torch.Tensor, batched: bool, weight: torch.Tensor, spec: ConvSpec) -> None:
    groups = spec.groups
    if 0 in weight.shape:
        fail("weight", weight, "a tensor with no zero-sized dim")
    if spec.transposed:
        expected_in, per_group_out = weight.shape[0], weight.shape[0]
    else:
        expected_in, per_group_out = weight.shape[1] * groups, weight.shape[0]
    if per_group_out % groups:
        dim = "in_channels (weight.shape[0])" if spec.transposed else "out_channels (weight.shape[0])"
        fail("groups", groups, f"a divisor of {dim} = {weight.shape[0]}")
    channel_dim = 1 if batched else 0
    if input.shape[channel_dim] != expected_in:
        how = "weight.shape[0]" if spec.transposed else f"weight.shape[1] * groups = {weight.shape[1]} * {groups}"
        if not batched:
            how += f"; a {input.dim()}-dim input to a {spec.dims}-d convolution is unbatched (C_in, *spatial)"
        channels = "1 channel" if expected_in == 1 else f"{expected_in} channels"
        fail("input", input, f"a tensor with {channels} in dim {channel_dim}", reason=how)


def _check_spatial(input: torch.Tensor, spec: ConvSpec) -> None:
    spatial = tuple(input.shape[input.dim() - spec.dims :])
    if 0 in spatial:
        fail("input", input, f"a tensor whose last {spec.dims} (spatial) sizes are all >= 1")
    if spec.transposed:
        out = spec.output_size(spatial)
        if any(o < 1 for o in out):
            fail(
                "padding",
                tuple(lo for lo, _ in spec.padding),
                f"small enough to leave an output for input size {spatial}",
                reason=f"the output size would be {out}",
            )
        return
    check_padding_fits(spatial, spec.padding, spec.padding_mode)
    for axis, (size, (lo, hi), window) in enumerate(zip(spatial, spec.padding, spec.window)):
        if size + lo + hi < window:
            fail(
                "input",
                input,
                f"a tensor of size >= {window} in spatial dim {axis} after padding (the dilated kernel's extent)",
                reason=f"size {size} + padding {lo} + {hi} = {size + lo + hi}",
            )
