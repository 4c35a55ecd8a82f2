"""Padding of any number of spatial dims, in every mode convnd accepts.

``torch.nn.functional.pad`` handles reflect/replicate/circular only for the last
three dims of a 3-, 4- or 5-d tensor; past that convnd pads with one gather over
index vectors computed per dim, which is exact (pure copying) for any rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import fail
from .spec import Pairs

_TORCH_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def check_padding_fits(spatial: tuple[int, ...], padding: Pairs, mode: str) -> None:
    """Reflect needs padding < size, circular padding <= size (torch's rules), per dim."""
    for axis, (size, (lo, hi)) in enumerate(zip(spatial, padding)):
        if mode == "reflect" and max(lo, hi) >= size:
            fail(
                "padding",
                padding,
                f"smaller than the input size {size} in spatial dim {axis} for padding_mode='reflect'",
                reason="reflect padding cannot be wider than the input",
            )
        if mode == "circular" and max(lo, hi) > size:
            fail(
                "padding",
                padding,
                f"at most the input size {size} in spatial dim {axis} for padding_mode='circular'",
                reason="circular padding wraps around the input once at most",
            )


def torch_pad_order(padding: Pairs) -> list[int]:
    """Pairs in F.pad's order: last dim first, (low, high) for each (torch's _reversed_padding_repeated_twice)."""
    return [p for pair in reversed(padding) for p in pair]


def pad_nd(x: torch.Tensor, padding: Pairs, mode: str) -> torch.Tensor:
    """Pad the trailing ``len(padding)`` dims of ``x`` by (low, high) pairs in ``mode``.

    Args:
        x: a tensor whose last N dims are spatial.
        padding: N (low, high) pairs.
        mode: ``zeros``, ``reflect``, ``replicate`` or ``circular``.

    Shape:
        (*, L_1, ..., L_N) -> (*, L_1 + lo_1 + hi_1, ..., L_N + lo_N + hi_N)
    """
    if not any(lo or hi for lo, hi in padding):
        return x
    dims = len(padding)
    if mode == "zeros" or (dims <= 3 and x.dim() in (dims + 1, dims + 2) and not _pad_backward_raises(x, mode)):
        return F.pad(x, torch_pad_order(padding), mode=_TORCH_MODES[mode])
    index = [_source_index(size, lo, hi, mode, x.device) for size, (lo, hi) in zip(x.shape[-dims:], padding)]
    grids = [i.view((-1,) + (1,) * (dims - 1 - axis)) for axis, i in enumerate(index)]
    return x[(Ellipsis, *grids)]


def _pad_backward_raises(x: torch.Tensor, mode: str) -> bool:
    """Whether torch's own pad would fail backward: CUDA reflection-pad backward has no deterministic kernel.

    Under ``torch.use_deterministic_algorithms(True)`` it raises; the gather below copies the
    same elements forward and its backward (index_put with accumulate) is deterministic.
    """
    return mode == "reflect" and x.is_cuda and x.requires_grad and torch.are_deterministic_algorithms_enabled()


def _source_index(size: int, lo: int, hi: int, mode: str, device: torch.device) -> torch.Tensor:
    """For each padded position along one dim, the input position it copies."""
    position = torch.arange(-lo, size + hi, device=device)
    if mode == "replicate":
        return position.clamp(0, size - 1)
    if mode == "circular":
        return position.remainder(size)
    # reflect about the first and last element, which are not repeated
    position = position.abs()
    return torch.where(position > size - 1, 2 * (size - 1) - position, position)
