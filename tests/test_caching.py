"""convnd.caching: lru caches in eager mode, the plain function while torch.compile traces."""

from __future__ import annotations

import warnings

import torch

from convnd.caching import trace_safe_cache, tracing


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
