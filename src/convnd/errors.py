"""The errors convnd raises, and the one place that builds their messages.

Every user-facing check in convnd ends in :func:`fail`, so messages share one
shape: the argument, the value received, and what was expected. The classes
subclass ``ValueError``/``TypeError`` so existing ``except`` clauses keep working.
"""

from __future__ import annotations

from typing import Any, NoReturn


class ConvndError(Exception):
    """Base class of every error raised by convnd."""


class ConvndValueError(ConvndError, ValueError):
    """An argument has the right type but a value convnd cannot use."""


class ConvndTypeError(ConvndError, TypeError):
    """An argument has a type convnd cannot use."""


def describe(value: Any) -> str:
    """Render a value for an error message: tensors by shape and dtype, the rest by repr."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        # name foreign arrays (numpy) by their type, so "must be a torch.Tensor" reads right
        kind = type(value)
        kind = "tensor" if kind.__module__.startswith("torch") else f"{kind.__module__}.{kind.__qualname__}"
        return f"a {kind} of shape {tuple(shape)} and dtype {dtype}"
    return repr(value)


def fail(argument: str, value: Any, expected: str, *, reason: str = "", kind: str = "value") -> NoReturn:
    """Raise convnd's error for ``argument``.

    Args:
        argument: the name the user knows the argument by (``"stride"``, ``"input"``).
        value: what the user passed; rendered with :func:`describe`.
        expected: what would have been accepted, as a noun phrase.
        reason: an optional clause saying why, appended after the expectation.
        kind: ``"value"`` for :class:`ConvndValueError`, ``"type"`` for :class:`ConvndTypeError`.
    """
    message = f"{argument} must be {expected}, got {describe(value)}"
    if reason:
        message += f" ({reason})"
    error = ConvndTypeError if kind == "type" else ConvndValueError
    raise error(message) from None
