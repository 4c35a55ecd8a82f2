"""``convnd.rewrite``: make a whole model run only native convolutions of allowed ranks.

Every convolution whose native rank is not allowed is replaced by its
:func:`~convnd.emulation.emulate` view at the nearest allowed rank; everything else
(other layers, parameters, buffers, hooks, the ``state_dict``) is left as it is, so
checkpoints load into the rewritten model and back.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any, Union

import torch
from torch import nn

from .emulation import convolution_class, emulate, is_convolution, native_rank_of, running_rank, unemulated
from .errors import fail

Ranks = Union[int, Collection[int]]


def rewrite(model: nn.Module, dims: Ranks, inplace: bool = False) -> nn.Module:
    """The model with every convolution running on native convolutions of an allowed rank.

    Args:
        model: any module; it may itself be a convolution.
        dims: the allowed rank (1, 2 or 3) or a set of them. A convolution whose native
            rank is not allowed goes to the nearest allowed rank; on a tie (2-d with
            ``{1, 3}``) the higher one, since raising the rank is one native call over a
            singleton dim while lowering it is one call per kernel tap of the extra dims.
        inplace: replace the convolutions inside ``model`` itself instead of a deep copy.

    Returns:
        The rewritten model (``model`` itself when ``inplace``; a new root when ``model`` is a
        convolution that needed replacing). Its ``state_dict`` has the same keys and shapes;
        a convolution used twice is replaced by one emulation used twice, and parameters
        shared between convolutions stay shared.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 5, stride=2), torch.nn.ReLU())
        >>> flat = rewrite(model, 2)                       # every convolution now runs as Conv2d
        >>> flat.state_dict().keys() == model.state_dict().keys()
        True
    """
    allowed = allowed_ranks(dims)
    if not isinstance(model, nn.Module):
        fail("model", model, "a torch.nn.Module", kind="type")
    if not inplace:
        model = copy_model(model)
    replaced: dict[int, nn.Module] = {}
    if is_convolution(model):
        return _replacement(model, "model", allowed, replaced) or model
    # every replacement is made (and checked) before any is put in, so an error leaves the model as it was
    swaps = []
    for path, parent in model.named_modules():
        for name, child in parent._modules.items():
            where = ".".join(part for part in ("model", path, name) if part)
            new = _replacement(child, where, allowed, replaced) if is_convolution(child) else None
            if new is not None:
                swaps.append((parent, name, new))
    for parent, name, new in swaps:
        parent._modules[name] = new
    return model


def allowed_ranks(dims: Any) -> frozenset[int]:
    """``dims`` as a non-empty set of native ranks (an int is a set of one)."""
    if isinstance(dims, (str, bytes)) or not isinstance(dims, (int, Collection)):
        fail("dims", dims, "an int or a set of ints, each 1, 2 or 3", kind="type")
    if isinstance(dims, int):
        return frozenset((native_rank_of(dims),))
    if not dims:
        fail("dims", dims, "a non-empty set of ranks", reason="a model needs at least one rank to run on")
    return frozenset(native_rank_of(rank) for rank in dims)


def nearest_rank(rank: int, allowed: Collection[int]) -> int:
    """The allowed rank closest to ``rank``, the higher one on a tie (see :func:`rewrite`)."""
    return min(allowed, key=lambda r: (abs(r - rank), -r))


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies modules under the old ``torch.nn.utils.weight_norm``.

    That hook keeps the computed weight as a plain non-leaf tensor attribute, which deepcopy
    refuses; it is recomputed before every forward, so a detached copy stands in for it.
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _replacement(
    module: nn.Module, where: str, allowed: frozenset[int], replaced: dict[int, nn.Module]
) -> nn.Module | None:
    """The emulation that replaces ``module``, or None when its rank is allowed."""
    if running_rank(module) in allowed:
        return None
    if id(module) not in replaced:
        convolution_class(module, where)  # names the module in the error when it cannot be emulated
        target = nearest_rank(len(module.kernel_size), allowed)
        plain = unemulated(module)  # an earlier rewrite's emulation may just go back to running natively
        replaced[id(module)] = plain if running_rank(plain) == target else emulate(module, target)
    return replaced[id(module)]
