"""``convnd.explain``: every number it reports equals what convnd (and torch) actually do."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import convnd
from convnd import lowering
from convnd.errors import ConvndError, ConvndValueError
from convnd.layer_text import parse_layer
from convnd.layout import resolve_layout
from convnd.testing import NativeConvolutions

SEED = "nn.Conv1d(4, 4, kernel_size=(1, 1))"

# (spec, input shape): strided, dilated, padded, asymmetric, grouped, padding modes, unbatched, 4-d, 5-d, transposed
CASES = [
    (SEED, (2, 4, 5, 6)),
    ("torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=2)", (1, 3, 9, 10)),
    ("nn.Conv1d(2, 4, 5, stride=3, padding=4, dilation=2, groups=2)", (2, 2, 17)),
    ("Conv2d(1, 1, (3,), padding='same')", (1, 1, 11)),
    ("Conv3d(2, 2, (2, 3, 1), stride=(2, 1, 3), padding=((0, 1), (2, 0), 1), padding_mode='reflect')", (2, 5, 6, 7)),
    ("convnd.ConvNd(2, 3, kernel_size=(3, 3, 3, 3), padding='same')", (1, 2, 4, 5, 3, 4)),
    ("ConvNd(2, 2, 3, dims=4, stride=(2, 1, 1, 2), dilation=(1, 2, 1, 1), padding=(1, 2, 0, 1))", (1, 2, 5, 6, 4, 5)),
    ("ConvNd(1, 2, (2, 1, 2, 1, 2), stride=2, padding_mode='circular', padding=1)", (1, 1, 3, 3, 4, 3, 4)),
    ("ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)", (1, 4, 3, 5)),
    ("nn.ConvTranspose1d(4, 6, 3, stride=3, dilation=2, groups=2)", (4, 7)),
    ("ConvTransposeNd(2, 2, (2, 3, 2, 2), stride=(2, 1, 2, 3), padding=(1, 0, 0, 1), output_padding=(1, 0, 1, 2))",
     (1, 2, 3, 2, 3, 2)),
    # layouts: the channel axis elsewhere, batch axes anywhere, the kernel flipped
    ("ConvNd(2, 3, (3, 3, 3, 3), padding=1, channel_dim=-1)", (2, 4, 3, 5, 4, 2)),
    ("Conv2d(3, 4, 3, stride=2, spatial_dims=(1, 2), channel_dim=3)", (2, 7, 8, 3)),
    ("ConvTranspose1d(2, 2, 3, stride=2, channel_dim=-1, convolution=True)", (4, 5, 2)),
]  # fmt: skip


def _run(spec: str, shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.Tensor]:
    module = parse_layer(spec).build(device="cpu").double()
    with torch.no_grad():
        return module, module(torch.randn(shape, dtype=torch.float64))


@pytest.mark.parametrize(("spec", "shape"), CASES)
def test_output_shape_and_counts_are_convnds_own(spec, shape):
    e = convnd.explain(spec, shape)
    module, y = _run(spec, shape)
    assert e.output_shape == tuple(y.shape)
    layout = resolve_layout(len(shape), module.dims, module.channel_dim, module.spatial_dims)
    assert tuple(r.output for r in e.rows) == layout.spatial_size(y.shape)
    assert e.dims == module.dims == len(e.rows)
    assert e.parameters == sum(p.numel() for p in module.parameters())
    assert e.receptive_field == tuple(d * (k - 1) + 1 for k, d in zip(module.kernel_size, module.dilation))
    json.dumps(e.to_dict())  # machine-readable end to end


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2), (2, 4, 7, 8)),
        (torch.nn.Conv1d(3, 5, 4, stride=3, padding=2), (3, 20)),
        (torch.nn.Conv3d(2, 2, 2, dilation=2, padding="same"), (1, 2, 4, 5, 6)),
        (torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, output_padding=1), (2, 4, 5, 3)),
        (torch.nn.ConvTranspose1d(2, 3, 5, stride=2, padding=2, dilation=2), (1, 2, 9)),
    ],
)
def test_multiply_adds_match_torchs_flop_counter(layer, shape):
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(shape))
    assert 2 * convnd.explain(layer, shape).macs == counter.get_total_flops()  # torch counts 2 per multiply-add


@pytest.mark.parametrize(
    ("spec", "dims", "decided_by"),
    [
        ("nn.Conv1d(1, 1, kernel_size=(1, 1))", 2, "kernel_size"),
        ("nn.Conv2d(1, 1, 3)", 2, "class"),
        ("nn.Conv3d(1, 1, (3, 3))", 2, "kernel_size"),
        ("ConvNd(1, 1, 3, dims=4)", 4, "dims"),
        ("ConvTranspose1d(1, 1, (2, 2, 2))", 3, "kernel_size"),
    ],
)
def test_rank_and_the_argument_that_decided_it(spec, dims, decided_by):
    e = convnd.explain(spec, (1,) + (6,) * dims)
    assert (e.dims, e.dims_from) == (dims, decided_by)


def test_seed_question():
    e = convnd.explain(SEED, "2,4,5,6")
    assert (e.dims, e.output_shape, e.dims_from) == (2, (2, 4, 5, 6), "kernel_size")
    assert e.convnd_plan.strategy == "direct"
    assert not e.torch_nn.ran
    assert "Expected 2D (unbatched) or 3D (batched) input to conv1d" in e.torch_nn.error
    assert "Conv1d takes its rank from its name" in e.torch_nn.reason
    text = str(e)
    assert "A 2-d convolution: kernel_size=(1, 1) has 2 entries" in text
    assert "(5 + 0 + 0 - 1) // 1 + 1 = 5" in text
    # the other ranks: 3-d by lifting with kernel (1, 1, 1), 1-d by folding dim 0 into the batch
    recipes = {r.rank: r for r in e.other_ranks}
    assert (recipes[1].strategy, recipes[3].strategy) == ("tapsum", "lift")
    assert any("kernel_size=(1, 1, 1)" in step for step in recipes[3].steps)
    assert any("fold gives (10, 4, 6)" in step for step in recipes[1].steps)


def test_torch_runs_the_same_layer_bit_identically():
    verdict = convnd.explain("nn.Conv2d(3, 8, 3, stride=2, padding=1)", (2, 3, 9, 9)).torch_nn
    assert (verdict.ran, verdict.output_shape, verdict.identical) == (True, (2, 8, 5, 5), True)


@pytest.mark.parametrize(
    ("spec", "shape", "said", "error"),
    [
        ("ConvNd(1, 1, (3, 3, 3, 3))", (1, 1, 4, 4, 4, 4), "torch.nn has Conv1d, Conv2d and Conv3d only", None),
        (
            "Conv2d(1, 1, 3, padding=((1, 2), (0, 0)))", (1, 1, 5, 5), "(low, high) padding pairs are convnd's",
            "TypeError: conv2d() received an invalid combination of arguments",
        ),
        (
            "Conv2d(1, 1, (3,))", (1, 1, 5), "Conv2d takes its rank from its name",
            "RuntimeError: expected stride to be a single integer value or a list of 1 values",
        ),
        (
            "Conv2d(3, 1, 3, channel_dim=-1)", (1, 5, 5, 3), "channel_dim: convnd's own",
            "TypeError: Conv2d.__init__() got an unexpected keyword argument 'channel_dim'",
        ),
        # torch's meta device runs these (it skips the weight's rank against the input's); its CPU kernel does not,
        # on a small input and on one too big to run here
        (
            "ConvTranspose1d(3, 1, (2, 2))", (3, 4, 1), "ConvTranspose1d takes its rank from its name",
            "RuntimeError: Expected 4-dimensional input for 4-dimensional weight [3, 1, 2, 2]",
        ),
        (
            "ConvTranspose1d(3, 1, (2, 2))", (3, 400, 20000), "ConvTranspose1d takes its rank from its name",
            "RuntimeError: Expected 4-dimensional input for 4-dimensional weight [3, 1, 2, 2]",
        ),
        (
            "ConvTranspose2d(2, 1, (1, 3, 1))", (2, 64, 128, 600), "ConvTranspose2d takes its rank from its name",
            "RuntimeError: expected stride to be a single integer value or a list of 3 values",
        ),
    ],
)  # fmt: skip
def test_torch_refusals_are_explained(spec, shape, said, error):
    verdict = convnd.explain(spec, shape).torch_nn
    assert not verdict.ran
    assert said in verdict.reason
    assert verdict.error == error if error is None else verdict.error.startswith(error)


def test_tapsum_recipe_counts_the_native_calls_lowering_makes(monkeypatch):
    # the outer dim has size 1 with kernel 3 and padding 1: taps 0 and 2 read only padding and are skipped
    spec, shape = "ConvNd(2, 2, (3, 2, 2, 2), padding=1)", (1, 2, 1, 3, 3, 3)
    e = convnd.explain(spec, shape)
    module = parse_layer(spec).build(device="cpu")
    calls = []
    for rank, conv in list(lowering._CONV.items()):
        monkeypatch.setitem(lowering._CONV, rank, lambda *a, _c=conv, _r=rank, **k: calls.append(_r) or _c(*a, **k))
    x = torch.randn(shape)
    for recipe in e.other_ranks:
        calls.clear()
        convnd.functional.run(x, module.weight, module.bias, module.spec, native_rank=recipe.rank)
        assert calls == [recipe.rank] * recipe.native_calls
    with convnd.strategy("tapsum"):
        e = convnd.explain(spec, shape)
        calls.clear()
        convnd.functional.run(x, module.weight, module.bias, module.spec)
    assert (e.convnd_plan.strategy, e.convnd_plan.native_calls) == ("tapsum", 1) and calls == [3]
    assert any("t=(1,): in_t [0:1] -> out_t [0:1]" in step for step in e.convnd_plan.steps)  # spelled out


@pytest.mark.parametrize("name", [None, *convnd.selection.STRATEGIES])
@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("ConvNd(4, 3, 3, padding=1, dims=4)", (2, 4, 5, 4, 6, 5)),
        ("ConvTransposeNd(4, 2, (2, 3, 2, 2), stride=2, groups=2)", (1, 4, 3, 4, 3, 3)),
        ("ConvTransposeNd(4, 2, 2, stride=2, dims=4)", (1, 4, 3, 4, 3, 3)),  # un-patching: unfold's are 1-d
        ("ConvNd(2, 4, 3, padding=1, dims=5)", (2, 3, 3, 4, 3, 4)),
        ("ConvNd(4, 4, (3, 3, 3, 3), padding=1, channel_dim=-1)", (1, 6, 5, 5, 4, 4)),  # channels-last: no band
    ],
)
def test_convnd_runs_it_names_the_plan_that_runs_and_counts_its_native_calls(spec, shape, name):
    module = parse_layer(spec).build(device="cpu")
    x = torch.randn(shape)
    with convnd.strategy(name):
        e = convnd.explain(spec, shape)
        with torch.no_grad(), NativeConvolutions() as record:
            module(x)
    assert e.convnd_plan.native_calls == len(record.calls)
    if name is not None and not (name == "band" and "channel_dim" in spec):
        assert e.convnd_plan.strategy == name
    assert e.convnd_plan.strategy in convnd.selection.STRATEGIES


@pytest.mark.parametrize(("channels", "calls"), [(16, "1 native 2-d call: "), (4, "no native convolution: ")])
def test_unpatching_is_named_with_the_rank_of_the_calls_that_run(channels, calls):
    # un-patching's GEMM: a native 1x1 2-d call from 16 input channels (the rank the record shows), else torch.mm
    e = convnd.explain(f"ConvTransposeNd({channels}, 8, 2, stride=2, dims=4)", (1, channels, 6, 6, 12, 12))
    assert e.convnd_plan.strategy == "unfold"
    assert e.convnd_plan.rank == (2 if channels == 16 else 1)
    assert e.convnd_plan.summary.startswith(calls + "un-patching: each kernel tiles its stride")
    assert "one GEMM per run of input rows gives every tap of every input position" in e.convnd_plan.summary
    assert e.convnd_plan.steps[0] == "one GEMM per run of input rows of dim 0, dim 3 interleaved last"


@pytest.mark.parametrize(
    ("spec", "shape", "said"),
    [
        (
            "ConvNd(4, 6, (1, 3, 3, 3), stride=(3, 1, 1, 1), padding=(2, 1, 1, 1))",
            (2, 4, 1, 5, 7, 6),
            "along dim 0 every output reads only zero padding",
        ),
        (
            "ConvTransposeNd(4, 6, (1, 3, 3, 2), stride=(5, 1, 1, 4), padding=(2, 0, 0, 2), "
            "output_padding=(0, 0, 0, 3))",
            (2, 4, 2, 5, 7, 1),
            "along dims 0, 3 every input element lands only on the cropped margin",
        ),
    ],
)
def test_an_output_that_reads_no_input_is_explained_as_the_bias(spec, shape, said):
    e = convnd.explain(spec, shape)
    assert e.convnd_plan.native_calls == 0
    assert e.convnd_plan.summary == f"no native convolution: {said}, so the output is the bias alone"
    with torch.no_grad(), NativeConvolutions() as record:
        parse_layer(spec).build(device="cpu")(torch.randn(shape))
    assert not record.calls


def test_a_plan_that_differs_in_training_is_named():
    # depthwise: the channels-last tap sum forward, band when a gradient will be computed (tests/test_strategies.py)
    e = convnd.explain("ConvNd(32, 32, 3, padding=1, groups=32, dims=4)", (2, 32, 8, 8, 16, 16))
    assert e.convnd_plan.strategy == "tapsum"
    assert e.convnd_plan.summary.endswith("; when a gradient will be computed, band instead")
    plain = convnd.explain("ConvNd(4, 3, 3, padding=1, dims=4)", (2, 4, 5, 4, 6, 5))
    assert "gradient" not in plain.convnd_plan.summary


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [
        (
            "nn.Conv2d(3, 8, 3)",
            (1, 4, 5, 5),
            "input must be a tensor with 3 channels in dim 1, got a tensor of shape (1, 4, 5, 5)",
        ),
        ("nn.Conv2d(3, 8, 3)", (1, 3, 5, 5, 5), "input must be a tensor with 3 (unbatched) or 4 (batched) dims"),
        ("nn.Conv2d(3, 8, 3)", (1, 3, 2, 5), "input must be a tensor of size >= 3 in spatial dim 0 after padding"),
        ("nn.Conv2d(3, 8, 3, groups=2)", (1, 3, 5, 5), "in_channels must be divisible by groups=2"),
        ("nn.Conv2d(3, 8, 3, stride=2, padding='same')", (1, 3, 5, 5), "'same' needs stride 1"),
    ],
)
def test_mismatches_are_convnds_one_line_errors(spec, shape, message):
    with pytest.raises(ConvndValueError) as info:
        convnd.explain(spec, shape)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_explain_takes_module_instances():
    e = convnd.explain(torch.nn.Conv3d(2, 4, 3, padding=1), (1, 2, 4, 4, 4))
    assert e.output_shape == (1, 4, 4, 4, 4)
    assert e.torch_nn.identical
    with pytest.raises(ConvndError):
        convnd.explain(torch.nn.ReLU(), (1, 2, 3))


def test_terminal_view_is_aligned_tables_not_a_wall():
    text = str(convnd.explain("ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)", (1, 4, 3, 5)))
    lines = text.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("dim"))
    rows = lines[lines.index(header) + 1 : lines.index(header) + 3]
    # numbers right-aligned under their headers
    assert [row[: header.index("out_pad") + len("out_pad")].split()[-1] for row in rows] == ["1", "1"]
    assert "(3 - 1)*2 - 1 - 1 + 3 + 1 = 6" in text
    assert max(len(line) for line in lines if not line.startswith(" " * 4)) <= 130


def test_tapsum_recipe_spells_asymmetric_inner_padding_as_lowering_runs_it():
    # 'same' with an even kernel pads (1, 2): torch takes the common 1, the remaining (0, 1) is padded first
    e = convnd.explain("ConvNd(2, 2, (3, 3, 4, 4), padding='same')", (1, 2, 5, 5, 6, 6))
    two = next(r for r in e.other_ranks if r.rank == 2)
    call = next(step for step in two.steps if step.startswith("conv_t = "))
    assert "padding=(1, 1)" in call and "padded by ((0, 1), (0, 1))" in call
