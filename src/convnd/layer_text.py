"""A convolution layer written as text (``nn.Conv1d(4, 4, kernel_size=(1, 1))``), parsed without running it.

``convnd explain`` and ``convnd animate`` take the layer the way people write it. The text is
parsed with :mod:`ast` and only a call of a known convolution class with literal arguments
(numbers, strings, tuples, lists, True/False/None) is accepted: nothing the user typed is ever
evaluated, so ``__import__('os').system(...)`` is refused before anything runs.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import modules
from .errors import fail

# the convolution classes a SPEC may name; the Nd ones exist only in convnd
CLASSES = (
    "Conv1d", "Conv2d", "Conv3d", "ConvNd",
    "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "ConvTransposeNd",
)  # fmt: skip
PREFIXES = ("", "nn", "torch.nn", "convnd")
# arguments that place or type the weights: irrelevant to shapes, and a device may not exist here
_PLACEMENT = ("device", "dtype")
_MAX_LENGTH = 1000
_EXPECTED = "a call of a convolution class with literal arguments, e.g. nn.Conv2d(3, 8, 3, stride=2)"


@dataclass(frozen=True)
class LayerText:
    """A parsed layer: which class, written with which prefix, called with which literal arguments.

    Attributes:
        name: the class name, one of :data:`CLASSES`.
        prefix: how the class was qualified (``''``, ``'nn'``, ``'torch.nn'`` or ``'convnd'``).
        args: the positional arguments.
        kwargs: the keyword arguments, without ``device``/``dtype``.
    """

    name: str
    prefix: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def transposed(self) -> bool:
        return self.name.startswith("ConvTranspose")

    @property
    def class_rank(self) -> int | None:
        """The rank the class name implies for an int kernel_size (None for the Nd classes)."""
        return None if self.name.endswith("Nd") else int(self.name[-2])

    def arguments(self) -> dict[str, Any]:
        """Every argument by name (defaults filled in), as convnd's class binds them."""
        cls = getattr(modules, self.name)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *self.args, **self.kwargs)
        except TypeError as error:
            fail("SPEC", str(self), f"a valid call of {self.name}", reason=str(error), kind="type")
        bound.apply_defaults()
        return {k: v for k, v in bound.arguments.items() if k != "self" and k not in _PLACEMENT}

    def build(self, device: str = "meta") -> modules._ConvBase:
        """The convnd module this text describes (on the meta device by default: shapes only, no memory)."""
        return getattr(modules, self.name)(**self.arguments(), device=device)

    def torch_twin(self) -> tuple[str, type[nn.Module]] | None:
        """The stock ``torch.nn`` class with the same name, or None when torch.nn has none (the Nd classes)."""
        if self.class_rank is None:
            return None
        return f"torch.nn.{self.name}", getattr(nn, self.name)

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.prefix + '.' if self.prefix else ''}{self.name}({', '.join(parts)})"


def parse_layer(text: str) -> LayerText:
    """Parse ``text`` into a :class:`LayerText`; anything but a literal call of a known class is an error.

    Args:
        text: e.g. ``"nn.Conv1d(4, 4, kernel_size=(1, 1))"`` or ``"ConvNd(2, 4, (3, 3, 3, 3), padding='same')"``.

    Example:
        >>> parse_layer("torch.nn.Conv2d(3, 8, 3, stride=2)").kwargs
        {'stride': 2}
    """
    if not isinstance(text, str):
        fail("SPEC", text, "a string", kind="type")
    if len(text) > _MAX_LENGTH:
        fail("SPEC", text[:40] + "...", f"at most {_MAX_LENGTH} characters long")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        fail("SPEC", text, _EXPECTED, reason="it is not a Python expression")
    if not isinstance(tree, ast.Call):
        fail("SPEC", text, _EXPECTED)
    prefix, name = _callee(tree.func, text)
    args = tuple(_literal(node, text) for node in tree.args)
    kwargs = {}
    for keyword in tree.keywords:
        if keyword.arg is None:
            fail("SPEC", text, _EXPECTED, reason="**keyword unpacking is not a literal")
        kwargs[keyword.arg] = _literal(keyword.value, text)
    kwargs = {k: v for k, v in kwargs.items() if k not in _PLACEMENT}
    return LayerText(name, prefix, args, kwargs)


def _callee(node: ast.expr, text: str) -> tuple[str, str]:
    """The (prefix, class name) of the called thing; only dotted names of known classes pass."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        fail("SPEC", text, _EXPECTED, reason="the called thing must be a class name")
    parts.append(node.id)
    *qualifier, name = reversed(parts)
    prefix = ".".join(qualifier)
    if name not in CLASSES or prefix not in PREFIXES:
        known = ", ".join(CLASSES)
        fail("SPEC", text, _EXPECTED, reason=f"{'.'.join((*qualifier, name))} is not one of {known}")
    if name.endswith("Nd") and prefix in ("nn", "torch.nn"):
        fail("SPEC", text, _EXPECTED, reason=f"torch.nn has no {name}; write convnd.{name} or {name}")
    return prefix, name


def _literal(node: ast.expr, text: str) -> Any:
    """A literal argument's value; ``ast.literal_eval`` builds constants and containers and runs nothing."""
    if isinstance(node, ast.Starred):
        fail("SPEC", text, _EXPECTED, reason="*argument unpacking is not a literal")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        fail(
            "SPEC",
            text,
            _EXPECTED,
            reason=f"{ast.get_source_segment(text.strip(), node)} is not a literal; SPEC is parsed, never run",
        )


def from_module(module: nn.Module) -> LayerText:
    """The text of a convnd or torch.nn convolution module, so explain can take an instance.

    Args:
        module: a convnd module or a ``torch.nn`` Conv/ConvTranspose module of rank 1-3.
    """
    name = type(module).__name__
    if not isinstance(module, (modules._ConvBase, nn.modules.conv._ConvNd)) or name not in CLASSES:
        fail("module", type(module).__name__, "a convolution module of convnd or torch.nn", kind="type")
    kwargs: dict[str, Any] = {"kernel_size": tuple(module.kernel_size), "stride": tuple(module.stride)}
    kwargs["padding"] = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    if module.transposed:
        kwargs["output_padding"] = tuple(module.output_padding)
    kwargs.update(dilation=tuple(module.dilation), groups=module.groups, bias=module.bias is not None)
    kwargs["padding_mode"] = module.padding_mode
    if isinstance(module, modules._ConvBase):  # convnd's own keywords, where they differ from the defaults
        own = {
            "channel_dim": module.channel_dim,
            "spatial_dims": module.spatial_dims,
            "convolution": module.convolution,
        }
        kwargs.update({k: v for k, v in own.items() if v != inspect.signature(modules.ConvNd).parameters[k].default})
    prefix = "convnd" if isinstance(module, modules._ConvBase) else "torch.nn"
    return LayerText(name, prefix, (module.in_channels, module.out_channels), kwargs)


def parse_shape(text: str) -> tuple[int, ...]:
    """An input shape written ``2,4,5,6``, ``(2, 4, 5, 6)`` or ``2x4x5x6``.

    Example:
        >>> parse_shape("2x4x5x6")
        (2, 4, 5, 6)
    """
    expected = "sizes >= 1 separated by commas or 'x', e.g. 2,4,5,6"
    cleaned = str(text).strip().strip("()[]").replace("x", ",")
    try:
        shape = tuple(int(part) for part in cleaned.split(",") if part.strip())
    except ValueError:
        fail("--input", text, expected)
    if len(shape) < 2 or any(size < 1 for size in shape):
        fail("--input", text, expected, reason="at least channels and one spatial size")
    return shape
