"""convnd.rewrite: whole models onto allowed native ranks, with outputs, gradients and state_dict unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convnd
from convnd.rewriting import allowed_ranks, nearest_rank
from convnd.testing import NativeConvolutions, assert_equivalent
from example_models import make

# (example, allowed ranks): each network onto the ranks a deployment target would offer
MODEL_CASES = [
    ("wav2vec", 2),  # 1-d stem and grouped positional conv under parametrized weight_norm, lifted
    ("wav2vec", {3}),
    ("hifigan", 2),  # ConvTranspose1d and dilated 'same' under the old weight_norm hook
    ("conformer", 1),  # strided Conv2d subsampling lowered onto a 1-d-only DSP
    ("conformer", {1, 3}),  # the tie: the Conv2d goes up to 3, the depthwise Conv1d stays
    ("video", 2),  # Conv3d stem and tubelet embedding lowered
    ("volume", 2),  # reflect-padded Conv3d encoder, ConvTranspose3d decoder, skip
    ("volume", {1, 2}),
    ("lightfield", 2),  # convnd's 4-d modules
    ("lightfield", 1),
]


@pytest.mark.parametrize(("name", "dims"), MODEL_CASES)
def test_models_are_equivalent_on_allowed_ranks(name, dims):
    model, x = make(name)
    rewritten = convnd.rewrite(model, dims)
    record = assert_equivalent(model, rewritten, x, ranks=dims)
    assert {rank for kind, rank in record.calls if kind == "backward"} <= allowed_ranks(dims)
    assert any(kind == "backward" for kind, _ in record.calls)


def test_tie_goes_to_the_higher_rank():
    model, x = make("conformer")
    rewritten = convnd.rewrite(model, {1, 3})
    assert rewritten.subsample[0].native_rank == 3 and rewritten.subsample[2].native_rank == 3
    assert type(rewritten.depthwise) is nn.Conv1d  # already allowed: untouched
    with NativeConvolutions() as record:
        rewritten(x)
    assert sorted(set(record.calls)) == [("forward", 1), ("forward", 3)]


@pytest.mark.parametrize(
    ("rank", "allowed", "nearest"),
    [(1, {2, 3}, 2), (2, {1, 3}, 3), (3, {1, 2}, 2), (3, {1}, 1), (4, {1, 2}, 2), (5, {3}, 3), (4, {1, 3}, 3)],
)
def test_nearest_rank(rank, allowed, nearest):
    assert nearest_rank(rank, allowed) == nearest


def test_copy_by_default_and_inplace_on_request():
    model, x = make("volume")
    expected = model(x)
    copied = convnd.rewrite(model, 2)
    assert copied is not model and type(model.down) is nn.Conv3d
    assert copied.down.weight is not model.down.weight
    same = convnd.rewrite(model, 2, inplace=True)
    assert same is model and isinstance(model.down, convnd.Emulation)
    assert model.enc[1] is same.enc[1]  # non-convolutions are left alone
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_a_convolution_as_the_model():
    conv = nn.Conv3d(2, 3, 3)
    rewritten = convnd.rewrite(conv, 2)
    assert isinstance(rewritten, convnd.Emulation) and rewritten.native_rank == 2
    assert convnd.rewrite(conv, 3) is not conv  # a copy, even with nothing to replace
    assert convnd.rewrite(conv, 3, inplace=True) is conv


def test_allowed_convolutions_are_untouched_and_rewrites_compose():
    model, x = make("volume")
    twice = convnd.rewrite(convnd.rewrite(model, 1), {2, 3})
    convolutions = [m for m in twice.modules() if convnd.emulation.is_convolution(m)]
    assert {type(m) for m in convolutions} == {nn.Conv3d, nn.ConvTranspose3d}  # back to running natively
    assert_equivalent(model, twice, x, ranks=3)


def test_state_dict_loads_both_ways():
    model, x = make("wav2vec")
    rewritten = convnd.rewrite(model, 2)
    assert list(rewritten.state_dict()) == list(model.state_dict())
    fresh_original, _ = make("wav2vec")
    torch.manual_seed(1)
    for p in rewritten.parameters():
        p.data.normal_()
    fresh_original.load_state_dict(rewritten.state_dict())
    torch.testing.assert_close(fresh_original(x), rewritten(x), rtol=1e-5, atol=1e-5)
    rewritten.load_state_dict(model.state_dict())
    torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)


class Shared(nn.Module):
    """One conv used twice, and two convs tied to one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv3d(2, 2, 3, padding=1)
        self.again = self.first
        self.tied = nn.Conv3d(2, 2, 3, padding=1, bias=False)
        self.tied.weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tied(self.again(self.first(x)))


def test_shared_modules_and_weights_stay_shared():
    torch.manual_seed(0)
    model = Shared()
    x = torch.randn(1, 2, 3, 4, 3)
    rewritten = convnd.rewrite(model, 2)
    assert rewritten.first is rewritten.again and isinstance(rewritten.first, convnd.Emulation)
    assert rewritten.tied.weight is rewritten.first.weight
    assert list(rewritten.state_dict()) == list(model.state_dict())
    assert_equivalent(model, rewritten, x, ranks=2)


def test_training_a_rewritten_model_matches_training_the_original():
    model, x = make("volume")
    rewritten = convnd.rewrite(model, 2)
    for m in (model, rewritten):
        optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            m(x).square().mean().backward()
            optimizer.step()
    for (name, a), (_, b) in zip(model.named_parameters(), rewritten.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


class OwnForward(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).relu()


CONV = (nn.Conv1d, 1, 1, 3)
ERRORS = [
    (CONV, 0, convnd.ConvndValueError,
     "dims must be 1, 2 or 3, got 0 (torch has native convolutions of these ranks only)"),
    (CONV, {2, 4}, convnd.ConvndValueError,
     "dims must be 1, 2 or 3, got 4 (torch has native convolutions of these ranks only)"),
    (CONV, set(), convnd.ConvndValueError,
     "dims must be a non-empty set of ranks, got set() (a model needs at least one rank to run on)"),
    (CONV, "2", convnd.ConvndTypeError, "dims must be an int or a set of ints, each 1, 2 or 3, got '2'"),
    (CONV, 2.0, convnd.ConvndTypeError, "dims must be an int or a set of ints, each 1, 2 or 3, got 2.0"),
    (CONV, {2.0}, convnd.ConvndTypeError, "dims must be an int: 1, 2 or 3, got 2.0"),
    ((str, "model"), 2, convnd.ConvndTypeError, "model must be a torch.nn.Module, got 'model'"),
    ((lambda: nn.Sequential(nn.Conv3d(1, 1, 3), nn.Sequential(OwnForward(1, 1, 3))),), 2, convnd.ConvndValueError,
     "model.1.0 must be a convolution whose forward is torch.nn's or convnd's own, got OwnForward "
     "(OwnForward overrides forward, and an emulation cannot know what that adds)"),
    ((lambda: nn.Sequential(nn.Conv3d(1, 1, 3), nn.LazyConv3d(2, 3)),), 2, convnd.ConvndValueError,
     "model.1 must be a materialized convolution, got LazyConv3d "
     "(a lazy module learns in_channels from its first input: run one forward pass first)"),
]  # fmt: skip


@pytest.mark.parametrize(("make_model", "dims", "error", "message"), ERRORS)
def test_errors_leave_the_model_as_it_was(make_model, dims, error, message):
    model = make_model[0](*make_model[1:])
    before = [(name, type(m)) for name, m in model.named_modules()] if isinstance(model, nn.Module) else []
    with pytest.raises(error) as info:
        convnd.rewrite(model, dims, inplace=True)
    assert str(info.value) == message
    if before:  # checked before anything is replaced: no half-rewritten model
        assert [(name, type(m)) for name, m in model.named_modules()] == before


def test_unsupported_convolution_of_an_allowed_rank_is_left_alone():
    model = nn.Sequential(OwnForward(1, 1, 3))
    assert convnd.rewrite(model, 3, inplace=True)[0] is model[0]
