"""The ``winograd`` lowering (F(2, 3) along the one lowered dim): exact in float64 against the reference,
within a few times direct summation's rounding in float32, in runs of tiles, with both backwards."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck

import convnd
from configs import FIRST_LOWERED, forced_exact, oracle, seeded, spec_of
from convnd import lowering, selection, winograd
from convnd.spec import make_spec

# (id, x shape, w shape, kwargs, max_memory)
CASES = [
    ("two output frames", (2, 3, 2, 3, 4, 3), (4, 3, 3, 2, 3, 2), {"padding": 1}, None),
    ("even output", (2, 3, 6, 3, 4, 3), (4, 3, 3, 2, 3, 2), {"padding": 1}, None),
    ("odd output: the last tile half used", (2, 3, 7, 3, 4, 3), (4, 3, 3, 2, 3, 2), {"padding": 1}, None),
    ("no padding", (1, 3, 8, 3, 3, 3), (2, 3, 3, 3, 3, 3), {}, None),
    ("padding past the kernel", (1, 2, 3, 3, 3, 3), (3, 2, 3, 1, 2, 1), {"padding": ((3, 4), 0, 1, 0)}, None),
    ("grouped", (1, 4, 5, 3, 3, 4), (6, 2, 3, 3, 1, 2), {"groups": 2, "padding": (1, 0, 1, 1)}, None),
    ("depthwise", (2, 4, 5, 4, 3, 3), (4, 1, 3, 3, 3, 3), {"groups": 4, "padding": 1}, None),
    ("inner stride and dilation",
     (1, 3, 6, 7, 6, 5), (2, 3, 3, 3, 2, 2), {"stride": (1, 2, 1, 2), "dilation": (1, 1, 2, 1)}, None),
    ("reflect", (2, 3, 5, 3, 4, 3), (4, 3, 3, 3, 3, 3), {"padding": 1, "padding_mode": "reflect"}, None),
    ("runs of one tile", (2, 3, 9, 3, 3, 3), (4, 3, 3, 3, 3, 3), {"padding": 1}, 1),
    ("runs of a few tiles", (1, 3, 14, 4, 4, 3), (4, 3, 3, 3, 3, 2), {"padding": (2, 1, 1, 0)}, 12_000),
]  # fmt: skip


@pytest.mark.parametrize(("case", "x_shape", "w_shape", "kw", "max_memory"), CASES, ids=[c[0] for c in CASES])
def test_winograd_is_exact_in_float64(case, x_shape, w_shape, kw, max_memory, monkeypatch):
    calls = forced_exact("winograd", x_shape, w_shape, kw, max_memory, monkeypatch, lambda *a: a[0].shape[0])
    out = spec_of(w_shape, kw).output_size(x_shape[2:])[0]
    m = winograd.tile(out)
    per_run = m + 2  # native calls: one per transformed frame
    runs = -(-out // m) if max_memory == 1 else 1 if max_memory is None else len(calls) // per_run
    assert len(calls) == per_run * runs
    if max_memory is not None:
        assert runs > 1


def test_the_cases_cover_every_tile_size():
    tiles = set()
    for _, x_shape, w_shape, kw, _ in CASES:
        tiles.add(winograd.tile(spec_of(w_shape, kw).output_size(x_shape[2:])[0]))
    assert tiles == set(winograd.POINTS)


@pytest.mark.parametrize("m", list(winograd.POINTS))
def test_the_transforms_compute_the_correlation_exactly(m):
    # A^T ((G g) * (B^T d)) == the correlation of d (m + 2 frames) with g (3 taps), in exact fractions
    input_transform, kernel_transform, output_transform = winograd.TRANSFORMS[m]
    gen = np.random.default_rng(m)
    for _ in range(20):
        d = [Fraction(int(v)) for v in gen.integers(-9, 10, m + 2)]
        g = [Fraction(int(v)) for v in gen.integers(-9, 10, 3)]
        u = [sum(b * x for b, x in zip(row, d)) for row in input_transform]
        v = [sum(c * t for c, t in zip(row, g)) for row in kernel_transform]
        y = [sum(a * p * q for a, p, q in zip(row, u, v)) for row in output_transform]
        assert y == [sum(g[k] * d[o + k] for k in range(3)) for o in range(m)]


@pytest.mark.parametrize(("frames", "m"), [(2, 2), (9, 3), (8, 4)], ids=["F(2, 3)", "F(3, 3)", "F(4, 3)"])
def test_winograd_in_float32_stays_within_a_few_times_direct_summations_error(frames, m):
    # each output is another sum of the same products: its rounding error is of the order of fold's
    assert winograd.tile(frames) == m
    x, w, b = seeded((2, 16, frames, 8, 8, 8), (16, 16, 3, 3, 3, 3), torch.float32, seed=1)
    exact = oracle(x.double(), w.double(), b.double(), {"padding": 1})
    errors = {}
    for name in ("winograd", "fold"):
        with convnd.strategy(name, native_axes=FIRST_LOWERED):
            errors[name] = np.abs(convnd.conv(x, w, b, padding=1).double().numpy() - exact).max()
    assert errors["winograd"] <= 4 * errors["fold"], errors
    assert errors["winograd"] <= 1e-4 * np.abs(exact).max(), errors


@pytest.mark.parametrize(
    ("case", "kw", "w_shape"),
    [
        ("stride", {"stride": (2, 1, 1, 1), "padding": 1}, (4, 3, 3, 3, 3, 3)),
        ("dilation", {"dilation": (2, 1, 1, 1), "padding": 1}, (4, 3, 3, 3, 3, 3)),
        ("kernel of 5", {"padding": 2}, (4, 3, 5, 3, 3, 3)),
        ("two lowered dims", {"padding": 1}, (4, 3, 3, 3, 3, 3, 3)),
        ("transposed", {"transposed": True, "padding": 1}, (3, 4, 3, 3, 3, 3)),
    ],
)
def test_winograd_runs_fold_where_f23_does_not_apply(case, kw, w_shape):
    kw = dict(kw)
    transposed = kw.pop("transposed", False)
    call = convnd.conv_transpose if transposed else convnd.conv
    x, w, b = seeded((1, 3, *(6,) * (len(w_shape) - 2)), w_shape)
    b = torch.randn(w.shape[1], dtype=torch.float64) if transposed else b
    axes = FIRST_LOWERED if len(w_shape) == 6 else (2, 3, 4)
    spec = make_spec(tuple(w.shape[2:]), kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                     transposed=transposed)  # fmt: skip
    how = lowering.Plan(3, "tapsum", axes, None)
    assert selection.cost("winograd", spec, how, tuple(x.shape), tuple(w.shape)) == float("inf")
    results = {}
    for name in ("winograd", "fold"):
        with convnd.strategy(name, native_axes=axes):
            results[name] = call(x, w, b, **kw)
    assert torch.equal(results["winograd"], results["fold"])


@pytest.mark.parametrize("budget", [None, 1], ids=["whole", "runs of one tile"])
@pytest.mark.parametrize("channels", [(3, 5), (5, 3)], ids=["products larger", "products smaller"])
def test_the_in_place_workspace_gives_the_recorded_paths_bits(channels, budget):
    # without a gradient a run's products overwrite its transformed frames in one workspace (descending where a
    # product is larger, ascending where smaller) and whole runs lay the frames out in the output's storage;
    # autograd through the lowering records separate buffers instead: the same products, summed the same way
    c_in, c_out = channels
    x, w, b = seeded((2, c_in, 7, 4, 5, 3), (c_out, c_in, 3, 3, 2, 3), torch.float32)
    with convnd.strategy("winograd", native_axes=FIRST_LOWERED, custom_backward=False, max_memory=budget):
        lean = convnd.conv(x, w, b, padding=1)
        recorded = convnd.conv(x.requires_grad_(), w, b, padding=1)
    assert recorded.requires_grad and torch.equal(lean, recorded.detach())


@pytest.mark.parametrize("custom", [True, False], ids=["custom backward", "autograd through"])
def test_winograd_gradients_pass_gradcheck(custom):
    x, w, b = (t.requires_grad_() for t in seeded((1, 3, 5, 2, 3, 2), (2, 3, 3, 2, 2, 2)))

    def f(x, w, b):
        with convnd.strategy("winograd", native_axes=FIRST_LOWERED, custom_backward=custom):
            return convnd.conv(x, w, b, padding=(1, 0, 1, 0))

    assert gradcheck(f, (x, w, b), fast_mode=True)


def test_the_model_prices_winograds_calls_and_passes():
    # the bench's 4d-wide shape: F(4, 3), six calls per tile of four frames, beats fold's three-tap call
    spec = make_spec((3, 3, 3, 3), padding=1)
    how = lowering.Plan(3, "tapsum", (1, 2, 3), None)
    shapes = ((1, 16, 8, 16, 16, 16), (16, 16, 3, 3, 3, 3))
    assert selection.cheapest(spec, how, *shapes) == "winograd"
    # 8 frames: F(4, 3)'s 12 products; 9: F(3, 3)'s 15 (F(4, 3) 18, measured level with F(2, 3)'s 20)
    assert (winograd.tile(8), winograd.tile(9), winograd.tile(2)) == (4, 3, 2)
    assert selection.winograd_pieces(spec, how, *shapes, 4) == 1  # within the default budget
    with convnd.strategy(max_memory=1 << 20):
        tight = lowering.plan(spec, input_shape=shapes[0], weight_shape=shapes[1])
    assert selection.winograd_pieces(spec, tight, *shapes, 4) == 2
    with convnd.strategy(max_memory=1 << 16):  # one tile's frames, workspace and native copies: about 2.6 MB
        tiny = lowering.plan(spec, input_shape=shapes[0], weight_shape=shapes[1])
    assert selection.chunked_cost("winograd", spec, tiny, *shapes) == float("inf")
    assert winograd.applies(spec.select((0, 1, 2, 3)), 3)


def test_explain_names_winograd():
    layer = convnd.ConvNd(16, 16, (3, 3, 3, 3), padding=1)
    text = str(convnd.explain(layer, (1, 16, 8, 16, 16, 16)))
    assert "Winograd's minimal filtering F(m, 3) along dim (0,)" in text


@pytest.mark.parametrize("frames", [2, 9, 8], ids=["F(2, 3)", "F(3, 3)", "F(4, 3)"])
def test_non_finite_inputs_are_never_lost(frames):
    # like band, fft and cuDNN's Winograd kernels, the transforms mix a non-finite input into neighbouring sums
    # (inf - inf): an output the definition makes NaN or inf stays non-finite, and every finite one agrees
    x, w, b = seeded((1, 2, frames, 4, 4, 4), (3, 2, 3, 3, 3, 3))
    n = x.numel()
    x.view(-1)[5], x.view(-1)[n // 2], x.view(-1)[n - 9] = float("nan"), float("inf"), -float("inf")
    with convnd.strategy("winograd", native_axes=FIRST_LOWERED):
        got = convnd.conv(x, w, b, padding=1).numpy()
    expected = oracle(x, w, b, {"padding": 1})
    assert np.isnan(expected).any() and np.isinf(expected).any()
    assert not np.isfinite(got[~np.isfinite(expected)]).any()
    finite = np.isfinite(expected) & np.isfinite(got)
    assert finite.any()
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_fold(dtype, monkeypatch):
    # the transforms would round their sums to the half dtype; a native convolution accumulates in float32
    x, w, b = (t.to(dtype) for t in seeded((1, 3, 6, 3, 4, 3), (4, 3, 3, 2, 3, 2)))
    monkeypatch.setattr(winograd, "_transformed", lambda *a: pytest.fail("F(m, 3) ran in half precision"))
    results = {}
    for name in ("winograd", "fold"):
        with convnd.strategy(name, native_axes=FIRST_LOWERED):
            results[name] = convnd.conv(x, w, b, padding=1)
    assert torch.equal(results["winograd"], results["fold"])


@given(data=st.data())
def test_winograd_matches_the_reference_on_random_configs(data):
    # a 3-wide kernel along the lowered dim with any padding pair; the native dims anything; runs of tiles or one
    lo, hi = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    frames = data.draw(st.integers(max(1, 3 - lo - hi), 13))
    kernel = (3, *(data.draw(st.integers(1, 3)) for _ in range(3)))
    groups = data.draw(st.sampled_from([1, 2]))
    kw = {
        "padding": ((lo, hi), *(data.draw(st.integers(0, 1)) for _ in range(3))),
        "stride": (1, *(data.draw(st.integers(1, 2)) for _ in range(3))),
        "groups": groups,
    }
    x, w, b = seeded((data.draw(st.integers(1, 2)), 2 * groups, frames, 3, 4, 3), (2 * groups, 2, *kernel),
                        seed=data.draw(st.integers(0, 99)))  # fmt: skip
    budget = data.draw(st.sampled_from([None, 1, 3000]))
    with convnd.strategy("winograd", native_axes=FIRST_LOWERED, max_memory=budget):
        y = convnd.conv(x, w, b, **kw)
    np.testing.assert_allclose(y.numpy(), oracle(x, w, b, kw), rtol=0, atol=1e-10)
