"""Checks of the tensors a convolution is called with, against its spec.

Run before any kernel so a user never sees an ATen internal message: each
check names the argument, what it got and what the convolution expected.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import fail
from .padding import check_padding_fits
from .spec import ConvSpec


def check_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` must be a floating or complex tensor."""
    if not isinstance(value, torch.Tensor):
        fail(name, value, "a torch.Tensor", kind="type")
    if not (value.is_floating_point() or value.is_complex()):
        fail(name, value, "a floating-point or complex tensor", kind="type")
    return value


def check_operands(input: Any, weight: Any, bias: Any, spec: ConvSpec) -> bool:
    """Validate input, weight and bias for ``spec``; return whether the input is batched.

    Shape:
        input (B, C_in, *spatial) or (C_in, *spatial); weight (C_out, C_in/groups, *kernel),
        or (C_in, C_out/groups, *kernel) when transposed; bias (C_out,).
    """
    input = check_tensor("input", input)
    weight = check_tensor("weight", weight)
    n = spec.dims
    if input.dim() not in (n + 1, n + 2):
        fail(
            "input",
            input,
            f"a tensor with {n + 1} (unbatched) or {n + 2} (batched) dims",
            reason=f"the weight of shape {tuple(weight.shape)} makes this a {n}-d convolution",
        )
    _check_same_kind(input, weight, "weight")
    batched = input.dim() == n + 2
    channels = input.shape[1 if batched else 0]
    _check_channels(channels, weight, spec)
    out_channels = weight.shape[1] * spec.groups if spec.transposed else weight.shape[0]
    if bias is not None:
        bias = check_tensor("bias", bias)
        _check_same_kind(input, bias, "bias")
        if tuple(bias.shape) != (out_channels,):
            fail("bias", bias, f"a tensor of shape ({out_channels},)", reason="one value per output channel")
    spatial = tuple(input.shape[-n:])
    _check_spatial(spatial, spec)
    return batched


def _check_same_kind(input: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if other.dtype != input.dtype:
        reason = "convnd does not mix dtypes"
        if other.is_complex() != input.is_complex():
            # torch's kernels reject real x complex too; converting the real side keeps every value
            real, target = ("input", other.dtype) if other.is_complex() else (name, input.dtype)
            reason = f"torch's convolutions do not mix real and complex; convert with {real}.to({target})"
        fail(name, other, f"of the input's dtype {input.dtype}", reason=reason)
    if other.device != input.device:
        fail(name, other, f"on the input's device {input.device}", reason=f"it is on {other.device}")


def _check_channels(channels: int, weight: torch.Tensor, spec: ConvSpec) -> None:
    groups = spec.groups
    if any(k == 0 for k in weight.shape[2:]) or weight.shape[0] == 0 or weight.shape[1] == 0:
        fail("weight", weight, "a tensor with no zero-sized dim")
    if spec.transposed:
        expected_in, per_group_out = weight.shape[0], weight.shape[0]
    else:
        expected_in, per_group_out = weight.shape[1] * groups, weight.shape[0]
    if per_group_out % groups:
        dim = "in_channels (weight.shape[0])" if spec.transposed else "out_channels (weight.shape[0])"
        fail("groups", groups, f"a divisor of {dim} = {weight.shape[0]}")
    if channels != expected_in:
        how = "weight.shape[0]" if spec.transposed else f"weight.shape[1] * groups = {weight.shape[1]} * {groups}"
        fail("input", channels, f"{expected_in} channels ({how})", reason="channel count of the input")


def _check_spatial(spatial: tuple[int, ...], spec: ConvSpec) -> None:
    if any(size == 0 for size in spatial):
        fail("input", spatial, "spatial sizes >= 1")
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
                spatial,
                f"at least {window} in spatial dim {axis} after padding (the dilated kernel's extent)",
                reason=f"size {size} + padding {lo}+{hi} is smaller than the kernel",
            )
