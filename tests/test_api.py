"""The public surface: names guarded against accidental removal, and every one documented."""

from __future__ import annotations

import inspect

import pytest
import torch

import convnd

# removing a name from this list is an API break: do it on purpose, with a changelog entry
PUBLIC = [
    "Conv1d", "Conv2d", "Conv3d", "ConvNd", "ConvSpec", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "ConvTransposeNd", "ConvndError", "ConvndTypeError", "ConvndValueError", "conv", "conv_transpose", "make_spec",
    "reference",
]  # fmt: skip


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_exported(name):
    assert name in convnd.__all__
    assert hasattr(convnd, name)


@pytest.mark.parametrize("name", sorted(convnd.__all__))
def test_every_public_name_has_a_docstring(name):
    obj = getattr(convnd, name)
    assert inspect.getdoc(obj), f"convnd.{name} has no docstring"
    if inspect.isclass(obj):
        for attr, member in vars(obj).items():
            if callable(member) and not attr.startswith("_") and attr not in ("forward", "extra_repr"):
                assert inspect.getdoc(member), f"convnd.{name}.{attr} has no docstring"
    if inspect.ismodule(obj):
        for attr, member in vars(obj).items():
            if inspect.isfunction(member) and not attr.startswith("_") and member.__module__ == obj.__name__:
                assert inspect.getdoc(member), f"convnd.{name}.{attr} has no docstring"


def test_public_signatures():
    """The issue fixes these signatures: torch's names, order and defaults; convnd's extras are keyword-only."""
    conv = inspect.signature(convnd.conv).parameters.values()
    positional = [(p.name, p.default) for p in conv if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert positional == [
        ("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None), ("stride", 1),
        ("padding", 0), ("dilation", 1), ("groups", 1), ("padding_mode", "zeros"),
    ]  # fmt: skip
    params = inspect.signature(convnd.ConvNd).parameters
    assert list(params)[:12] == [
        "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
        "padding_mode", "device", "dtype", "dims",
    ]  # fmt: skip
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[11:])
    pairs = [(convnd.Conv1d, torch.nn.Conv1d), (convnd.Conv2d, torch.nn.Conv2d), (convnd.Conv3d, torch.nn.Conv3d)]
    for ours, theirs in pairs:
        ours_params = list(inspect.signature(ours).parameters.values())
        theirs_params = list(inspect.signature(theirs).parameters.values())
        assert [(p.name, p.default) for p in ours_params[: len(theirs_params)]] == [
            (p.name, p.default) for p in theirs_params
        ]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours_params[len(theirs_params) :])


def _positional(f) -> list[tuple[str, object]]:
    """(name, default) of the parameters that are not keyword-only (``self`` dropped)."""
    params = inspect.signature(f).parameters.values()
    return [(p.name, p.default) for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY and p.name != "self"]


EMPTY = inspect.Parameter.empty


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (
            convnd.conv_transpose,
            [
                ("input", EMPTY),
                ("weight", EMPTY),
                ("bias", None),
                ("stride", 1),
                ("padding", 0),
                ("output_padding", 0),
                ("groups", 1),
                ("dilation", 1),
            ],
        ),
        (
            convnd.ConvTransposeNd,
            [
                ("in_channels", EMPTY),
                ("out_channels", EMPTY),
                ("kernel_size", EMPTY),
                ("stride", 1),
                ("padding", 0),
                ("output_padding", 0),
                ("groups", 1),
                ("bias", True),
                ("dilation", 1),
                ("padding_mode", "zeros"),
                ("device", None),
                ("dtype", None),
            ],
        ),
        (convnd.ConvTransposeNd.forward, [("input", EMPTY), ("output_size", None)]),
        (convnd.emulate, [("module", EMPTY), ("dims", EMPTY)]),
        (convnd.rewrite, [("model", EMPTY), ("dims", EMPTY), ("inplace", False)]),
        (convnd.explain, [("spec", EMPTY), ("input_shape", EMPTY)]),
    ],
    ids=lambda value: getattr(value, "__qualname__", None),
)
def test_issue_signatures(function, expected):
    """The names, order and defaults the issues fix (issue 3, 4, 5); extras must be keyword-only."""
    assert _positional(function) == expected


def test_transposed_modules_take_torchs_signatures_and_dims():
    assert "dims" in inspect.signature(convnd.ConvTransposeNd).parameters
    for ours, theirs in [
        (convnd.ConvTranspose1d, torch.nn.ConvTranspose1d),
        (convnd.ConvTranspose3d, torch.nn.ConvTranspose3d),
    ]:
        assert _positional(ours) == _positional(theirs)
