"""Caches of pure argument processing that step aside while torch.compile or torch.export trace.

convnd caches what it derives from arguments and shapes (specs, layouts, checked shapes)
so an eager call costs microseconds. While a graph is being traced the cache is the wrong
tool: the traced function runs once per graph anyway (the compiled graph is the cache),
sizes may be symbolic ``torch.SymInt``s, which cannot be hashed, and Dynamo warns that it
ignores ``functools.lru_cache`` wrappers. :func:`tracing` says when to bypass a cache;
:func:`trace_safe_cache` is ``functools.lru_cache`` with that bypass built in.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


# True while torch.compile (Dynamo) or torch.export traces the calling code. torch's own function, not a wrapper:
# it runs several times on every convnd call, and Dynamo recognizes it by identity (it reads as True in a trace)
tracing: Callable[[], bool] = torch.compiler.is_compiling


def trace_safe_cache(maxsize: int) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` that calls the function directly while :func:`tracing`.

    The wrapper keeps ``cache_info`` and ``cache_clear`` and the function's ``__wrapped__``.

    Example:
        >>> @trace_safe_cache(maxsize=16)
        ... def square(n: int) -> int:
        ...     return n * n
        >>> square(3), square.cache_info().hits
        (9, 0)
    """

    def decorate(function: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(function)

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            if tracing():
                return function(*args, **kwargs)
            return cached(*args, **kwargs)

        call.cache_info = cached.cache_info  # type: ignore[attr-defined]
        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


@trace_safe_cache(maxsize=256)
def constant_tensors(
    tables: Callable[..., tuple[Any, ...]], arguments: tuple[Any, ...], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """``tables(*arguments)`` (numbers, or nested sequences of them: floats, ints, fractions) as tensors of ``dtype``
    on ``device``, never to be written to: cached in eager mode (building a transform's matrix from Python numbers
    took 49 us for the bench's 7-wide kernel, 0.6 ms for a 9-wide one over 64 frames), a traced graph's constants
    while tracing. Made outside inference mode: a cached inference tensor could not be saved for a later call's
    backward."""
    values = [_floats(t) for t in tables(*arguments)]
    if tracing():
        return tuple(torch.tensor(v, dtype=dtype, device=device) for v in values)
    with torch.inference_mode(False):
        return tuple(torch.tensor(v, dtype=dtype, device=device) for v in values)


def _floats(value: Any) -> Any:
    """``value``'s numbers as floats, its sequences as lists (what torch.tensor reads)."""
    return [_floats(v) for v in value] if isinstance(value, (tuple, list)) else float(value)
