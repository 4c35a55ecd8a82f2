"""Device-dependent behaviour: deterministic mode and half/bfloat16, on CPU in CI and on CUDA with --device=cuda.

On a GPU: ``pytest --device=cuda tests/test_devices.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Callable

import pytest
import torch

import convnd

# (name, module factory, input shape): the strategies and paddings whose backward accumulates
CASES = [
    ("conv N=2 reflect", lambda d, t: convnd.Conv2d(3, 4, 3, padding=2, padding_mode="reflect", device=d, dtype=t),
     (2, 3, 7, 6)),
    ("conv N=3 replicate", lambda d, t: convnd.Conv3d(2, 3, 3, padding=(1, 2, 0), padding_mode="replicate",
                                                      device=d, dtype=t), (2, 2, 4, 5, 6)),
    ("conv N=4 reflect", lambda d, t: convnd.ConvNd(2, 3, (3, 2, 3, 2), padding=1, padding_mode="reflect",
                                                    device=d, dtype=t), (2, 2, 4, 3, 5, 4)),
    ("conv N=4 strided pairs", lambda d, t: convnd.ConvNd(4, 2, (3, 3, 2, 2), stride=2, padding=((2, 1), 1, 0, 1),
                                                          groups=2, device=d, dtype=t), (2, 4, 7, 6, 5, 6)),
    ("conv_transpose N=4", lambda d, t: convnd.ConvTransposeNd(3, 2, (3, 2, 2, 3), stride=2, padding=1,
                                                               output_padding=1, device=d, dtype=t),
     (2, 3, 3, 4, 3, 3)),
]  # fmt: skip
IDS = [c[0] for c in CASES]


def _forward_backward(module: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    y = module(x)
    weights = torch.linspace(-1, 1, y.numel(), device=y.device, dtype=torch.float32).view_as(y).to(y.dtype)
    return [y.detach(), *torch.autograd.grad((y * weights).sum(), (x, *module.parameters()))]


@contextlib.contextmanager
def _deterministic_mode() -> Iterator[None]:
    """torch.use_deterministic_algorithms(True) inside, the previous setting restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@pytest.fixture
def deterministic() -> Iterator[None]:
    with _deterministic_mode():
        yield


@pytest.mark.parametrize(("name", "make", "shape"), CASES, ids=IDS)
def test_deterministic_mode_runs_and_repeats_exactly(
    name: str, make: Callable, shape: tuple[int, ...], device, deterministic
) -> None:
    # No error (torch raises for ops with no deterministic kernel, e.g. CUDA reflection-pad backward,
    # which convnd replaces by a gather in this mode) and bit-identical results run to run.
    torch.manual_seed(0)
    module, x = make(device, torch.float32), torch.randn(shape, device=device)
    first = _forward_backward(module, x)
    for _ in range(2):
        for what, got, expected in zip(["output", "input grad", "weight grad", "bias grad"],
                                       _forward_backward(module, x), first):  # fmt: skip
            assert torch.equal(got, expected), f"{name}: {what} changed between runs"


def test_deterministic_mode_keeps_the_values(device) -> None:
    # the deterministic path (on CUDA: a gather instead of torch's reflection pad) computes the same numbers
    torch.manual_seed(0)
    module, x = CASES[0][1](device, torch.float32), torch.randn(CASES[0][2], device=device)
    free = _forward_backward(module, x)
    with _deterministic_mode():
        fixed = _forward_backward(module, x)
    assert torch.equal(fixed[0], free[0])
    for got, expected in zip(fixed[1:], free[1:]):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


LOW = {torch.float16: 2e-2, torch.bfloat16: 8e-2}  # relative to the float32 result's scale


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize(("name", "make", "shape"), CASES, ids=IDS)
def test_half_precision_on_cuda(name: str, make: Callable, shape: tuple[int, ...], dtype: torch.dtype, device) -> None:
    torch.manual_seed(0)
    module, x = make(device, torch.float32), torch.randn(shape, device=device)
    exact = _forward_backward(module, x)
    low = _forward_backward(module.to(dtype), x.to(dtype))
    for what, got, expected in zip(["output", "input grad", "weight grad", "bias grad"], low, exact):
        assert got.dtype == dtype, what
        scale = expected.abs().max().item()
        torch.testing.assert_close(got.float(), expected, rtol=0, atol=LOW[dtype] * scale, msg=f"{name}: {what}")


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_half_precision_is_torch_exact_for_native_ranks(dtype: torch.dtype, device) -> None:
    torch.manual_seed(0)
    module = convnd.Conv3d(3, 4, 3, padding=1, stride=(1, 2, 1), device=device, dtype=dtype)
    reference = torch.nn.Conv3d(3, 4, 3, padding=1, stride=(1, 2, 1), device=device, dtype=dtype)
    reference.load_state_dict(module.state_dict())
    x = torch.randn(2, 3, 5, 6, 7, device=device, dtype=dtype)
    for got, expected in zip(_forward_backward(module, x), _forward_backward(reference, x)):
        assert torch.equal(got, expected)


def test_deterministic_padding_gather_matches_torch_pad(monkeypatch: pytest.MonkeyPatch) -> None:
    # On CPU torch's reflection pad is deterministic, so convnd keeps it; force the CUDA-deterministic
    # branch here so the gather that replaces it for N <= 3 is checked against torch.nn in CI too.
    torch.manual_seed(0)
    module, x = CASES[0][1]("cpu", torch.float64), torch.randn(CASES[0][2], dtype=torch.float64)
    reference = torch.nn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect", dtype=torch.float64)
    reference.load_state_dict(module.state_dict())
    expected = _forward_backward(reference, x)
    monkeypatch.setattr(convnd.padding, "_pad_backward_raises", lambda x, mode: mode == "reflect")
    gathered = []
    source_index = convnd.padding._source_index
    monkeypatch.setattr(convnd.padding, "_source_index", lambda *a: gathered.append(a) or source_index(*a))
    got = _forward_backward(module, x)
    assert len(gathered) == 2  # one index vector per spatial dim: the gather ran
    assert torch.equal(got[0], expected[0])
    for g, e in zip(got[1:], expected[1:]):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
