"""``convnd animate``: the kernel sliding over the input, drawn frame by frame (GIF, or a PNG contact sheet).

A convolution frame shows, for one output position, every input cell a kernel tap reads
(padding cells hatched, dilation gaps left unfilled inside the window's outline, the previous
window dashed so the stride step shows) and the output cell being written. A transposed
convolution is drawn the other way round: one input cell and the output cells it writes
(the cropped border of the full output hatched). 1-d layers are strips, 2-d grids, and 3-d and
up a row of 2-d slices (one per position of the leading dims).

The layer, the input check and the output size come from :func:`convnd.explanation.layer_and_input`
and :meth:`convnd.spec.ConvSpec.output_size`; matplotlib and pillow (``pip install 'convnd[viz]'``)
are imported only here.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConvndError, fail
from .explanation import layer_and_input
from .spec import ConvSpec

MAX_FRAMES = 36
MAX_CELLS = 96  # cells across or down a drawn panel, slices and gaps included
MAX_SHEET = 9  # frames on a PNG contact sheet
COLORS = {
    "input": "#c6dbef",
    "padding": "#f0f0f0",
    "tap": "#f28e2b",
    "tap_padding": "#fbd3a8",
    "window": "#7f2704",
    "previous": "#8c8c8c",
    "empty": "#ffffff",
    "written": "#c7e9c0",
    "current": "#238b45",
    "edge": "#9e9e9e",
}


@dataclass(frozen=True)
class Grid:
    """Where each cell of an N-d grid is drawn.

    1-d: a strip. 2-d: a grid. 3-d and up: 2-d slices of the last two dims, side by side along
    dim -3, one row of slices per position of the dims before that.

    Attributes:
        size: cells per dim.
        low: index of the first real (non-padding) cell per dim; cells outside ``[low, low + real)`` are padding.
        real: real cells per dim.
    """

    size: tuple[int, ...]
    low: tuple[int, ...]
    real: tuple[int, ...]

    @property
    def plane(self) -> tuple[int, int]:
        """(rows, cols) of one 2-d slice; a 1-d grid is one row."""
        return (1, self.size[0]) if len(self.size) == 1 else (self.size[-2], self.size[-1])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows of slices, slices per row)."""
        return math.prod(self.size[:-3]), (self.size[-3] if len(self.size) >= 3 else 1)

    @property
    def band(self) -> float:
        """Height of one row of slices in cells, with room for slice labels and column indices."""
        return self.plane[0] + 2.0

    @property
    def width(self) -> int:
        """Drawn width in cells: the slices and one empty column between them."""
        return self.shape[1] * (self.plane[1] + 1) - 1

    @property
    def height(self) -> float:
        return (self.shape[0] - 1) * self.band + self.plane[0]

    def leads(self) -> list[tuple[int, ...]]:
        """The slices: one index per leading dim (empty for 1-d and 2-d)."""
        return list(itertools.product(*(range(n) for n in self.size[:-2])))

    def cells(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*(range(n) for n in self.size)))

    def xy(self, cell: Sequence[int]) -> tuple[float, float]:
        """Centre of ``cell``: columns to the right, rows downwards, row 0 of slice row 0 on top."""
        rows, cols = self.plane
        if len(cell) == 1:
            return cell[0], 0
        down = 0
        for index, n in zip(cell[:-3], self.size[:-3]):
            down = down * n + index
        across = cell[-3] if len(cell) >= 3 else 0
        return across * (cols + 1) + cell[-1], (self.shape[0] - 1 - down) * self.band + rows - 1 - cell[-2]

    def is_padding(self, cell: Sequence[int]) -> bool:
        return any(not lo <= c < lo + n for c, lo, n in zip(cell, self.low, self.real))

    def slice_label(self, lead: Sequence[int]) -> str:
        """A slice's leading indices in the real grid's coordinates (padding negative)."""
        return "[" + ", ".join(str(i - lo) for i, lo in zip(lead, self.low)) + "]"


@dataclass(frozen=True)
class Frame:
    """One step: the cell that drives it (output cell, or input cell when transposed) and the cells it pairs with."""

    driver: tuple[int, ...]
    taps: tuple[tuple[int, ...], ...]
    window: tuple[tuple[int, int], ...]  # first and last cell of the dilated window, per dim


def frames_for(spec: ConvSpec, spatial: tuple[int, ...]) -> tuple[Grid, Grid, list[Frame]]:
    """The two grids (the one the kernel slides over, the one it writes) and one frame per position.

    Convolution: the input grid includes padding, output position o reads padded cells
    ``o*stride + t*dilation`` for each kernel tap t. Transposed: input cell i writes cells
    ``i*stride + t*dilation`` of the full output, whose first ``low`` and last ``high`` (minus
    output_padding) cells are cropped.
    """
    source, target = grids_for(spec, spatial)
    out = spec.output_size(spatial)
    positions = itertools.product(*(range(n) for n in (spatial if spec.transposed else out)))
    taps = list(itertools.product(*(range(k) for k in spec.kernel)))
    frames = []
    for p in positions:
        cells = tuple(tuple(i * s + t * d for i, s, t, d in zip(p, spec.stride, tap, spec.dilation)) for tap in taps)
        window = tuple((i * s, i * s + w - 1) for i, s, w in zip(p, spec.stride, spec.window))
        frames.append(Frame(p, cells, window))
    return source, target, frames


def grids_for(spec: ConvSpec, spatial: tuple[int, ...]) -> tuple[Grid, Grid]:
    """The grid the kernel slides over and the one it writes (cheap: no positions listed)."""
    out = spec.output_size(spatial)
    lows = tuple(lo for lo, _ in spec.padding)
    if spec.transposed:
        full = tuple(o + lo + hi for o, (lo, hi) in zip(out, spec.padding))
        return Grid(spatial, (0,) * spec.dims, spatial), Grid(full, lows, out)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, spec.padding))
    return Grid(padded, lows, spatial), Grid(out, (0,) * spec.dims, out)


def pick(count: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` frames: consecutive from the start (so stride steps show), then the last."""
    if count <= limit:
        return list(range(count))
    return [*range(limit - 1), count - 1]


def require_viz() -> tuple[Any, Any]:
    """matplotlib (Agg backend) and PIL.Image, or convnd's error saying how to install them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from PIL import Image
    except ImportError as error:
        fail(
            "convnd animate",
            str(error),
            "run where matplotlib and pillow are installed: pip install 'convnd[viz]'",
            kind="type",
        )
    return plt, Image


def viz_available() -> bool:
    """Whether the ``viz`` extra (matplotlib and pillow) is installed, so :func:`animate` can draw."""
    try:
        require_viz()
    except ConvndError:
        return False
    return True


def render_frames(layer: Any, input_shape: Any, *, max_frames: int = MAX_FRAMES) -> list[Any]:
    """Draw the animation's frames as PIL images.

    Args:
        layer: the layer as text (parsed, never run) or a convnd / torch.nn convolution module.
        input_shape: (B, C, *spatial) or (C, *spatial), a sequence or text like ``"1,1,7,7"``.
        max_frames: the most frames to draw; big inputs show the first positions and the last.
    """
    plt, _ = require_viz()
    checked = layer_and_input(layer, input_shape)
    text, module, shape, spec = checked.text, checked.module, checked.shape, checked.module.spec
    spatial = checked.layout.spatial_size(shape)
    # the size check first: listing every position of an input too big to draw took seconds before refusing it
    for name, grid in zip(("input", "output"), grids_for(spec, spatial)):
        if grid.width > MAX_CELLS or grid.height > MAX_CELLS:
            fail(
                "--input",
                shape,
                f"small enough to draw: at most {MAX_CELLS} cells across and down",
                reason=f"the {name} needs {grid.width} x {grid.height:g}; a smaller input shows the same sliding",
            )
    source, target, frames = frames_for(spec, spatial)
    shown = pick(len(frames), max(2, max_frames))
    canvas = _Canvas(plt, spec, source, target, f"{text}  on input {shape}", module.in_channels)
    images = []
    for index in shown:
        previous = frames[index - 1] if index > 0 else None
        images.append(canvas.draw(frames[index], previous, frames[:index], f"position {index + 1}/{len(frames)}"))
    plt.close(canvas.figure)
    return images


def animate(layer: Any, input_shape: Any, output: str | Path, *, max_frames: int = MAX_FRAMES) -> Path:
    """Write the animation: a GIF, or a PNG contact sheet of up to :data:`MAX_SHEET` frames.

    Args:
        layer: the layer as text or a convolution module (see :func:`render_frames`).
        input_shape: the input's shape.
        output: a ``.gif`` or ``.png`` path; its folder is made if it does not exist.
        max_frames: the most frames in a GIF.

    Example:
        >>> animate("nn.Conv2d(1, 1, 3, stride=2, padding=1)", (1, 1, 5, 5), "conv.gif")  # doctest: +SKIP
    """
    path = Path(output)
    if path.suffix.lower() not in (".gif", ".png"):
        fail("--output", str(output), "a file name ending in .gif (animation) or .png (contact sheet)")
    if path.suffix.lower() == ".png":
        images = render_frames(layer, input_shape, max_frames=MAX_SHEET)
        path.parent.mkdir(parents=True, exist_ok=True)  # drawn first: a refused layer leaves no folder behind
        _contact_sheet(images).save(path, optimize=True)
        return path
    images = render_frames(layer, input_shape, max_frames=max_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one shared palette keeps colours steady from frame to frame and the file small
    palette = images[0].quantize(colors=64)
    frames = [im.quantize(palette=palette, dither=0) for im in images]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=700, loop=0, optimize=True)
    return path


def _contact_sheet(images: list[Any]) -> Any:
    """Tile frames left to right, top to bottom, at most three per row."""
    from PIL import Image

    cols = min(3, len(images))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for index, im in enumerate(images):
        sheet.paste(im, ((index % cols) * w, (index // cols) * h))
    return sheet


class _Canvas:
    """One matplotlib figure, redrawn per frame: the input panel and the output panel, laid out in inches.

    2-d grids sit side by side; strips and rows of slices are stacked, input on top.
    """

    HEADER, TITLE, LEGEND, MARGIN = 1.0, 0.35, 0.75, 0.3  # inches

    def __init__(self, plt: Any, spec: ConvSpec, source: Grid, target: Grid, title: str, channels: int) -> None:
        from matplotlib.patches import Patch, Rectangle

        self.rectangle, self.spec = Rectangle, spec
        self.source, self.target = source, target
        side_by_side = spec.dims == 2
        across = source.width + target.width + 4 if side_by_side else max(source.width, target.width) + 2
        tall = max(source.height, target.height) + 3 if side_by_side else source.height + target.height + 6
        self.cell = min(0.42, 9.0 / across, 7.0 / tall)  # inches per cell: big for small grids, ~900 px at most
        boxes = [self._extent(grid) for grid in (source, target)]
        if side_by_side:
            width = sum(w for w, _ in boxes) + 3 * self.MARGIN
            height = max(h for _, h in boxes) + self.TITLE
        else:
            width = max(w for w, _ in boxes) + 2 * self.MARGIN
            height = sum(h for _, h in boxes) + 2 * self.TITLE
        width, height = max(width, 7.4), height + self.HEADER + self.LEGEND
        self.width = width
        self.figure = plt.figure(figsize=(width, height), dpi=100)
        self.figure.suptitle(title, fontsize=11, fontweight="bold", y=1 - 0.15 / height, va="top")
        self.caption = self.figure.text(
            0.5, 1 - 0.62 / height, "", ha="center", va="top", fontsize=10, family="monospace"
        )
        if side_by_side:
            x0 = (width - sum(w for w, _ in boxes) - self.MARGIN) / 2
            tallest = max(h for _, h in boxes)  # centre the shorter panel vertically
            corners = [(x0, self.LEGEND + (tallest - boxes[0][1]) / 2)]
            corners.append((x0 + boxes[0][0] + self.MARGIN, self.LEGEND + (tallest - boxes[1][1]) / 2))
        else:
            corners = [((width - boxes[0][0]) / 2, self.LEGEND + boxes[1][1] + self.TITLE)]
            corners.append(((width - boxes[1][0]) / 2, self.LEGEND))
        names = ("input", "full output: cropped border hatched") if spec.transposed else ("input", "output")
        self.src_ax, self.dst_ax = (
            self._axes(grid, corner, box, f"{name} {grid.real}", (width, height))
            for grid, corner, box, name in zip((source, target), corners, boxes, names)
        )
        padding = "cropped by padding" if spec.transposed else "padding"
        handles = [
            Patch(facecolor=COLORS["input"], edgecolor=COLORS["edge"], label=f"input (each cell: {channels} ch)"),
            Patch(facecolor=COLORS["padding"], edgecolor=COLORS["edge"], hatch="///", label=padding),
            Patch(
                facecolor=COLORS["tap"],
                edgecolor=COLORS["edge"],
                label="kernel taps" + (" write" if spec.transposed else ""),
            ),
            Patch(facecolor="none", edgecolor=COLORS["window"], linewidth=2, label="dilated window"),
            Patch(facecolor="none", edgecolor=COLORS["previous"], linestyle="--", lw=1.5, label="previous window"),
            Patch(facecolor=COLORS["written"], edgecolor=COLORS["edge"], label="written"),
            Patch(
                facecolor=COLORS["current"],
                edgecolor=COLORS["edge"],
                label="being spread" if spec.transposed else "being written",
            ),
        ]
        kernel, driver = (self.dst_ax, self.src_ax) if spec.transposed else (self.src_ax, self.dst_ax)
        self.patches = {
            "kernel": self._cells(kernel, target if spec.transposed else source),
            "driver": self._cells(driver, source if spec.transposed else target),
        }
        self.figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
        self.artists: list[Any] = []

    def _limits(self, grid: Grid) -> tuple[tuple[float, float], tuple[float, float]]:
        """Data limits of a panel: the cells, index labels on the left and top, slice labels below."""
        return (-1.6, grid.width + 0.2), (-1.2 if len(grid.size) > 2 else -0.6, grid.height + 0.4)

    def _extent(self, grid: Grid) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self._limits(grid)
        return (x1 - x0) * self.cell, (y1 - y0) * self.cell

    def _axes(self, grid: Grid, corner: tuple[float, float], box: tuple[float, float], label: str, size: Any) -> Any:
        ax = self.figure.add_axes((corner[0] / size[0], corner[1] / size[1], box[0] / size[0], box[1] / size[1]))
        xlim, ylim = self._limits(grid)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.axis("off")
        if len(grid.size) > 2:
            label += f": slices [{', '.join(f'i{a}' for a in range(len(grid.size) - 2))}, :, :]"
        ax.set_title(label, fontsize=10)
        rows, cols = grid.plane
        font = 8 if self.cell >= 0.25 else 6
        for lead in grid.leads():
            x, top = grid.xy((*lead, 0, 0)[-len(grid.size) :])
            if len(grid.size) > 2:
                ax.text(
                    x + cols / 2 - 0.5, top - rows - 0.1, grid.slice_label(lead), ha="center", va="top", fontsize=font
                )
            for c in range(cols):  # indices in the real grid's coordinates: padding is negative or past the end
                ax.text(x + c, top + 0.65, str(c - grid.low[-1]), ha="center", va="bottom", fontsize=font, color="0.35")
            if len(grid.size) > 1 and x == 0:
                for r in range(rows):
                    ax.text(-0.75, top - r, str(r - grid.low[-2]), ha="right", va="center", fontsize=font, color="0.35")
        return ax

    def draw(self, frame: Frame, previous: Frame | None, done: list[Frame], label: str) -> Any:
        """One frame as a PIL image: cells recoloured, window outlines and caption redrawn."""
        from PIL import Image

        for artist in self.artists:
            artist.remove()
        self.artists = []
        transposed = self.spec.transposed
        taps = set(frame.taps)
        # a written output cell: an earlier output position, or (transposed) one an earlier input cell reached
        written = {cell for f in done for cell in f.taps} if transposed else {f.driver for f in done}
        for cell, (patch, pad) in self.patches["kernel"].items():
            if cell in taps:
                color = COLORS["tap_padding"] if pad else COLORS["tap"]
            elif transposed and cell in written:
                color = COLORS["written"]
            else:
                color = COLORS["padding"] if pad else COLORS["empty" if transposed else "input"]
            patch.set_facecolor(color)
        for cell, (patch, _) in self.patches["driver"].items():
            if cell == frame.driver:
                color = COLORS["current"]
            elif not transposed and cell in written:
                color = COLORS["written"]
            else:
                color = COLORS["input" if transposed else "empty"]
            patch.set_facecolor(color)
        if previous is not None:
            self._outline(previous, COLORS["previous"], "--", 1.5)
        self._outline(frame, COLORS["window"], "-", 2.5)
        caption = self._caption(frame, previous, label)
        # monospace glyphs are about 0.6 em wide: shrink long captions to fit the figure
        self.caption.set_text(caption)
        self.caption.set_fontsize(min(10.0, (self.width - 0.3) * 72 / (0.6 * len(caption))))
        self.figure.canvas.draw()
        return Image.fromarray(np.asarray(self.figure.canvas.buffer_rgba())).convert("RGB")

    def _cells(self, ax: Any, grid: Grid) -> dict[tuple[int, ...], tuple[Any, bool]]:
        """One square per cell, drawn once and recoloured per frame; padding cells hatched."""
        patches = {}
        for cell in grid.cells():
            x, y = grid.xy(cell)
            pad = grid.is_padding(cell)
            patch = self.rectangle(
                (x - 0.5, y - 0.5),
                1,
                1,
                facecolor="white",
                edgecolor=COLORS["edge"],
                hatch="///" if pad else None,
                lw=0.8,
            )
            patches[cell] = (ax.add_patch(patch), pad)
        return patches

    def _outline(self, frame: Frame, color: str, style: str, lw: float) -> None:
        """The window's bounding box on every slice a tap reads (slices skipped by dilation stay bare)."""
        grid, ax = (self.target, self.dst_ax) if self.spec.transposed else (self.source, self.src_ax)
        first, last = tuple(lo for lo, _ in frame.window), tuple(hi for _, hi in frame.window)
        for lead in sorted({tap[:-2] for tap in frame.taps}):
            (x0, y1), (x1, y0) = grid.xy((*lead, *first[len(lead) :])), grid.xy((*lead, *last[len(lead) :]))
            box = self.rectangle(
                (x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor=color, linestyle=style, lw=lw
            )
            self.artists.append(ax.add_patch(box))

    def _caption(self, frame: Frame, previous: Frame | None, label: str) -> str:
        """Which cell, which cells it pairs with (in the real input's coordinates), and the stride step."""
        spec = self.spec
        grid = self.target if spec.transposed else self.source
        spans = []
        for axis, (lo, hi) in enumerate(frame.window):
            first = lo - grid.low[axis]
            spans.append(
                f"{first}:{first + (hi - lo) + 1}" + (f":{spec.dilation[axis]}" if spec.dilation[axis] > 1 else "")
            )
        pos = ", ".join(map(str, frame.driver))
        if spec.transposed:
            text = f"in[{pos}] spreads into full_out[{', '.join(spans)}]"
        else:
            text = f"out[{pos}] = sum(w * in[{', '.join(spans)}])"
        if previous is not None:
            text += f"   step {tuple(a[0] - b[0] for a, b in zip(frame.window, previous.window))}"
        return f"{label}:  {text}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convnd animate SPEC --input SHAPE --output FILE.gif|FILE.png [--max-frames N]``."""
    parser.add_argument("spec", metavar="SPEC", help="the layer as you write it, e.g. 'nn.Conv2d(1, 1, 3, stride=2)'")
    parser.add_argument("--input", required=True, metavar="SHAPE", help="input shape, e.g. 1,1,7,7")
    parser.add_argument(
        "--output", required=True, metavar="FILE", help="FILE.gif (animation) or FILE.png (contact sheet)"
    )
    parser.add_argument(
        "--max-frames", type=int, default=MAX_FRAMES, help=f"most frames in a GIF (default {MAX_FRAMES})"
    )


def run_cli(args: argparse.Namespace) -> int:
    """Write the file and say where."""
    path = animate(args.spec, args.input, args.output, max_frames=args.max_frames)
    print(f"wrote {path}")
    return 0
