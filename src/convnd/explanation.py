"""``convnd explain``: what a convolution layer does to a tensor of a given shape, computed, not recited.

Every number comes from convnd's own mechanism: the layer is built with convnd's module
classes (on the ``meta`` device, so no memory is used), its :class:`~convnd.spec.ConvSpec`
gives the per-dim arguments and :meth:`~convnd.spec.ConvSpec.output_size` the output shape,
:func:`~convnd.checks.check_operands` judges the input, and :func:`~convnd.lowering.plan`
says how convnd runs it and how it is spelled on native kernels of the other ranks. What stock
``torch.nn`` does is found by building the torch layer and running it.

Example:
    >>> e = explain("nn.Conv1d(4, 4, kernel_size=(1, 1))", (2, 4, 5, 6))
    >>> e.dims, e.output_shape
    (2, (2, 4, 5, 6))
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import textwrap
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from . import selection
from .checks import check_operands
from .functional import channels_first
from .layer_text import LayerText, from_module, parse_layer, parse_shape
from .layout import DEFAULT_CHANNEL_DIM, Layout, resolve_layout
from .lowering import execute, live_taps, plan, unread_dims
from .selection import STRATEGIES, axis_order
from .spec import ConvSpec, fan_in
from .testing import NativeConvolutions

# past these sizes torch is not asked to run on real tensors (meta tensors give shapes only)
_REAL_ELEMENTS = 1 << 22
_REAL_MACS = 50_000_000
_TAPS_SHOWN = 3
# keywords convnd's classes take and torch.nn's do not, with their defaults
_CONVND_ONLY = {"dims": None, "channel_dim": DEFAULT_CHANNEL_DIM, "spatial_dims": None, "convolution": False}


@dataclass(frozen=True)
class DimRow:
    """One spatial dim: the arguments convnd resolved and the output size they give."""

    axis: int
    input: int
    kernel: int
    stride: int
    pad_low: int
    pad_high: int
    dilation: int
    window: int
    output_padding: int
    output: int
    arithmetic: str


@dataclass(frozen=True)
class Recipe:
    """The convolution on torch's native kernels of one rank, as :func:`convnd.lowering.plan` runs it.

    Attributes:
        rank: the rank of the native kernels.
        strategy: ``direct``, ``lift``, or a lowering strategy (:data:`convnd.selection.STRATEGIES`).
        native_calls: how many native convolutions run for this input.
        summary: one line in words.
        steps: the recipe as code-like lines.
    """

    rank: int
    strategy: str
    native_calls: int
    summary: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class TorchVerdict:
    """What the stock ``torch.nn`` layer of the installed torch does with the same layer and input."""

    torch_version: str
    layer: str | None
    ran: bool
    output_shape: tuple[int, ...] | None
    identical: bool | None
    error: str | None
    reason: str


@dataclass(frozen=True)
class Explanation:
    """Everything ``convnd explain`` reports; ``str()`` is the terminal view, :meth:`to_dict` the JSON one."""

    layer: str
    transposed: bool
    dims: int
    dims_from: str
    dims_reason: str
    input_shape: tuple[int, ...]
    layout: str
    torch_layout: bool
    flipped: bool
    batched: bool
    in_channels: int
    out_channels: int
    groups: int
    rows: tuple[DimRow, ...]
    output_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    parameters: int
    macs: int
    macs_per_element: int
    receptive_field: tuple[int, ...]
    convnd_plan: Recipe
    torch_nn: TorchVerdict
    other_ranks: tuple[Recipe, ...]

    def to_dict(self) -> dict[str, Any]:
        """The explanation as plain dicts and lists (``dataclasses.asdict``), ready for JSON."""
        return asdict(self)

    def __str__(self) -> str:
        return render(self)


def explain(spec: Any, input_shape: Any) -> Explanation:
    """Explain what the layer ``spec`` does to an input of shape ``input_shape``.

    Args:
        spec: the layer as text (``"nn.Conv1d(4, 4, kernel_size=(1, 1))"``; parsed, never run) or a
            convnd / torch.nn convolution module.
        input_shape: (B, C, *spatial) or (C, *spatial), as a sequence or text like ``"2,4,5,6"``.

    Returns:
        an :class:`Explanation`; print it, or read ``.dims``, ``.output_shape``, ``.to_dict()``.

    Raises:
        ConvndError: a SPEC that is not a literal call of a convolution class, bad arguments, or an
            input whose rank, channels or size the layer cannot take (the message says which).
    """
    checked = layer_and_input(spec, input_shape)
    text, module, shape, canonical = checked.text, checked.module, checked.shape, checked.canonical
    arguments, spec = text.arguments(), module.spec  # from here on, spec is the layer's validated ConvSpec
    spatial = canonical[-spec.dims :]
    out_spatial = spec.output_size(spatial)
    output_shape = checked.output_shape()
    dims_from, dims_reason = _rank_reason(text, arguments, spec)
    # a transposed convolution multiplies every input element by its group's kernel; a convolution
    # computes every output element from its group's input channels (taps on padding included)
    counted = canonical if spec.transposed else output_shape
    per_element = fan_in(module.out_channels if spec.transposed else module.in_channels, spec.groups, spec.kernel)
    macs = math.prod(counted) * per_element
    recipes = {r: _recipe(spec, r, module, canonical) for r in (1, 2, 3)}
    chosen = plan(spec).native_rank
    if spec.dims > chosen:  # past the native rank the shapes choose the strategy: describe the one that runs
        recipes[chosen] = _planned_recipe(spec, module, checked, recipes[chosen])
    return Explanation(
        layer=str(text),
        transposed=spec.transposed,
        dims=spec.dims,
        dims_from=dims_from,
        dims_reason=dims_reason,
        input_shape=shape,
        layout=checked.layout.describe(),
        torch_layout=checked.layout.torch_layout,
        flipped=module.convolution,
        batched=checked.batched,
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        groups=spec.groups,
        rows=_rows(spec, spatial, out_spatial),
        output_shape=output_shape,
        weight_shape=tuple(module.weight.shape),
        parameters=sum(p.numel() for p in module.parameters()),
        macs=macs,
        macs_per_element=per_element,
        receptive_field=spec.receptive_field(),
        convnd_plan=recipes[chosen],
        torch_nn=_torch_verdict(text, spec, shape, output_shape, macs),
        other_ranks=tuple(recipe for r, recipe in recipes.items() if r not in (chosen, spec.dims)),
    )


@dataclass(frozen=True)
class LayerInput:
    """A parsed layer and a checked input shape.

    Attributes:
        text: the layer as parsed.
        module: convnd's module for it, on the meta device.
        shape: the input shape as the user gave it.
        layout: where the batch, channel and spatial axes are (the layer's channel_dim/spatial_dims).
        canonical: the input's shape in the order convnd computes in: (B, C, *spatial), or torch's
            unbatched (C, *spatial).
        batched: whether ``canonical`` has a batch axis.
    """

    text: LayerText
    module: Any
    shape: tuple[int, ...]
    layout: Layout
    canonical: tuple[int, ...]
    batched: bool

    def output_shape(self) -> tuple[int, ...]:
        """The output's shape in the input's layout, from ``ConvSpec.output_size``."""
        spec = self.module.spec
        out = (
            *self.canonical[: -spec.dims - 1],
            self.module.out_channels,
            *spec.output_size(self.canonical[-spec.dims :]),
        )
        return tuple(self.layout.from_canonical(torch.empty(out, device="meta"), self.shape).shape)


def layer_and_input(layer: Any, input_shape: Any) -> LayerInput:
    """Parse a layer and check an input shape against it: the one entry of ``explain`` and ``animate``.

    The module is convnd's own class, the input moves to (B, C, *spatial) by the layer's layout and is
    judged by :func:`convnd.checks.check_operands`, as :func:`convnd.functional.run` does, so errors are
    convnd's one-line messages.
    """
    text = parse_layer(layer) if isinstance(layer, str) else from_module(layer)
    shape = parse_shape(input_shape if isinstance(input_shape, str) else ",".join(map(str, input_shape)))
    module = text.build()
    layout = resolve_layout(len(shape), module.dims, module.channel_dim, module.spatial_dims)
    x = layout.to_canonical(torch.empty(shape, device="meta"))
    batched = check_operands(x, module.weight, module.bias, module.spec)
    return LayerInput(text, module, shape, layout, tuple(x.shape), batched)


# --- the parts ------------------------------------------------------------------------------


def _rank_reason(text: LayerText, arguments: dict[str, Any], spec: ConvSpec) -> tuple[str, str]:
    """Which argument decided the number of spatial dims (the rule of :func:`convnd.spec.resolve_kernel`)."""
    kernel, n, rank = arguments["kernel_size"], spec.dims, text.class_rank
    if isinstance(kernel, (tuple, list)):
        entries = "entry" if n == 1 else "entries"
        reason = f"kernel_size={tuple(kernel)} has {n} {entries}, and a tuple kernel_size sets the rank"
        if rank is not None and rank != n:
            reason += f" (the '{rank}d' in {text.name} only says how an int kernel_size is broadcast)"
        return "kernel_size", reason
    if rank is not None:
        return "class", f"kernel_size={kernel} is an int, so {text.name}'s rank {n} broadcasts it to {spec.kernel}"
    return "dims", f"dims={n}; the int kernel_size={kernel} is broadcast to {spec.kernel}"


def _rows(spec: ConvSpec, spatial: tuple[int, ...], out: tuple[int, ...]) -> tuple[DimRow, ...]:
    """Per-dim arguments, with the output size from ``spec.output_size`` and its formula filled in."""
    rows = []
    for axis, (n, k, s, (lo, hi), d, w, o) in enumerate(
        zip(spatial, spec.kernel, spec.stride, spec.padding, spec.dilation, spec.window, out)
    ):
        op = spec.output_padding[axis]
        if spec.transposed:
            arithmetic = f"({n} - 1)*{s} - {lo} - {hi} + {w} + {op} = {o}"
        else:
            arithmetic = f"({n} + {lo} + {hi} - {w}) // {s} + 1 = {o}"
        rows.append(DimRow(axis, n, k, s, lo, hi, d, w, op, o, arithmetic))
    return tuple(rows)


def _layer_call(spec: ConvSpec, in_channels: int, out_channels: int) -> str:
    """``torch.nn.ConvXd(...)`` spelling ``spec`` with one value per dim, as torch takes them."""
    name = f"ConvTranspose{spec.dims}d" if spec.transposed else f"Conv{spec.dims}d"
    padding = spec.native_padding
    assert padding is not None, "asymmetric padding: spell the explicit pad first (_pad_first)"
    parts = [f"{in_channels}, {out_channels}", f"kernel_size={spec.kernel}", f"stride={spec.stride}"]
    parts.append(f"padding={padding!r}")
    if spec.transposed and any(spec.output_padding):
        parts.append(f"output_padding={spec.output_padding}")
    parts.append(f"dilation={spec.dilation}")
    if spec.groups != 1:
        parts.append(f"groups={spec.groups}")
    if spec.padding_mode != "zeros":
        parts.append(f"padding_mode={spec.padding_mode!r}")
    return f"nn.{name}({', '.join(parts)})"


def _pad_first(spec: ConvSpec) -> tuple[tuple[str, ...], ConvSpec]:
    """Asymmetric padding torch cannot take: pad explicitly first, then convolve unpadded (lowering.native pads
    only the asymmetric part and passes the common one to torch; the same result)."""
    if spec.native_padding is None:
        return (f"x = pad(x, {spec.padding}, mode={spec.padding_mode!r})  # (low, high) per dim",), spec.unpadded()
    return (), spec


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _recipe(spec: ConvSpec, rank: int, module: Any, shape: tuple[int, ...]) -> Recipe:
    """The layer on native kernels of ``rank``, following :func:`convnd.lowering.plan`."""
    how = plan(spec, rank)
    channels = (module.in_channels, module.out_channels)
    if how.strategy == "direct":
        summary = f"one native {rank}-d torch convolution with the layer's own arguments (bit-identical to torch.nn)"
        pad, spec = _pad_first(spec)
        return Recipe(rank, how.strategy, 1, summary, (*pad, f"y = {_layer_call(spec, *channels)}(x)"))
    if how.strategy == "lift":
        extra = rank - spec.dims
        pad, lifted = _pad_first(spec.lifted(extra))
        lift = f".unsqueeze({-spec.dims - 1})"
        steps = (
            f"x = x{lift * extra}  # {shape} -> {(*shape[: -spec.dims], *(1,) * extra, *shape[-spec.dims :])}",
            *pad,
            f"conv = {_layer_call(lifted, *channels)}  # weight{lift * extra}",
            f"y = conv(x){f'.squeeze({-spec.dims - 1})' * extra}",
        )
        ones = _plural(extra, "extra size-1 dim")
        summary = f"one native {rank}-d call over {ones} in front (kernel 1, stride 1, padding 0 there)"
        return Recipe(rank, how.strategy, 1, summary, steps)
    return _tapsum_recipe(spec, rank, channels, shape)


def _planned_recipe(spec: ConvSpec, module: Any, checked: LayerInput, tapsum: Recipe) -> Recipe:
    """What ``convnd`` runs for this input past the native rank: the cost model's plan (as
    :func:`convnd.functional.run` makes it), its native calls counted by running it on meta tensors."""
    x = checked.layout.to_canonical(torch.empty(checked.shape, device="meta"))
    weight = torch.empty(module.weight.shape, device="meta", dtype=module.weight.dtype)
    how = plan(spec, input_shape=x.shape, weight_shape=weight.shape, channels_first=channels_first(x, spec))
    measured = how.strategy == "measure"
    if measured:  # timed on the first real call; here, the cost model's pick (as while compiling)
        batched = x if checked.batched else x.unsqueeze(0)
        how = selection.measured(batched, weight, None, spec, how, timed=False)
    unread = unread_dims(spec, tuple(x.shape[-spec.dims :]))
    if unread:  # execute answers it before any lowering runs
        if spec.transposed:
            reads = "every input element lands only on the cropped margin"
        else:
            reads = "every output reads only zero padding"
        dims = f"dim{'s' * (len(unread) > 1)} {', '.join(map(str, unread))}"
        summary = f"no native convolution: along {dims} {reads}, so the output is the bias alone"
        return Recipe(how.native_rank, how.strategy, 0, summary, ("y = zeros(output shape) + bias",))
    with torch.no_grad(), NativeConvolutions() as record:
        execute(x, weight, None, spec, how)
    count = len(record.calls)
    order = axis_order(spec.dims, how.native_rank, how.native_axes)
    if how.strategy == "tapsum" and order == tuple(range(spec.dims)) and count == tapsum.native_calls:
        return tapsum  # the spelled-out tap sum is literally what runs
    outer_axes = order[: spec.dims - how.native_rank]
    unpatch = how.strategy == "unfold" and selection.unpatches(spec)
    gemm = selection.call_rank(spec, how) == 0  # un-patching by GEMMs (not a pinned rank's native calls)
    ranks = record.ranks  # the calls' own rank where they share one (un-patching's GEMM: a 1x1 2-d call)
    rank = next(iter(ranks)) if len(ranks) == 1 else how.native_rank
    words = _STRATEGY_WORDS["unpatch-gemm" if gemm else "unpatch" if unpatch else how.strategy].format(
        k=tuple(spec.kernel[a] for a in outer_axes),
        taps=math.prod(spec.kernel[a] for a in outer_axes),
        dims=outer_axes,
        n=spec.dims,
    )
    calls_text = "no native convolution" if count == 0 else _plural(count, f"native {rank}-d call")
    note = " (strategy('measure') times the plausible strategies on the first call; the cost model's pick)"
    native_axes = order[spec.dims - how.native_rank :]
    if gemm:
        where = f"one GEMM per run of input rows of dim {order[0]}, dim {order[-1]} interleaved last"
    elif unpatch:
        where = (
            f"{how.native_rank}-d calls over dim{'s' * (how.native_rank > 1)} {', '.join(map(str, native_axes))}, "
            f"runs of input rows of dim {order[0]}"
        )
    else:
        where = f"native dims {tuple(a for a in order if a not in outer_axes)}, lowered dims {outer_axes}"
    steps = (
        where,
        f"force another: with convnd.strategy(name): ...  # one of {', '.join(STRATEGIES)}",
    )
    summary = f"{calls_text}: {words}" + (note if measured else "")
    training = plan(
        spec, input_shape=x.shape, weight_shape=weight.shape, channels_first=channels_first(x, spec), training=True
    )
    if not measured and training.strategy != how.strategy:  # the cost model weighs the backward where it differs
        summary += f"; when a gradient will be computed, {training.strategy} instead"
    return Recipe(rank, how.strategy, count, summary, steps)


# what each lowering does, in words (the README's strategy table, shortened)
_STRATEGY_WORDS = {
    "tapsum": "one per live tap of the outer kernel {k} over dims {dims}, the rows it reads folded into the batch "
    "(in output pieces where the memory budget asks)",
    "fold": "the {taps} taps of the outer kernel {k} over dims {dims} folded into the input channels (im2col over "
    "those dims), one call per piece of output rows",
    "spread": "the {taps} taps of the outer kernel {k} over dims {dims} as extra output channels, one call per run "
    "of input frames, each tap's slab then added where it lands (col2im over those dims)",
    "foldspread": "the taps of the outer kernel {k} over dims {dims}: all but the last dim's folded into the input "
    "channels, the last dim's as extra output channels, one call per piece of output rows, each of the last "
    "dim's slabs then added where it lands",
    "winograd": "Winograd's minimal filtering F(m, 3) along dim {dims}: the output frames in tiles of m (2, 3 "
    "or 4), each from m + 2 sums of input frames, one call per transformed kernel tap (m + 2 products per tile "
    "instead of 3m)",
    "dft": "a DFT along dim {dims}: the spectra of the input frames and of the {taps} taps, each frequency's "
    "product one group of a grouped call (a complex product as a real 2 x 2 block of channels; all frequencies in "
    "one call, or in runs within the memory budget), then the inverse DFT (exact up to rounding)",
    "band": "dims {dims} merged into the channels, with a banded (Toeplitz) weight joining each position to the "
    "positions its {taps} taps reach",
    "unfold": "one batched GEMM of the input's sliding windows with the weight, over all {n} dims (im2col + GEMM; "
    "transposed: per-tap columns, then col2im)",
    "unpatch": "un-patching: each kernel tiles its stride, so every output element is one tap's product; one "
    "native transposed call per run of input rows (the other dims' taps as its output channels), "
    "then one permute interleaves the tiles",
    "unpatch-gemm": "un-patching: each kernel tiles its stride, so every output element is one tap's product; one "
    "GEMM per run of input rows gives every tap of every input position (a native 1x1 call from 16 input "
    "channels per group), then two copies interleave the tiles",
    "fft": "FFT of the input and the kernel over all {n} dims, a channel product per frequency, inverse FFT (exact "
    "up to rounding)",
}


def _tapsum_recipe(spec: ConvSpec, rank: int, channels: tuple[int, int], shape: tuple[int, ...]) -> Recipe:
    """Leading dims tap by tap, each tap one native ``rank``-d call (``lowering._tapsum``, spelled out)."""
    steps = []
    if spec.padding_mode != "zeros":  # as lowering does: pad every dim first, then convolve unpadded
        steps.append(f"x = pad(x, {spec.padding}, mode={spec.padding_mode!r})")
        shape = (*shape[: -spec.dims], *(n + lo + hi for n, (lo, hi) in zip(shape[-spec.dims :], spec.padding)))
        spec = spec.unpadded()
    n_outer = spec.dims - rank
    outer, inner = spec.split(rank)
    sizes, batch = shape[-spec.dims : len(shape) - rank], math.prod(shape[: -spec.dims - 1])
    out_sizes = spec.output_size(shape[-spec.dims :])
    # a tap is skipped when it reads only padding in some outer dim, so the live taps are the product of
    # each dim's live taps: counted per dim, never enumerated (a huge kernel must not stall explain)
    per_dim = [list(taps) for taps in live_taps(outer, sizes)]
    count = math.prod(len(options) for options in per_dim)
    shown = itertools.islice(itertools.product(*per_dim), _TAPS_SHOWN)
    live = [(tuple(t for t, _ in combo), [w for _, w in combo]) for combo in shown]
    taps, lead = math.prod(outer.kernel), ":, " * (len(shape) - spec.dims)
    skipped = f" ({taps - count:,} read only padding: skipped)" if taps > count else ""
    outer_dims = tuple(range(n_outer))
    call, fold_pad = inner, ""
    if inner.native_padding is None:  # as lowering.native: torch pads the common part, the rest is padded first
        common = tuple(min(pair) for pair in inner.padding)
        rest = tuple((lo - c, hi - c) for (lo, hi), c in zip(inner.padding, common))
        call = replace(inner, padding=tuple((c, c) for c in common), native_padding=common)
        fold_pad = f", padded by {rest} (low, high) on the native dims"
    steps += [
        f"y = zeros({(*shape[: -spec.dims - 1], channels[1], *out_sizes)})",
        f"conv_t = {_layer_call(call, *channels)}  # weight[:, :, *t]{fold_pad}",
        f"for each of the {_plural(taps, 'tap')} t of kernel {outer.kernel} over dims {outer_dims}{skipped}:",
        f"    y[{lead}out_t] += conv_t(fold(x[{lead}in_t]))",
    ]
    for tap, windows in live:
        src = ", ".join(_slice_text(w[0]) for w in windows)
        dst = ", ".join(_slice_text(w[1]) for w in windows)
        positions = math.prod(len(range(*w[0].indices(n))) for w, n in zip(windows, sizes))
        folded = (positions * batch, channels[0], *shape[len(shape) - rank :])
        steps.append(f"    t={tap}: in_t [{src}] -> out_t [{dst}], fold gives {folded}")
    if count > _TAPS_SHOWN:
        steps.append(f"    ... and {count - _TAPS_SHOWN:,} more taps")
    summary = (
        f"{_plural(count, f'native {rank}-d call')}, one per tap of the outer kernel {outer.kernel}; "
        "fold() moves the positions a tap reads into the batch"
    )
    return Recipe(rank, "tapsum", count, summary, tuple(steps))


def _slice_text(s: slice) -> str:
    return f"{s.start}:{s.stop}" + (f":{s.step}" if s.step not in (None, 1) else "")


# --- what stock torch.nn does -----------------------------------------------------------------


def _torch_verdict(
    text: LayerText, spec: ConvSpec, shape: tuple[int, ...], output_shape: tuple[int, ...], macs: int
) -> TorchVerdict:
    """Build the stock torch.nn layer with the same arguments, run it, and say what happened and why."""
    version = torch.__version__
    twin = _torch_twin(text, spec)
    if twin is None:
        reason = f"torch.nn has Conv1d, Conv2d and Conv3d only: no stock layer convolves {spec.dims} spatial dims"
        return TorchVerdict(version, None, False, None, None, None, reason)
    name, cls, args, kwargs = twin
    call = f"{name}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
    small = math.prod(shape) <= _REAL_ELEMENTS and macs <= _REAL_MACS
    error = out = None
    try:
        out = cls(*args, **kwargs, device="meta")(torch.empty(shape, device="meta"))
    except Exception as meta_error:  # torch's own message is the point here, whatever its type
        error = meta_error
    # the CPU kernel is the one users run: the meta device words some errors vaguely, and it skips the check of
    # the weight's rank against the input's (a ConvTranspose1d with a 2-d kernel runs there; on the CPU it fails
    # before computing anything, whatever the size)
    if small or (error is None and int(name[-2]) != spec.dims):
        try:
            cls(*args, **kwargs)(torch.zeros(shape))
        except Exception as cpu_error:
            error = cpu_error
    if error is not None:
        message = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        return TorchVerdict(version, call, False, None, None, message, _why_torch_fails(spec, name, kwargs))
    torch_shape = tuple(out.shape)
    identical = _same_result(text, cls, args, kwargs, shape) if small else None
    if torch_shape != output_shape:
        reason = f"it runs but gives {torch_shape}, not convnd's {output_shape}"
    elif identical:
        reason = "it runs; with the same weights its output is bit-identical to convnd's"
    else:
        compared = "values not compared: too big to run here" if identical is None else "but different values"
        reason = f"it runs and gives the same shape ({compared})"
    return TorchVerdict(version, call, True, torch_shape, identical, None, reason)


def _torch_twin(text: LayerText, spec: ConvSpec) -> tuple[str, type, tuple[Any, ...], dict[str, Any]] | None:
    """The torch.nn class and arguments for the same layer: the class of the same name, else the rank's."""
    twin = text.torch_twin()
    if twin is not None:
        return (*twin, text.args, text.kwargs)
    if spec.dims > 3:
        return None
    name = f"{'ConvTranspose' if spec.transposed else 'Conv'}{spec.dims}d"
    # convnd's own keywords at their defaults say nothing torch.nn needs; set, they stay (and torch refuses them)
    kwargs = {k: v for k, v in text.arguments().items() if k not in _CONVND_ONLY or v != _CONVND_ONLY[k]}
    kwargs["kernel_size"] = spec.kernel
    return f"torch.nn.{name}", getattr(torch.nn, name), (), kwargs


def _why_torch_fails(spec: ConvSpec, name: str, kwargs: dict[str, Any]) -> str:
    """The cause of torch's refusal in plain words, for the cases convnd resolves differently."""
    own = [k for k in kwargs if k in _CONVND_ONLY]
    if own:
        return (
            f"{', '.join(own)}: convnd's own; torch.nn takes (B, C, *spatial) inputs and cross-correlates only "
            "(move the axes and flip the kernel yourself)"
        )
    rank = int(name[-2])
    if rank != spec.dims:
        return (
            f"{name} takes its rank from its name ({rank}-d: an input of {rank + 1} or {rank + 2} dims, "
            f"{_plural(rank, 'value')} per int stride/padding/dilation) while its weight takes the rank of "
            f"kernel_size ({spec.dims}-d); torch 2.x refuses the mix. convnd lets the kernel decide: "
            f"a {spec.dims}-d convolution"
        )
    if not spec.symmetric:
        return "torch.nn pads both sides of a dim equally; (low, high) padding pairs are convnd's"
    return "torch refuses these arguments or this input; convnd accepts them (see the error)"


def _same_result(text: LayerText, cls: type, args: Any, kwargs: dict[str, Any], shape: tuple[int, ...]) -> bool:
    """Run torch's layer and convnd's with the same weights on a small random input; equal bit for bit?"""
    generator = torch.Generator().manual_seed(0)
    theirs = cls(*args, **kwargs)
    ours = text.build(device="cpu")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(shape, generator=generator)
    with torch.no_grad():
        return torch.equal(theirs(x), ours(x))


# --- the terminal view --------------------------------------------------------------------------


def table(headers: tuple[str, ...], rows: list[tuple[Any, ...]], indent: str = "  ") -> list[str]:
    """Aligned columns: numbers right, text left, no borders."""
    cells = [tuple(map(str, headers))] + [tuple(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(row[i].lstrip("-").isdigit() for row in cells[1:]) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)]
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def render(e: Explanation, width: int = 100) -> str:
    """The terminal view of an explanation: short sections, aligned columns, prose wrapped to ``width``."""
    kind = "transposed convolution" if e.transposed else "convolution"
    spatial = tuple(r.input for r in e.rows)
    lines = [f"{e.layer}  on input {e.input_shape}", ""]
    lines += _wrap(f"A {e.dims}-d {kind}: {e.dims_reason}.", width)
    batched = "batched" if e.batched else "unbatched"
    moved = "" if e.torch_layout else f"; {e.layout}"
    lines += _wrap(f"Input: {batched}, {_plural(e.in_channels, 'channel')}, spatial {spatial}{moved}.", width)
    if e.flipped:
        lines += _wrap("convolution=True: the kernel is flipped over its spatial dims (a true convolution).", width)
    lines.append("")
    if e.transposed:
        formula = "(in-1)*stride - low - high + window + out_pad"
    else:
        formula = "(in + low + high - window) // stride + 1"
    headers = ("dim", "in", "kernel", "stride", "pad low", "pad high", "dilation", "window")
    rows = [(r.axis, r.input, r.kernel, r.stride, r.pad_low, r.pad_high, r.dilation, r.window) for r in e.rows]
    if e.transposed:
        headers += ("out_pad",)
        rows = [(*row, r.output_padding) for row, r in zip(rows, e.rows)]
    headers += ("out", formula)
    lines += table(headers, [(*row, r.output, r.arithmetic) for row, r in zip(rows, e.rows)])
    lines += ["  window = dilation*(kernel-1) + 1: the extent of the dilated kernel", ""]
    per = "input element" if e.transposed else "output element"
    bias = f" + bias ({e.out_channels},)" if e.parameters > math.prod(e.weight_shape) else ""
    reach = "output elements one input element writes" if e.transposed else "input elements one output element reads"
    facts = [
        ("output shape", str(e.output_shape)),
        ("parameters", f"{e.parameters:,}  (weight {e.weight_shape}{bias})"),
        (
            "multiply-adds",
            f"{e.macs:,} = {_plural(e.macs // e.macs_per_element, per)} x {e.macs_per_element} "
            f"({_plural(e.weight_shape[1], 'channel')} per group x {_plural(math.prod(e.weight_shape[2:]), 'tap')})",
        ),
        ("receptive field", f"{e.receptive_field}  ({reach}, per dim)"),
        ("convnd runs it", f"{e.convnd_plan.strategy}: {e.convnd_plan.summary}"),
    ]
    for key, value in facts:
        lines += _wrap(value, width, f"{key:<17}", " " * 17)
    lines += [" " * 17 + step for step in e.convnd_plan.steps]
    t = e.torch_nn
    lines += ["", f"Stock torch.nn (torch {t.torch_version}) with the same layer and input:"]
    if t.layer is not None:
        lines.append(f"  {t.layer}")
        lines.append(f"  runs: output {t.output_shape}" if t.ran else f"  fails: {t.error}")
    lines += _wrap(t.reason, width, "  why: " if t.layer is not None else "  ", "       ")
    if e.other_ranks:
        lines += ["", "The same layer on torch's native kernels of other ranks (lowering.plan(spec, native_rank)):"]
        for recipe in e.other_ranks:
            lines += _wrap(f"{recipe.rank}-d {recipe.strategy}: {recipe.summary}", width, "  ", "      ")
            lines += [f"      {step}" for step in recipe.steps]
    return "\n".join(lines)


def _wrap(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False) or [first]


# --- the command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convnd explain SPEC --input SHAPE [--json]``."""
    parser.add_argument(
        "spec", metavar="SPEC", help="the layer as you write it, e.g. 'nn.Conv1d(4, 4, kernel_size=(1, 1))'"
    )
    parser.add_argument(
        "--input", required=True, metavar="SHAPE", help="input shape, e.g. 2,4,5,6 (batch, channels, *spatial)"
    )
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")


def run_cli(args: argparse.Namespace) -> int:
    """Print the explanation (or its JSON); errors reach the user as convnd's one-line messages."""
    result = explain(args.spec, args.input)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return 0
