"""convnd.testing: the recorder and the equivalence check catch what they claim to."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import convnd
from convnd.testing import NativeConvolutions, assert_equivalent


def volume() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 2, 1)), torch.randn(1, 2, 4, 5, 3)


def test_recorder_sees_forward_and_backward_ranks():
    model, x = volume()
    with NativeConvolutions() as record:
        convnd.rewrite(model, 1)(x.requires_grad_()).sum().backward()
    assert record.ranks == {1}
    assert {kind for kind, _ in record.calls} == {"forward", "backward"}


def test_passes_for_a_rewrite_and_returns_the_record():
    model, x = volume()
    record = assert_equivalent(model, convnd.rewrite(model, {1, 2}), x, ranks={1, 2})
    assert record.ranks == {2}  # nearest allowed rank to 3


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda m: m[2].weight.data.add_(1e-3), "output 0 differs by"),
        (lambda m: m[0].bias.register_hook(lambda g: g * 2), "the gradient of 0.bias differs by"),
        (lambda m: m[0].register_buffer("extra", torch.zeros(1)), "the state_dict keys or shapes differ"),
    ],
)
def test_fails_on_a_different_model(spoil, message):
    model, x = volume()
    rewritten = convnd.rewrite(model, 2)
    spoil(rewritten)
    with pytest.raises(AssertionError, match=f"^{message}"):
        assert_equivalent(model, rewritten, x, ranks=2)


def test_fails_on_a_rank_that_is_not_allowed():
    model, x = volume()
    with pytest.raises(
        AssertionError, match=r"^the rewritten model ran native convolutions of ranks \[3\], allowed \[2\]"
    ):
        assert_equivalent(model, copy.deepcopy(model), x, ranks=2)


def test_outputs_with_other_strides_get_the_same_cotangent():
    """Equal tensors with other strides (here: a lowered channels-last conv's output) must draw equal cotangents."""
    torch.manual_seed(0)
    model = convnd.Conv3d(3, 4, (2, 3, 2), padding=1, channel_dim=-1)
    x = torch.randn(2, 5, 4, 6, 3)
    rewritten = convnd.rewrite(model, 1)
    assert model(x).stride() != rewritten(x).stride()
    assert_equivalent(model, rewritten, x, ranks=1)
