"""Convolution arguments, normalized and validated once into a :class:`ConvSpec`.

Everything downstream (the planner, the modules, emulate, rewrite, explain and
bench) reads a ``ConvSpec`` and never re-parses user arguments. The number of
spatial dims is never a name here: it is ``len(spec.kernel)``, and every
per-dim quantity is a tuple of that length.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import torch

from .caching import trace_safe_cache, tracing
from .errors import fail

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_WORDS = ("valid", "same")

IntOrTuple = Union[int, Sequence[int]]
PaddingArg = Union[int, str, Sequence[Union[int, Sequence[int]]]]
Pairs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ConvSpec:
    """A validated convolution, independent of the input's size.

    Attributes:
        kernel: kernel size per spatial dim; its length is the rank N.
        stride: stride per dim.
        dilation: dilation per dim.
        padding: (low, high) padding per dim, in input elements (for a
            transposed convolution: elements cropped from the full output).
        padding_mode: one of ``zeros``, ``reflect``, ``replicate``, ``circular``.
        groups: number of channel groups.
        transposed: True for the transposed convolution (the adjoint).
        output_padding: extra elements on the high side of a transposed output.
        native_padding: the padding exactly as torch's native kernel takes it
            (``'same'``, ``'valid'`` or one int per dim), passed through so results
            are bit-identical to torch; ``None`` when torch cannot express it
            (asymmetric pairs).
        native_arguments: derived (not an argument): ``(stride, native_padding, dilation)`` with
            one int where every dim agrees, as a direct native call passes them.
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pairs
    padding_mode: str = "zeros"
    groups: int = 1
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    native_padding: str | tuple[int, ...] | None = None
    # torch parses one int 0.7 us faster than a tuple of them, for the same result: worth it on every N <= 3 call
    native_arguments: tuple[Any, Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compact = (_one_int(self.stride), _one_int(self.native_padding), _one_int(self.dilation))
        object.__setattr__(self, "native_arguments", compact)  # frozen: set once, here

    @property
    def dims(self) -> int:
        """The number of spatial dims N."""
        return len(self.kernel)

    @property
    def window(self) -> tuple[int, ...]:
        """The extent of the dilated kernel per dim: ``d * (k - 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    @property
    def symmetric(self) -> bool:
        """True when every dim pads the same on both sides."""
        return all(lo == hi for lo, hi in self.padding)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """The spatial output size for a spatial input size (the one place this arithmetic lives).

        Convolution: ``floor((L + lo + hi - d*(k-1) - 1) / s) + 1``.
        Transposed: ``(L - 1)*s - lo - hi + d*(k-1) + output_padding + 1``.
        """
        if self.transposed:
            return tuple(
                (n - 1) * s - lo - hi + w + op
                for n, s, (lo, hi), w, op in zip(
                    input_size, self.stride, self.padding, self.window, self.output_padding
                )
            )
        return tuple(
            (n + lo + hi - w) // s + 1 for n, s, (lo, hi), w in zip(input_size, self.stride, self.padding, self.window)
        )

    def output_padding_for(self, input_size: Sequence[int], output_size: Sequence[int]) -> tuple[int, ...]:
        """Transposed: the output_padding that makes the output ``output_size`` (a module's ``output_size=``).

        Per dim the reachable sizes run from the output with no output_padding to that plus
        ``max(stride, dilation) - 1``: exactly the sizes a valid output_padding gives. torch.nn's
        ``_output_padding`` stops at ``stride - 1``; the two agree unless dilation > stride, where
        convnd also accepts the larger sizes ``F.conv_transpose`` itself can produce.
        """
        smallest = tuple(n - op for n, op in zip(self.output_size(input_size), self.output_padding))
        largest = tuple(lo + max(s, d) - 1 for lo, s, d in zip(smallest, self.stride, self.dilation))
        size = tuple(output_size)
        if any(not lo <= n <= hi for n, lo, hi in zip(size, smallest, largest)):
            fail(
                "output_size",
                size,
                f"between {smallest} and {largest} in each spatial dim",
                reason=f"the sizes reachable from input size {tuple(input_size)}",
            )
        return tuple(n - lo for n, lo in zip(size, smallest))

    def with_output_padding(self, output_padding: Sequence[int]) -> ConvSpec:
        """This spec with another (already validated) ``output_padding``: the same object for the same value,
        so the caches keyed by spec (shape checks, plans) keep hitting when a module's ``output_size=`` repeats."""
        return _with_output_padding(self, tuple(output_padding))

    def receptive_field(self) -> tuple[int, ...]:
        """How many input elements one output element depends on, per dim (the dilated window)."""
        return self.window

    def select(self, axes: Sequence[int]) -> ConvSpec:
        """The same convolution restricted to the spatial dims ``axes`` (in that order)."""
        padding = tuple(self.padding[a] for a in axes)
        return replace(
            self,
            kernel=tuple(self.kernel[a] for a in axes),
            stride=tuple(self.stride[a] for a in axes),
            dilation=tuple(self.dilation[a] for a in axes),
            padding=padding,
            output_padding=tuple(self.output_padding[a] for a in axes),
            native_padding=_native_form(self.native_padding, axes, padding),
        )

    def split(self, rank: int) -> tuple[ConvSpec, ConvSpec]:
        """The lowered dims (all but the last ``rank``) and the native ones (the last ``rank``) of a lowering."""
        lowered = self.dims - rank
        return self.select(range(lowered)), self.select(range(lowered, self.dims))

    def lifted(self, count: int) -> ConvSpec:
        """The same convolution with ``count`` singleton dims in front (kernel 1, stride 1, no padding)."""
        ones = (1,) * count
        native = self.native_padding
        if isinstance(native, tuple):
            native = (0,) * count + native
        return replace(
            self,
            kernel=ones + self.kernel,
            stride=ones + self.stride,
            dilation=ones + self.dilation,
            padding=((0, 0),) * count + self.padding,
            output_padding=(0,) * count + self.output_padding,
            native_padding=native,
        )

    def unpadded(self) -> ConvSpec:
        """The same convolution once padding has been applied to the input explicitly."""
        return replace(self, padding=((0, 0),) * self.dims, padding_mode="zeros", native_padding=(0,) * self.dims)


def _one_int(value: Any) -> Any:
    """A tuple of equal ints as that int (torch broadcasts it back); anything else unchanged."""
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return value[0]
    return value


def _native_form(
    native: str | tuple[int, ...] | None, axes: Sequence[int], padding: Pairs
) -> str | tuple[int, ...] | None:
    """Re-derive torch's padding form for a subset of dims."""
    if isinstance(native, str) and native == "valid":
        return native
    if all(lo == hi for lo, hi in padding):
        return tuple(lo for lo, _ in padding)
    return None


# --- normalizing single arguments -------------------------------------------------


def is_int(value: Any) -> bool:
    """An integer (anything with ``__index__``) that is not a bool.

    The type test comes first for torch.compile: Dynamo turns an int argument that changes
    between calls into a ``torch.SymInt`` and cannot answer ``hasattr`` on one. The
    ``operator.index`` that follows every check pins it to its value (a spec is a trace-time
    constant; another value recompiles).
    """
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, torch.SymInt)) or hasattr(value, "__index__")


def as_int(name: str, value: Any, *, minimum: int) -> int:
    """An int (not a bool, not a float) no smaller than ``minimum``."""
    if not is_int(value):
        fail(name, value, f"an int >= {minimum}", kind="type")
    value = operator.index(value)
    if value < minimum:
        fail(name, value, f"an int >= {minimum}")
    return value


def as_tuple(name: str, value: Any, dims: int, *, minimum: int) -> tuple[int, ...]:
    """One int per spatial dim: an int is broadcast, a sequence must have length ``dims``."""
    expected = f"an int >= {minimum} or a tuple of {dims} such ints (one per spatial dim)"
    if isinstance(value, (str, bytes)) or not (is_int(value) or isinstance(value, Sequence)):
        fail(name, value, expected, kind="type")
    if not isinstance(value, Sequence):
        return (_int_in(name, value, value, expected, minimum),) * dims
    if len(value) != dims:
        fail(name, tuple(value), expected, reason=f"the convolution has {dims} spatial dims")
    return tuple(_int_in(name, item, tuple(value), expected, minimum) for item in value)


def _int_in(name: str, item: Any, whole: Any, expected: str, minimum: int) -> int:
    """``item`` (part of the argument ``whole``) as an int >= minimum; messages show ``whole``."""
    if not is_int(item):
        fail(name, whole, expected, kind="type")
    if operator.index(item) < minimum:
        fail(name, whole, expected)
    return operator.index(item)


def resolve_padding(
    padding: PaddingArg, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...], transposed: bool
) -> tuple[Pairs, str | tuple[int, ...] | None]:
    """Turn any accepted padding form into (low, high) pairs plus torch's native form.

    Accepted: an int, ``'valid'``, ``'same'``, or one entry per dim, each an int or a
    (low, high) pair. ``'same'`` follows PyTorch: total ``d*(k-1)``, low ``total // 2``,
    the odd extra on the high side; it needs stride 1.
    """
    dims = len(kernel)
    if transposed:
        expected = f"an int >= 0 or a tuple of {dims} such ints (one per spatial dim)"
    else:
        expected = (
            f"an int >= 0, 'valid', 'same', or a tuple of {dims} entries (one per spatial dim), "
            "each an int >= 0 or a (low, high) pair"
        )
    if isinstance(padding, str):
        if transposed:
            fail("padding", padding, expected, reason="a transposed convolution takes no padding words", kind="type")
        if padding == "valid":
            return ((0, 0),) * dims, "valid"
        if padding != "same":
            fail("padding", padding, expected)
        if any(s != 1 for s in stride):
            fail(
                "padding",
                padding,
                "an int, a tuple or 'valid' when stride is not 1",
                reason=f"'same' needs stride 1 in every dim, got stride={stride}",
            )
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals), "same"
    if transposed:
        if isinstance(padding, Sequence) and any(isinstance(e, Sequence) for e in padding):
            fail(
                "padding",
                _plain(padding),
                expected,
                reason="a transposed convolution crops its output symmetrically: no (low, high) pairs",
                kind="type",
            )
        symmetric = as_tuple("padding", padding, dims, minimum=0)
        return tuple((p, p) for p in symmetric), symmetric
    if not isinstance(padding, Sequence):
        p = _int_in("padding", padding, padding, expected, 0)
        return ((p, p),) * dims, (p,) * dims
    if len(padding) != dims:
        fail("padding", tuple(padding), expected, reason=f"the convolution has {dims} spatial dims")
    pairs = tuple(_as_pair(entry, padding, expected) for entry in padding)
    native = tuple(lo for lo, _ in pairs) if all(lo == hi for lo, hi in pairs) else None
    return pairs, native


def _as_pair(entry: Any, padding: Any, expected: str) -> tuple[int, int]:
    """One dim's padding entry as (low, high)."""
    if isinstance(entry, Sequence) and not isinstance(entry, str):
        if len(entry) != 2:
            fail("padding", _plain(padding), expected, reason=f"entry {_plain(entry)} is not a (low, high) pair")
        lo, hi = (_int_in("padding", e, _plain(padding), expected, 0) for e in entry)
        return lo, hi
    p = _int_in("padding", entry, _plain(padding), expected, 0)
    return p, p


def _plain(value: Any) -> Any:
    """Lists as tuples, so messages read the same whichever the user passed."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_plain(v) for v in value)
    return value


class _Uncacheable(Exception):
    """An argument with a leaf that is not exactly an int or a str: validate it without the cache."""


def _freeze(value: Any) -> Any:
    """A cache key for an argument: lists become tuples; leaves must be exactly int or str.

    Why exact types: ``1.0 == True == 1`` hash alike, so a cache keyed on the raw values
    would hand back the spec of ``stride=1`` for ``stride=1.0`` and skip its validation.
    """
    kind = type(value)
    if kind in _LEAF_TYPES:  # a Size holds ints alone (a weight's kernel: kernel_of)
        return value
    if isinstance(value, (tuple, list)):
        if set(map(type, value)) <= _INT_ONLY:  # the common case, checked without a generator
            return value if kind is tuple else tuple(value)
        return tuple(_freeze(v) for v in value)
    raise _Uncacheable


_INT_ONLY = {int}


def argument_key(arguments: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``arguments`` as a cache key that tells apart every value validation would tell apart (``1`` from ``1.0``
    and ``True``; lists are tuples), or None when a leaf is not exactly an int, a str or a torch.Size."""
    if set(map(type, arguments)) <= _LEAF_TYPES:  # the common case, ints and words, in one pass
        return arguments
    try:
        return tuple(map(_freeze, arguments))
    except _Uncacheable:
        return None


_LEAF_TYPES = {int, str, torch.Size}  # the types _freeze keeps as they are


# --- the spec ------------------------------------------------------------------------


def make_spec(
    kernel: Sequence[int],
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    transposed: bool = False,
    output_padding: IntOrTuple = 0,
) -> ConvSpec:
    """Validate convolution arguments for a kernel of known rank and return the spec.

    Args:
        kernel: the kernel size per spatial dim (its length is the rank).
        stride, padding, dilation, groups, padding_mode: as ``torch.nn.functional.conv2d``,
            for any rank; padding also takes (low, high) pairs.
        transposed: build the spec of a transposed convolution.
        output_padding: transposed only, one int per dim, each below max(stride, dilation).

    Example:
        >>> make_spec((3, 3, 3, 3), padding="same").padding[0]
        (1, 1)
    """
    if tracing():  # no cache keys from traced (maybe symbolic) ints: see convnd.caching
        return _build_spec(kernel, stride, padding, dilation, groups, padding_mode, transposed, output_padding)
    key = argument_key((kernel, stride, padding, dilation, groups, padding_mode, output_padding))
    if key is None:
        return _build_spec(kernel, stride, padding, dilation, groups, padding_mode, transposed, output_padding)
    kernel, stride, padding, dilation, groups, padding_mode, output_padding = key
    return _cached_spec(kernel, stride, padding, dilation, groups, padding_mode, bool(transposed), output_padding)


def _build_spec(
    kernel: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    padding_mode: Any,
    transposed: bool,
    output_padding: Any,
) -> ConvSpec:
    kernel = resolve_kernel(kernel)  # a non-empty tuple of ints >= 1: its length is the rank
    dims = len(kernel)
    stride = as_tuple("stride", stride, dims, minimum=1)
    dilation = as_tuple("dilation", dilation, dims, minimum=1)
    groups = as_int("groups", groups, minimum=1)
    pairs, native = resolve_padding(padding, kernel, stride, dilation, transposed)
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        kind = "value" if isinstance(padding_mode, str) else "type"
        fail("padding_mode", padding_mode, "one of " + ", ".join(repr(m) for m in PADDING_MODES), kind=kind)
    if transposed and padding_mode != "zeros":
        fail("padding_mode", padding_mode, "'zeros'", reason="a transposed convolution pads only with zeros, as torch")
    out_pad = as_tuple("output_padding", output_padding, dims, minimum=0)
    if not transposed and any(out_pad):
        fail("output_padding", output_padding, "0", reason="output_padding is for transposed convolutions")
    for op, s, d in zip(out_pad, stride, dilation):
        if op >= max(s, d):
            fail(
                "output_padding",
                out_pad,
                "smaller than max(stride, dilation) in every dim",
                reason=f"stride={stride}, dilation={dilation}",
            )
    return ConvSpec(kernel, stride, dilation, pairs, padding_mode, groups, transposed, out_pad, native)


# make_spec has asked tracing() already: the plain lru_cache, not trace_safe_cache's second ask
_cached_spec = functools.lru_cache(maxsize=1024)(_build_spec)


@trace_safe_cache(maxsize=1024)
def _with_output_padding(spec: ConvSpec, output_padding: tuple[int, ...]) -> ConvSpec:
    return replace(spec, output_padding=output_padding)


def resolve_kernel(kernel_size: Any, rank: int | None = None, dims: int | None = None) -> tuple[int, ...]:
    """Decide a module's rank: a tuple kernel_size decides, else the class's rank, else ``dims``.

    Args:
        kernel_size: an int or a tuple of ints.
        rank: the rank the class implies (1, 2, 3 for Conv1d/2d/3d), or None for ConvNd.
        dims: the explicit ``dims=`` keyword, or None.
    """
    if dims is not None:
        dims = as_int("dims", dims, minimum=1)
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        if len(kernel_size) == 0:
            fail("kernel_size", tuple(kernel_size), "a non-empty tuple of ints >= 1")
        if dims is not None and len(kernel_size) != dims:
            fail("kernel_size", tuple(kernel_size), f"a tuple of {dims} ints", reason=f"dims={dims} was given")
        return as_tuple("kernel_size", kernel_size, len(kernel_size), minimum=1)
    n = dims if dims is not None else rank
    if n is None:
        fail(
            "kernel_size",
            kernel_size,
            "a tuple (one size per spatial dim) when dims= is not given",
            reason="ConvNd cannot tell the number of spatial dims from an int",
            kind="type" if not hasattr(kernel_size, "__index__") else "value",
        )
    return as_tuple("kernel_size", kernel_size, n, minimum=1)


def module_spec(module: Any) -> ConvSpec:
    """The spec of a convolution module, from the attributes torch.nn's and convnd's modules share.

    Built on every call (from the cache), so edits to the attributes take effect.
    """
    return make_spec(
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        module.groups,
        module.padding_mode,
        transposed=module.transposed,
        output_padding=module.output_padding,
    )


def fan_in(in_channels: int, groups: int, kernel: Sequence[int]) -> int:
    """Inputs one output element sums over (used by init and by explain)."""
    return in_channels // groups * math.prod(kernel)
