"""Tools to check a rewritten model against the original, for your own models too.

:class:`NativeConvolutions` records the rank of every native convolution torch runs
(forward and backward) below autograd, where exporters see them as well;
:func:`assert_equivalent` checks that a rewritten model computes the same outputs and
gradients as the original while running only convolutions of the ranks you allow.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree
from torch.utils._python_dispatch import TorchDispatchMode

from .rewriting import Ranks, allowed_ranks

_aten = torch.ops.aten
_RECORDED = {_aten.convolution: "forward", _aten.convolution_backward: "backward"}


class NativeConvolutions(TorchDispatchMode):
    """Record ``(pass, rank)`` for every ``aten.convolution`` and ``aten.convolution_backward`` that runs.

    ``F.conv1d/2d/3d`` and ``conv_transpose*`` all reach torch's kernels through these two ops,
    so the record is exactly what ran; the rank is the weight's number of spatial dims.

    Example:
        >>> with NativeConvolutions() as record:
        ...     _ = torch.nn.Conv1d(1, 1, 3)(torch.randn(1, 1, 8))
        >>> record.calls
        [('forward', 1)]
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func.overloadpacket in _RECORDED:
            self.calls.append((_RECORDED[func.overloadpacket], args[1].dim() - 2))
        return func(*args, **(kwargs or {}))

    @property
    def ranks(self) -> set[int]:
        """The ranks of every native convolution recorded, forward and backward."""
        return {rank for _, rank in self.calls}


def assert_equivalent(
    model: nn.Module,
    rewritten: nn.Module,
    *inputs: Any,
    ranks: Ranks,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> NativeConvolutions:
    """Assert that ``rewritten`` is ``model`` run on native convolutions of ``ranks`` only.

    Checks: the same ``state_dict`` keys and shapes; the same outputs and the same gradients
    of every parameter and floating input, for one random output cotangent; and that every
    native convolution the rewritten model ran, forward and backward, has a rank in ``ranks``.
    Both models run with the same RNG state, so dropout draws the same masks.

    Tensors match when ``max|got - expected| <= atol + rtol * max|expected|``: the error is
    measured against the tensor's scale, not element by element, because an emulation sums
    the same products in another order (a lowered convolution adds its taps one by one), and
    the rounding of a long float32 sum is relative to the sum of its terms' magnitudes, which
    an element that cancels to near zero does not show. ``atol`` covers a whole tensor that
    cancels (the bias gradient of a convolution followed by a normalization is zero, summed
    from nonzero terms). The defaults suit float32 models with activations of order 1; on a GPU,
    set ``torch.backends.cudnn.allow_tf32 = False`` first, as TF32 rounds each conv shape differently.

    Args:
        model: the original model.
        rewritten: its rewrite (``convnd.rewrite(model, ranks)``).
        inputs: the positional inputs of one forward call.
        ranks: the rank, or set of ranks, the rewritten model may run.
        rtol, atol: the tolerance, relative to each tensor's largest magnitude, and absolute.

    Returns:
        The record of the rewritten model's native convolutions.
    """
    allowed = allowed_ranks(ranks)
    before, after = model.state_dict(), rewritten.state_dict()
    _require(
        [(k, v.shape) for k, v in before.items()] == [(k, v.shape) for k, v in after.items()],
        "the state_dict keys or shapes differ",
    )
    expected, expected_grads = _run(model, inputs, record=None)
    record = NativeConvolutions()
    got, got_grads = _run(rewritten, inputs, record=record)
    got_leaves, got_structure = _pytree.tree_flatten(got)
    expected_leaves, expected_structure = _pytree.tree_flatten(expected)
    _require(got_structure == expected_structure, "the outputs have different structures")
    for i, (a, b) in enumerate(zip(got_leaves, expected_leaves)):
        _require_close(a, b, f"output {i}", rtol, atol)
    _require(list(got_grads) == list(expected_grads), "the models have different parameters")
    for name, grad in got_grads.items():
        _require_close(grad, expected_grads[name], f"the gradient of {name}", rtol, atol)
    _require(bool(record.calls), "the rewritten model ran no native convolution")
    _require(
        record.ranks <= allowed,
        f"the rewritten model ran native convolutions of ranks {sorted(record.ranks)}, allowed {sorted(allowed)}",
    )
    return record


def _require_close(got: Any, expected: Any, what: str, rtol: float, atol: float) -> None:
    """``got`` equals ``expected`` within the scale-relative tolerance of :func:`assert_equivalent`."""
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor):
        _require((got is None and expected is None) or got == expected, f"{what} differs: {got} != {expected}")
        return
    _require(got.shape == expected.shape and got.dtype == expected.dtype, f"{what} has another shape or dtype")
    error = (got - expected).abs().max().item() if got.numel() else 0.0
    scale = expected.abs().max().item() if expected.numel() else 0.0
    _require(error <= atol + rtol * scale, f"{what} differs by {error:.3g}, allowed {atol + rtol * scale:.3g}")


def _require(condition: bool, message: str) -> None:
    """An AssertionError that ``python -O`` does not strip."""
    if not condition:
        raise AssertionError(message)


def _run(
    model: nn.Module, inputs: tuple[Any, ...], record: NativeConvolutions | None
) -> tuple[Any, dict[str, torch.Tensor | None]]:
    """Outputs, and gradients by name, of one forward and backward from a fixed RNG state."""
    leaves, spec = _pytree.tree_flatten(inputs)
    leaves = [_grad_leaf(t) for t in leaves]
    inputs = _pytree.tree_unflatten(leaves, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with record if record is not None else contextlib.nullcontext():
            outputs = model(*inputs)
            floats = [t for t in _pytree.tree_leaves(outputs) if isinstance(t, torch.Tensor) and t.requires_grad]
            # by shape, not randn_like: that draws in memory order, and the two models' outputs may have other strides
            cotangents = [torch.randn(t.shape, dtype=t.dtype, device=t.device) for t in floats]
            wrt = {f"input {i}": t for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.requires_grad}
            wrt.update((name, p) for name, p in model.named_parameters() if p.requires_grad)
            grads = torch.autograd.grad(floats, list(wrt.values()), cotangents, allow_unused=True)
    return outputs, dict(zip(wrt, grads))


def _grad_leaf(value: Any) -> Any:
    """A floating tensor input becomes a fresh leaf that requires grad (other values pass through)."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_(True)
    return value
