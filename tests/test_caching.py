"""convnd.caching: lru caches in eager mode, the plain function while torch.compile traces."""

from __future__ import annotations

import warnings

import torch

from convnd.caching import constant_tensors, trace_safe_cache, tracing


def _counted() -> tuple[list[int], object]:
    calls: list[int] = []

    @trace_safe_cache(maxsize=8)
    def double(n: int) -> int:
        """Twice n."""
        calls.append(n)
        return 2 * n

    return calls, double


def test_eager_calls_are_cached() -> None:
    calls, double = _counted()
    assert [double(3), double(3), double(4)] == [6, 6, 8]
    assert calls == [3, 4]
    assert (double.cache_info().hits, double.cache_info().misses) == (1, 2)
    assert double.__doc__ == "Twice n." and double.__wrapped__(5) == 10
    double.cache_clear()
    assert double.cache_info().currsize == 0


def test_traced_calls_bypass_the_cache() -> None:
    _, double = _counted()
    seen = []

    def f(x: torch.Tensor, n: int) -> torch.Tensor:
        seen.append(tracing())
        return x * double(n)

    compiled = torch.compile(f, fullgraph=True, backend="eager", dynamic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Dynamo's "ignores the cache wrapper" warning would fail here
        assert torch.equal(compiled(torch.ones(2), 3), torch.full((2,), 6.0))
        assert torch.equal(compiled(torch.ones(2), 5), torch.full((2,), 10.0))  # n arrives as a SymInt
    assert seen and all(seen)
    assert double.cache_info().currsize == 0  # nothing cached from a trace
    assert not tracing()


def test_constant_tensors_are_cached_outside_inference_mode():
    # a transform's matrices (dft, winograd): built once per (tables, arguments, dtype, device), never as inference
    # tensors (one could not be saved for a later call's backward), fractions read as floats
    from fractions import Fraction

    made = []

    def tables(n):
        made.append(n)
        return (((Fraction(1, 2), 2), (0, n)), (1.5, -1.0))

    with torch.inference_mode():
        first = constant_tensors(tables, (3,), torch.float64, torch.device("cpu"))
    again = constant_tensors(tables, (3,), torch.float64, torch.device("cpu"))
    assert made == [3] and all(a is b for a, b in zip(first, again))
    assert not any(t.is_inference() for t in first)
    assert first[0].tolist() == [[0.5, 2.0], [0.0, 3.0]] and first[1].tolist() == [1.5, -1.0]
    w = torch.ones(2, requires_grad=True)
    (first[1] * w).sum().backward()  # saved for a backward after the inference-mode call that made it
    assert w.grad.tolist() == [1.5, -1.0]
