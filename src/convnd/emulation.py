"""``convnd.emulate``: run a convolution module on native convolutions of a chosen rank.

An emulation is a second view of the same module: it shares the module's parameter,
buffer, submodule and hook dictionaries (so parametrizations, weight_norm hooks,
``state_dict`` keys and training all act on the original), and only ``forward``
differs: it builds the module's :class:`ConvSpec` from its attributes and runs it
through the planner with ``native_rank`` forced. Raising the rank adds singleton
dims (``lift``); lowering it convolves the extra dims tap by tap (``tapsum``), the
same machinery ``convnd.conv`` uses past 3 dims.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.lazy import LazyModuleMixin

from .errors import fail
from .functional import run
from .lowering import NATIVE_RANKS
from .modules import ConvNd, ConvTransposeNd, _ConvBase, spec_for_output_size
from .spec import module_spec

# the classes whose forward convnd knows; a subclass that overrides forward (or torch's
# _conv_forward) adds behaviour an emulation would silently drop, so it is refused
_KNOWN = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    ConvNd, ConvTransposeNd,
)  # fmt: skip
_KNOWN_METHODS = {
    name: {getattr(cls, name) for cls in _KNOWN if hasattr(cls, name)} for name in ("forward", "_conv_forward")
}


class Emulation(nn.Module):
    """Mixin of every emulated convolution class (``isinstance(m, convnd.Emulation)`` finds them).

    The concrete class of ``emulate(m, dims)`` derives from this and from ``type(m)``, so
    the emulation keeps every attribute, property (parametrized weights) and ``repr`` of
    the original; ``native_rank`` is the rank of every native convolution it runs.
    """

    native_rank: int
    _emulated_base: type

    def forward(self, input: torch.Tensor, output_size: Any = None) -> torch.Tensor:
        # self.weight goes through the class's attribute access, so parametrizations apply
        return self._conv_forward(input, self.weight, self.bias, output_size)

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, output_size: Any = None
    ) -> torch.Tensor:
        """torch.nn.ConvXd's own hook point, overridden too, so code that calls it directly is emulated as well."""
        spec = module_spec(self)
        # convnd's modules also say where the input's axes are and whether the kernel flips
        layout = self._layout_keywords(with_flip=False) if isinstance(self, _ConvBase) else {}
        flip = {"convolution": self.convolution} if isinstance(self, _ConvBase) else {}
        if output_size is not None:
            if not spec.transposed:
                fail("output_size", output_size, "None", reason="only a transposed convolution takes an output size")
            spec = spec_for_output_size(spec, input, output_size, **layout)
        return run(input, weight, bias, spec, native_rank=self.native_rank, **layout, **flip)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, native_rank={self.native_rank}"

    def __reduce_ex__(self, protocol: Any) -> Any:
        # the class is made at run time, so pickle and deepcopy rebuild it from the base class
        return _rebuild, (self._emulated_base,), self.__dict__


def emulate(module: nn.Module, dims: int) -> nn.Module:
    """The same convolution, computed with native convolutions of ``dims`` spatial dims only.

    Args:
        module: a torch.nn Conv1d/2d/3d or ConvTranspose1d/2d/3d (also Lazy once materialized,
            parametrized, under weight_norm), or a convnd ConvNd/ConvTransposeNd of any rank.
        dims: 1, 2 or 3, the rank of every native convolution the result runs.

    Returns:
        A module sharing ``module``'s parameters, buffers, submodules and hooks (no copy):
        same ``state_dict`` keys, training it trains ``module``. Its class derives from
        ``type(module)`` and :class:`Emulation`.

    Example:
        >>> conv = torch.nn.Conv1d(4, 8, kernel_size=4, padding="same")
        >>> flat = emulate(conv, 2)                        # runs one Conv2d over (B, C, 1, L)
        >>> x = torch.randn(2, 4, 50)
        >>> torch.allclose(flat(x), conv(x), atol=1e-6)
        True
    """
    rank = native_rank_of(dims)
    base = convolution_class(module)
    emulation = object.__new__(_emulated_class(base))
    # share the very dicts (parameters, buffers, submodules, hooks): a view, not a copy
    emulation.__dict__.update(module.__dict__)
    emulation.__dict__["native_rank"] = rank
    return emulation


def unemulated(module: nn.Module) -> nn.Module:
    """The module an emulation views, as its own class again (sharing the same dicts); others as they are."""
    if not isinstance(module, Emulation):
        return module
    plain = object.__new__(module._emulated_base)
    plain.__dict__.update((k, v) for k, v in module.__dict__.items() if k != "native_rank")
    return plain


def native_rank_of(dims: Any) -> int:
    """``dims`` checked as the rank of a native torch convolution: 1, 2 or 3."""
    if isinstance(dims, bool) or not isinstance(dims, int):
        fail("dims", dims, "an int: 1, 2 or 3", kind="type")
    if dims not in NATIVE_RANKS:
        fail("dims", dims, "1, 2 or 3", reason="torch has native convolutions of these ranks only")
    return dims


def is_convolution(module: Any) -> bool:
    """Whether ``module`` is a torch.nn or convnd convolution (emulated ones included)."""
    return isinstance(module, (_ConvNd, _ConvBase))


def running_rank(module: nn.Module) -> int:
    """The rank of the native convolutions ``module`` runs now (convnd caps its own at 3)."""
    if isinstance(module, Emulation):
        return module.native_rank
    return min(len(module.kernel_size), max(NATIVE_RANKS))


def convolution_class(module: Any, argument: str = "module") -> type:
    """The class an emulation of ``module`` derives from, or a clear error when there is none.

    Args:
        module: the candidate.
        argument: how the error names it (``rewrite`` passes the module's path in the model).
    """
    if not is_convolution(module):
        fail(
            argument,
            _name(module),
            "a convolution module (torch.nn Conv1d/2d/3d, ConvTranspose1d/2d/3d, or convnd ConvNd/ConvTransposeNd)",
            kind="type",
        )
    if isinstance(module, Emulation):
        return module._emulated_base
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        fail(
            argument,
            _name(module),
            "a materialized convolution",
            reason="a lazy module learns in_channels from its first input: run one forward pass first",
        )
    cls = type(module)
    for method, known in _KNOWN_METHODS.items():
        if hasattr(cls, method) and getattr(cls, method) not in known:
            fail(
                argument,
                _name(module),
                f"a convolution whose {method} is torch.nn's or convnd's own",
                reason=f"{cls.__name__} overrides {method}, and an emulation cannot know what that adds",
            )
    return cls


_CLASSES: dict[type, type] = {}


def _emulated_class(base: type) -> type:
    """``Emulated<Base>``, deriving from :class:`Emulation` and ``base`` (made once per base)."""
    if base not in _CLASSES:
        _CLASSES[base] = type(
            f"Emulated{base.__name__}", (Emulation, base), {"__module__": __name__, "_emulated_base": base}
        )
    return _CLASSES[base]


def _rebuild(base: type) -> nn.Module:
    """An empty emulation of ``base``; pickle and deepcopy then restore its ``__dict__``."""
    return object.__new__(_emulated_class(base))


class _Plain(str):
    """Text shown as is (no quotes) where an error message renders the value it got."""

    def __repr__(self) -> str:
        return str(self)


def _name(module: Any) -> Any:
    """A module by its class name in messages (its full repr can run to pages)."""
    return _Plain(type(module).__name__) if isinstance(module, nn.Module) else module
