"""``convnd.animate``: frames that follow the convolution's geometry, written as a readable GIF or PNG."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

import convnd
from convnd.animation import MAX_SHEET, frames_for, pick, render_frames, require_viz
from convnd.errors import ConvndError
from convnd.layer_text import parse_layer


@pytest.mark.parametrize(
    ("spec", "spatial"),
    [
        ("Conv1d(1, 1, 3, stride=2, padding=2, dilation=2)", (9,)),
        ("Conv2d(1, 1, (2, 3), stride=(1, 2), padding=((1, 0), (2, 1)))", (4, 5)),
        ("Conv3d(1, 1, 2, stride=(1, 2, 2), padding=(1, 0, 0), dilation=(2, 1, 1))", (3, 4, 5)),
        ("ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1)", (3, 2)),
    ],
)
def test_frames_follow_the_spec(spec, spatial):
    conv = parse_layer(spec).build().spec
    source, target, frames = frames_for(conv, spatial)
    out = conv.output_size(spatial)
    drivers = spatial if conv.transposed else out
    assert [f.driver for f in frames] == sorted(f.driver for f in frames)
    assert len(frames) == np.prod(drivers)
    assert (target if conv.transposed else source).real == (out if conv.transposed else spatial)
    kernel_grid = target if conv.transposed else source
    for frame in frames:
        assert len(set(frame.taps)) == np.prod(conv.kernel)
        # every tap lies on the drawn grid, inside its window, on the dilation lattice
        for tap in frame.taps:
            assert all(0 <= c < n for c, n in zip(tap, kernel_grid.size))
            assert all(lo <= c <= hi and (c - lo) % d == 0 for c, (lo, hi), d in zip(tap, frame.window, conv.dilation))
    if not conv.transposed:
        # consecutive output positions move the window by the stride along the last dim
        assert frames[1].window[-1][0] - frames[0].window[-1][0] == conv.stride[-1]
        # the padded grid is the input plus padding, and padding cells are exactly those outside the input
        padding = [c for c in source.cells() if source.is_padding(c)]
        assert len(padding) == np.prod(source.size) - np.prod(spatial)


def test_pick_keeps_consecutive_frames_then_the_last():
    assert pick(5, 10) == [0, 1, 2, 3, 4]
    assert pick(100, 6) == [0, 1, 2, 3, 4, 99]


def test_gif_has_several_different_frames_at_a_readable_size(tmp_path):
    path = convnd.animate("nn.Conv2d(1, 1, 3, stride=2, padding=1, dilation=2)", "1,1,5,5", tmp_path / "conv.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 4  # a 2 x 2 output
        assert gif.size[0] >= 600 and gif.size[1] >= 400
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    assert path.stat().st_size < 1_000_000


def test_big_inputs_are_capped_and_drawn_as_rows_of_slices():
    images = render_frames("ConvNd(1, 1, (2, 2, 2, 2), stride=2)", (1, 1, 4, 4, 4, 4), max_frames=3)
    assert len(images) == 3  # of 16 output positions
    assert images[0].size[0] >= 600
    # colours of the drawing: input cells, kernel taps and the output cell being written all appear
    pixels = {tuple(p) for p in np.asarray(images[0]).reshape(-1, 3)}
    for colour in ("#c6dbef", "#f28e2b", "#238b45"):
        assert tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) in pixels


def test_png_is_a_contact_sheet(tmp_path):
    path = convnd.animate("Conv1d(1, 1, 3, padding=1)", (1, 1, 12), tmp_path / "sheet.png")
    frame = render_frames("Conv1d(1, 1, 3, padding=1)", (1, 1, 12), max_frames=1)[0]
    with Image.open(path) as sheet:
        assert sheet.size == (3 * frame.size[0], MAX_SHEET // 3 * frame.size[1])


@pytest.mark.parametrize(
    ("spec", "shape", "output", "message"),
    [
        ("Conv2d(1, 1, 3)", (1, 1, 5, 5), "x.mp4", "--output must be a file name ending in .gif"),
        ("Conv2d(1, 1, 3)", (1, 1, 5, 200), "x.gif", "--input must be small enough to draw"),
        ("Conv2d(1, 1, 3)", (1, 2, 5, 5), "x.gif", "input must be a tensor with 1 channel in dim 1"),
    ],
)
def test_refusals(spec, shape, output, message, tmp_path):
    with pytest.raises(ConvndError, match=message):
        convnd.animate(spec, shape, tmp_path / output)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["conv.gif", "sheet.png"])
def test_the_output_folder_is_made_once_the_layer_is_drawn(name, tmp_path):
    path = convnd.animate("Conv1d(1, 1, 3, padding=1)", (1, 1, 6), tmp_path / "new" / "deeper" / name)
    assert path == tmp_path / "new" / "deeper" / name and path.stat().st_size > 0
    with pytest.raises(ConvndError, match="--input must be small enough to draw"):
        convnd.animate("Conv2d(1, 1, 3)", (1, 1, 5, 200), tmp_path / "refused" / name)
    assert not (tmp_path / "refused").exists()


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConvndError, match=r"pip install 'convnd\[viz\]'"):
        require_viz()
