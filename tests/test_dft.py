"""The ``dft`` lowering (a DFT along the one lowered dim, one grouped native call over its frequencies): exact in
float64 against the reference, of a direct sum's order in float32, in runs of frequencies, with both backwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck

import convnd
from configs import FIRST_LOWERED, forced_exact, oracle, seeded, spec_of
from convnd import dft, lowering, selection
from convnd.spec import make_spec

# (id, x shape, w shape, kwargs, max_memory)
CASES = [
    ("7-wide kernel, same padding", (1, 2, 6, 3, 4, 3), (3, 2, 7, 3, 2, 3), {"padding": 3}, None),
    ("even padded length", (2, 3, 5, 3, 3, 3), (4, 3, 3, 2, 3, 2), {"padding": (2, 1, 1, 0)}, None),
    ("odd padded length: one frame more", (2, 3, 6, 3, 3, 3), (4, 3, 3, 2, 3, 2), {"padding": (1, 0, 1, 0)}, None),
    ("no padding", (1, 3, 8, 3, 3, 3), (2, 3, 5, 3, 3, 3), {}, None),
    ("asymmetric, past the kernel", (1, 2, 3, 3, 3, 3), (3, 2, 3, 1, 2, 1), {"padding": ((4, 1), 0, 1, 0)}, None),
    ("a kernel of one tap", (1, 2, 5, 3, 3, 3), (3, 2, 1, 3, 2, 3), {"padding": (0, 1, 1, 1)}, None),
    ("dilated", (1, 3, 9, 3, 4, 3), (2, 3, 3, 3, 2, 2), {"dilation": (3, 1, 1, 1), "padding": (2, 1, 0, 1)}, None),
    ("grouped", (1, 4, 5, 3, 3, 4), (6, 2, 4, 3, 1, 2), {"groups": 2, "padding": (1, 0, 1, 1)}, None),
    ("depthwise", (2, 4, 5, 4, 3, 3), (4, 1, 5, 3, 3, 3), {"groups": 4, "padding": 2}, None),
    ("inner stride and dilation",
     (1, 3, 6, 7, 6, 5), (2, 3, 4, 3, 2, 2), {"stride": (1, 2, 1, 2), "dilation": (1, 1, 2, 1)}, None),
    ("same, even kernel", (2, 3, 6, 3, 4, 3), (4, 3, 4, 2, 3, 2), {"padding": "same"}, None),
    ("reflect", (2, 3, 5, 3, 4, 3), (4, 3, 3, 3, 3, 3), {"padding": 1, "padding_mode": "reflect"}, None),
    ("circular", (1, 3, 6, 3, 4, 3), (4, 3, 5, 3, 3, 3), {"padding": 2, "padding_mode": "circular"}, None),
    ("runs of one frequency group", (2, 3, 9, 3, 3, 3), (4, 3, 5, 3, 3, 3), {"padding": 2}, 1),
    ("runs of a few groups", (1, 3, 14, 4, 4, 3), (4, 3, 7, 3, 3, 2), {"padding": (3, 1, 1, 0)}, 100_000),
]  # fmt: skip


@pytest.mark.parametrize(("case", "x_shape", "w_shape", "kw", "max_memory"), CASES, ids=[c[0] for c in CASES])
def test_dft_is_exact_in_float64(case, x_shape, w_shape, kw, max_memory, monkeypatch):
    # None: room for every frequency in one call (the default budget may split even small ones)
    calls = forced_exact("dft", x_shape, w_shape, kw, max_memory or 1 << 30, monkeypatch, lambda *a: a[3].groups)
    spec = spec_of(w_shape, kw)
    low, high = (0, 0) if spec.padding_mode != "zeros" else spec.padding[0]
    size = x_shape[2] + (sum(spec.padding[0]) if spec.padding_mode != "zeros" else 0)
    groups = dft.groups(size, low, high)
    # every frequency group is a group of the native calls: all in one call, or one call per run
    assert sum(calls) == groups * spec.groups
    if max_memory is None:
        assert len(calls) == 1
    else:  # one call per run: a run per group for the smallest budget
        assert len(calls) == groups if max_memory == 1 else 1 < len(calls) < groups


TRANSFORM_CASES = [(6, 3, 3, 7, 1), (5, 1, 0, 3, 2), (4, 0, 1, 1, 1), (3, 4, 1, 3, 1)]


@pytest.mark.parametrize(("size", "low", "high", "kernel", "dilation"), TRANSFORM_CASES)
def test_the_transforms_compute_the_correlation(size, low, high, kernel, dilation):
    # output^T ((kernel w) * (input x)), per group a 2 x 2 block times a pair, is the correlation of x (zero padded
    # by (low, high)) with the dilated w: the real DFT of an even length, checked in float64 on random frames
    rows_in, rows_w, rows_out = (np.array(t) for t in dft.transforms(size, low, high, kernel, dilation))
    groups = dft.groups(size, low, high)
    out = size + low + high - dilation * (kernel - 1)
    assert dft.length(size, low, high) == 2 * groups >= size + low + high
    gen = np.random.default_rng(size)
    for _ in range(10):
        x, w = gen.standard_normal(size), gen.standard_normal(kernel)
        u = rows_in.reshape(groups, 2, size) @ x  # (G, 2)
        blocks = rows_w.reshape(groups, 2, 2, kernel) @ w  # (G, 2, 2)
        products = np.einsum("gpq,gq->gp", blocks, u)
        y = rows_out.reshape(out, groups * 2) @ products.reshape(-1)
        padded = np.concatenate([np.zeros(low), x, np.zeros(high)])
        expected = [sum(w[t] * padded[o + t * dilation] for t in range(kernel)) for o in range(out)]
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    # every coefficient of the forward transforms is at most 1 in magnitude (the roots of unity)
    assert np.abs(rows_in).max() <= 1 and np.abs(rows_w).max() <= 1


@pytest.mark.parametrize(("frames", "kernel"), [(12, 7), (9, 3), (16, 5)])
def test_dft_in_float32_stays_within_a_few_times_direct_summations_error(frames, kernel):
    # each output is another sum of the same products, over L frequencies: its rounding error is of fold's order
    x, w, b = seeded((2, 8, frames, 8, 8, 8), (8, 8, kernel, 3, 3, 3), torch.float32, seed=1)
    kw = {"padding": (kernel // 2, 1, 1, 1)}
    exact = oracle(x.double(), w.double(), b.double(), kw)
    errors = {}
    for name in ("dft", "fold"):
        with convnd.strategy(name, native_axes=FIRST_LOWERED):
            errors[name] = np.abs(convnd.conv(x, w, b, **kw).double().numpy() - exact).max()
    assert errors["dft"] <= 4 * errors["fold"], errors
    assert errors["dft"] <= 1e-5 * np.abs(exact).max(), errors


@pytest.mark.parametrize(
    ("case", "kw", "w_shape", "dtype"),
    [
        ("stride", {"stride": (2, 1, 1, 1), "padding": 1}, (4, 3, 3, 3, 3, 3), torch.float64),
        ("two lowered dims", {"padding": 1}, (4, 3, 3, 3, 3, 3, 3), torch.float64),
        ("transposed", {"transposed": True, "padding": 1}, (3, 4, 3, 3, 3, 3), torch.float64),
        ("complex", {"padding": 1}, (4, 3, 3, 3, 3, 3), torch.complex128),
        ("half precision", {"padding": 1}, (4, 3, 3, 3, 3, 3), torch.bfloat16),
    ],
)
def test_dft_runs_fold_where_it_does_not_apply(case, kw, w_shape, dtype, monkeypatch):
    kw = dict(kw)
    transposed = kw.pop("transposed", False)
    call = convnd.conv_transpose if transposed else convnd.conv
    x, w, b = (t.to(dtype) for t in seeded((1, 3, *(6,) * (len(w_shape) - 2)), w_shape))
    b = torch.randn(w.shape[1], dtype=torch.float64).to(dtype) if transposed else b
    axes = FIRST_LOWERED if len(w_shape) == 6 else (2, 3, 4)
    spec = make_spec(tuple(w.shape[2:]), kw.get("stride", 1), kw.get("padding", 0), transposed=transposed)
    how = lowering.Plan(3, "tapsum", axes, None)
    if dtype in dft.DTYPES:
        assert selection.cost("dft", spec, how, tuple(x.shape), tuple(w.shape)) == float("inf")
    assert not selection.runs_as_itself("dft", spec, how, tuple(x.shape), tuple(w.shape), dtype)
    monkeypatch.setattr(dft, "transforms", lambda *a: pytest.fail("the DFT ran"))
    results = {}
    for name in ("dft", "fold"):
        with convnd.strategy(name, native_axes=axes):
            results[name] = call(x, w, b, **kw)
    assert torch.equal(results["dft"], results["fold"])


@pytest.mark.parametrize("custom", [True, False], ids=["custom backward", "autograd through"])
@pytest.mark.parametrize("max_memory", [None, 1], ids=["whole", "runs of one group"])
def test_dft_gradients_pass_gradcheck(custom, max_memory):
    x, w, b = (t.requires_grad_() for t in seeded((1, 3, 5, 2, 3, 2), (2, 3, 4, 2, 2, 2)))

    def f(x, w, b):
        with convnd.strategy("dft", native_axes=FIRST_LOWERED, custom_backward=custom, max_memory=max_memory):
            return convnd.conv(x, w, b, padding=(2, 0, 1, 0))

    assert gradcheck(f, (x, w, b), fast_mode=True)


def test_the_model_picks_dft_for_wide_kernels_and_keeps_its_runs_within_the_budget():
    # the bench's large-kernel workload: 18 frequencies' products (2 L = 36 frame products) against 84 for a
    # direct sum; a 3-wide kernel's direct sum (or Winograd's F(m, 3)) is cheaper
    wide, narrow = make_spec((7, 7, 7, 7), padding=3), make_spec((3, 3, 3, 3), padding=1)
    how = lowering.Plan(3, "tapsum", (1, 2, 3), None)
    shapes = ((1, 4, 12, 12, 16, 16), (4, 4, 7, 7, 7, 7))
    assert selection.cheapest(wide, how, *shapes) == "dft"
    assert selection.cheapest(narrow, how, (1, 16, 8, 16, 16, 16), (16, 16, 3, 3, 3, 3)) != "dft"
    assert dft.groups(12, 3, 3) == 9
    runs = selection.dft_pieces(wide, how, *shapes, 4)
    assert 1 < runs <= 9  # the default budget (1.25x input + output) splits the spectrum
    g = selection._geometry(wide, how, *shapes)
    budget = 1.25 * (g["in"] + g["out"])
    assert selection.workspace("dft", wide, how, *shapes) / runs <= budget * 1.5
    with convnd.strategy(max_memory=1 << 30):
        roomy = lowering.plan(wide, input_shape=shapes[0], weight_shape=shapes[1])
    assert selection.dft_pieces(wide, roomy, *shapes, 4) == 1


@pytest.mark.parametrize("custom", [True, False], ids=["custom backward", "autograd through"])
def test_a_first_call_in_inference_mode_leaves_later_gradients_working(custom):
    # the transforms are cached as tensors: one made under inference_mode could not be saved for a backward
    x, w, b = seeded((1, 2, 6, 3, 3, 3), (3, 2, 5, 3, 3, 3), seed=3)
    kw = {"padding": (3, 1, 0, 1)}  # a shape no other test caches first
    with torch.inference_mode(), convnd.strategy("dft", native_axes=FIRST_LOWERED):
        y = convnd.conv(x, w, b, **kw)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    with convnd.strategy("dft", native_axes=FIRST_LOWERED, custom_backward=custom):
        z = convnd.conv(*leaves, **kw)
    z.square().sum().backward()
    assert torch.equal(y, z.detach()) and all(t.grad is not None for t in leaves)


def test_explain_names_the_dft():
    layer = convnd.ConvNd(4, 4, (7, 7, 7, 7), padding=3)
    text = str(convnd.explain(layer, (1, 4, 12, 12, 16, 16)))
    assert "dft:" in text and "a DFT along dim (0,)" in text


def test_non_finite_inputs_are_never_lost():
    # the transforms mix every input frame into every frequency (as fft's do): an output the definition makes NaN or
    # inf stays non-finite, and every finite one agrees
    x, w, b = seeded((1, 2, 6, 4, 4, 4), (3, 2, 3, 3, 3, 3))
    n = x.numel()
    x.view(-1)[5], x.view(-1)[n - 9] = float("nan"), float("inf")
    with convnd.strategy("dft", native_axes=FIRST_LOWERED):
        got = convnd.conv(x, w, b, padding=1).numpy()
    expected = oracle(x, w, b, {"padding": 1})
    assert np.isnan(expected).any() and np.isinf(expected).any()
    assert not np.isfinite(got[~np.isfinite(expected)]).any()
    finite = np.isfinite(expected) & np.isfinite(got)
    assert finite.any()
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-10)


@given(data=st.data())
def test_dft_matches_the_reference_on_random_configs(data):
    # any kernel, dilation and padding pair along the lowered dim; the native dims anything; runs or whole
    lo, hi = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    kernel0, dilation0 = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 2))
    window = dilation0 * (kernel0 - 1) + 1
    frames = data.draw(st.integers(max(1, window - lo - hi), 12))
    kernel = (kernel0, *(data.draw(st.integers(1, 3)) for _ in range(3)))
    groups = data.draw(st.sampled_from([1, 2]))
    kw = {
        "padding": ((lo, hi), *(data.draw(st.integers(0, 1)) for _ in range(3))),
        "stride": (1, *(data.draw(st.integers(1, 2)) for _ in range(3))),
        "dilation": (dilation0, 1, 1, 1),
        "groups": groups,
    }
    x, w, b = seeded((data.draw(st.integers(1, 2)), 2 * groups, frames, 3, 4, 3), (2 * groups, 2, *kernel),
                        seed=data.draw(st.integers(0, 99)))  # fmt: skip
    budget = data.draw(st.sampled_from([None, 1, 3000]))
    with convnd.strategy("dft", native_axes=FIRST_LOWERED, max_memory=budget):
        y = convnd.conv(x, w, b, **kw)
    np.testing.assert_allclose(y.numpy(), oracle(x, w, b, kw), rtol=0, atol=1e-10)
