"""Parsing a layer from text: literal calls of known classes only, and nothing the user typed ever runs."""

from __future__ import annotations

import pytest
import torch

import convnd
from convnd.errors import ConvndError, ConvndTypeError, ConvndValueError
from convnd.layer_text import LayerText, from_module, parse_layer, parse_shape

ACCEPTED = [
    ("nn.Conv1d(4, 4, kernel_size=(1, 1))", "Conv1d", "nn", (4, 4), {"kernel_size": (1, 1)}),
    ("torch.nn.Conv2d(3, 8, 3, stride=2)", "Conv2d", "torch.nn", (3, 8, 3), {"stride": 2}),
    ("Conv2d(1, 1, (3,), padding='same', bias=False)", "Conv2d", "", (1, 1, (3,)), {"padding": "same", "bias": False}),
    ("convnd.ConvNd(2, 4, kernel_size=[3, 3, 3, 3])", "ConvNd", "convnd", (2, 4), {"kernel_size": [3, 3, 3, 3]}),
    ("ConvTranspose3d(4, 2, 2, stride=2, output_padding=1)", "ConvTranspose3d", "", (4, 2, 2),
     {"stride": 2, "output_padding": 1}),
    ("ConvNd(1, 1, 3, dims=4, padding=((1, 2), 0, 0, 0))", "ConvNd", "", (1, 1, 3),
     {"dims": 4, "padding": ((1, 2), 0, 0, 0)}),
    # placement arguments are dropped: explain is about shapes, and the device may not exist here
    ("nn.Conv2d(1, 1, 3, device='cuda', dtype=None)", "Conv2d", "nn", (1, 1, 3), {}),
    ("  nn.Conv2d(1, 1, -3)  ", "Conv2d", "nn", (1, 1, -3), {}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "name", "prefix", "args", "kwargs"), ACCEPTED)
def test_parse_accepts_literal_calls_of_known_classes(text, name, prefix, args, kwargs):
    assert parse_layer(text) == LayerText(name, prefix, args, kwargs)


MALICIOUS = [
    "__import__('os').system('touch PWNED')",
    "os.system('touch PWNED')",
    "exec(\"open('PWNED', 'w')\")",
    "eval(\"open('PWNED', 'w')\")",
    "open('PWNED', 'w')",
    "nn.Conv2d(1, 1, __import__('os').system('touch PWNED'))",
    "nn.Conv2d(1, 1, kernel_size=open('PWNED', 'w'))",
    "nn.Conv2d(1, 1, (lambda: open('PWNED', 'w'))())",
    "nn.Conv2d(1, 1, lambda: 3)",
    "nn.Conv2d(1, 1, [open('PWNED', 'w') for _ in (1,)])",
    "nn.Conv2d(1, 1, {open('PWNED', 'w'): 1})",
    "nn.Conv2d(1, 1, f\"{open('PWNED', 'w')}\")",
    "nn.Conv2d(1, 1, 3).__class__.__base__.__subclasses__()",
    "nn.Conv2d(1, 1, torch.nn.Conv2d.__init__)",
    "getattr(nn, 'Conv2d')(1, 1, 3)",
    "nn.Conv2d(*[1, 1, 3])",
    "nn.Conv2d(**{'in_channels': 1, 'out_channels': 1, 'kernel_size': 3})",
    "nn.Conv2d(1, 1, 3) if open('PWNED', 'w') else 0",
    "[nn.Conv2d(1, 1, 3), open('PWNED', 'w')]",
    "nn.Conv2d(1, 1, 3); import os",
    "nn.Conv2d(1, 1, k)",
    "nn.Conv2d(1, 1, 3 + 0)",
    "os.path.Conv2d(1, 1, 3)",
    "torch.nn.functional.conv2d(1, 1, 3)",
    "nn.Linear(1, 1)",
    "nn.ConvNd(1, 1, (3, 3, 3, 3))",
    "(nn.Conv2d)(1, 1, 3)()",
    "nn.Conv2d",
    "",
    "nn.Conv2d(" * 200,
    "Conv2d(1, 1, " + "(" * 300 + "3" + ")" * 300 + ")",
]


@pytest.mark.parametrize("text", MALICIOUS)
def test_parse_refuses_everything_else_and_runs_nothing(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConvndError, match="SPEC must be"):
        parse_layer(text)
    assert list(tmp_path.iterdir()) == []


def test_refusal_names_the_offending_argument():
    with pytest.raises(ConvndValueError) as info:
        parse_layer("nn.Conv2d(1, 1, lambda: 3)")
    assert str(info.value) == (
        "SPEC must be a call of a convolution class with literal arguments, e.g. nn.Conv2d(3, 8, 3, stride=2), "
        "got 'nn.Conv2d(1, 1, lambda: 3)' (lambda: 3 is not a literal; SPEC is parsed, never run)"
    )


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(ConvndTypeError, match="unexpected keyword argument 'strides'"):
        parse_layer("nn.Conv2d(1, 1, 3, strides=2)").arguments()


def test_build_makes_convnd_module_on_meta_and_arguments_fill_defaults():
    text = parse_layer("nn.Conv1d(4, 4, kernel_size=(1, 1))")
    module = text.build()
    assert isinstance(module, convnd.Conv1d)
    assert module.weight.device.type == "meta"
    assert module.kernel_size == (1, 1)
    assert text.arguments()["padding_mode"] == "zeros"


@pytest.mark.parametrize(
    "module",
    [
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        torch.nn.ConvTranspose1d(4, 2, 3, stride=2, output_padding=1, groups=2),
        convnd.ConvNd(2, 4, (3, 3, 3, 3), padding=((1, 0), 1, 1, 1), padding_mode="circular"),
        convnd.Conv1d(4, 4, kernel_size=(1, 1)),
        convnd.ConvNd(3, 2, (3, 3), channel_dim=-1, spatial_dims=(1, 2), convolution=True),
    ],
)
def test_from_module_rebuilds_the_same_layer(module):
    rebuilt = from_module(module).build()
    names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
    names += ("padding_mode", "transposed", "output_padding")
    if isinstance(module, convnd.ConvNd):
        names += ("channel_dim", "spatial_dims", "convolution")
    assert [getattr(rebuilt, n) for n in names] == [getattr(module, n) for n in names]
    assert (rebuilt.bias is None) == (module.bias is None)


def test_from_module_refuses_other_modules():
    with pytest.raises(ConvndTypeError, match="module must be a convolution module"):
        from_module(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("text", "shape"),
    [("2,4,5,6", (2, 4, 5, 6)), ("(2, 4, 5, 6)", (2, 4, 5, 6)), ("2x4x5x6", (2, 4, 5, 6)), ("[3, 7]", (3, 7))],
)
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "4", "2,a,5", "2,0,5", "2,-1,5", "2.5,3"])
def test_parse_shape_refuses(text):
    with pytest.raises(ConvndValueError, match="--input must be sizes >= 1"):
        parse_shape(text)
