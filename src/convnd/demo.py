"""``convnd demo``: a tour of convnd in a few seconds, every claim computed on the spot.

It answers the seed questions (the rank follows the kernel, exact past 3 dims, the
transposed convolution is the adjoint), then shows each other part of the product at work:
``explain``, ``rewrite`` for a 2-D-only target, a side-by-side timing of a 4-D convolution
against a hand-written frame loop, and (with the ``viz`` extra) an ``animate`` GIF.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import convnd

from . import animation, bench
from .testing import NativeConvolutions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--output-dir", default=".", metavar="DIR", help="where the animation is written (default: here)"
    )


def run_cli(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    _rank_follows_the_kernel()
    conv4 = _exact_past_three_dims()
    _adjoint(conv4)
    _explain()
    _rewrite()
    _speed()
    _animate(Path(args.output_dir))
    return 0


def _rank_follows_the_kernel() -> None:
    print("1. The rank follows the kernel: Conv1d with a (1, 1) kernel is a 2-d convolution.")
    x = torch.randn(2, 4, 5, 6)
    m = convnd.Conv1d(4, 4, kernel_size=(1, 1))
    print(f"   {m}  on input {tuple(x.shape)} -> output {tuple(m(x).shape)}")
    ref = torch.nn.Conv2d(4, 4, kernel_size=1)
    ref.load_state_dict(m.state_dict())
    print(f"   identical to torch.nn.Conv2d(4, 4, 1) with the same weights: {torch.equal(m(x), ref(x))}")
    try:
        torch.nn.Conv1d(4, 4, kernel_size=(1, 1))(x)
        print("   torch.nn.Conv1d runs it too.")
    except RuntimeError as error:
        print(f"   torch {torch.__version__} nn.Conv1d refuses it: {str(error).splitlines()[0]}")


def _exact_past_three_dims() -> convnd.ConvNd:
    print("\n2. A 4-d convolution (light field: B, C, U, V, S, T), exact against the NumPy reference.")
    lf = torch.randn(1, 2, 5, 5, 8, 8, dtype=torch.float64)
    conv4 = convnd.ConvNd(2, 3, kernel_size=(3, 3, 3, 3), padding="same", dtype=torch.float64)
    y = conv4(lf)
    s = conv4.spec
    expected = convnd.reference.conv(lf, conv4.weight, conv4.bias, s.stride, s.padding, s.dilation)
    error = (y.detach().numpy() - expected).__abs__().max()
    print(f"   {conv4}\n   input {tuple(lf.shape)} -> output {tuple(y.shape)}, max |error| = {error:.1e}")
    return conv4


def _adjoint(conv4: convnd.ConvNd) -> None:
    print("\n3. Its transposed convolution is the adjoint: <conv(x), y> == <x, conv_transpose(y)>.")
    x = torch.randn(1, 2, 5, 5, 8, 8, dtype=torch.float64)
    w = conv4.weight.detach()
    out = torch.randn((1, 3, 5, 5, 8, 8), dtype=torch.float64)
    lhs = (convnd.conv(x, w, padding=1) * out).sum()
    rhs = (x * convnd.conv_transpose(out, w, padding=1)).sum()
    print(f"   {lhs.item():.6f} == {rhs.item():.6f}")


def _explain() -> None:
    layer, shape = "nn.Conv1d(4, 4, kernel_size=(1, 1))", "2,4,5,6"
    print("\n4. What a layer does to a shape, and what stock torch does with it:")
    print(f"   convnd explain '{layer}' --input {shape}")
    text = str(convnd.explain(layer, shape)).splitlines()
    first = [line for line in text[1:] if line.strip()][:2]
    verdict = next((line for line in text if line.strip().startswith("fails:")), "")
    for line in [*first, "...", verdict.strip()]:
        print(f"   {line.strip()}")


def _rewrite() -> None:
    print("\n5. A model for a 2-d-only accelerator: convnd.rewrite(model, 2), checkpoint unchanged.")
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.Unflatten(2, (4, 4, 4)),
        torch.nn.Conv3d(4, 4, 3, padding=1, padding_mode="reflect"),
    )  # fmt: skip
    flat = convnd.rewrite(model, 2)
    x = torch.randn(2, 2, 64)
    with torch.no_grad(), NativeConvolutions() as record:
        y = flat(x)
    same_keys = flat.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        close = torch.allclose(y, model(x), atol=1e-5)
    counts = {rank: sum(r == rank for _, r in record.calls) for rank in sorted(record.ranks)}
    ran = ", ".join(f"{count} x conv{rank}d" for rank, count in counts.items())
    print(f"   native convolutions that ran: {ran}; same state_dict keys: {same_keys}; same output: {close}")


def _speed() -> None:
    w = bench.find("4d-large-kernel")
    print(f"\n6. Speed, side by side on this machine (5 rounds, medians): {w.describe()}")
    runners = {"convnd": bench.convnd_runner(w), "frame loop over conv3d": bench.frame_loop_runner(w)}
    seconds = bench.time_runners(w, runners, backward=False, rounds=5)
    x, weight = w.operands()
    plan = convnd.lowering.plan(w.spec, input_shape=x.shape, weight_shape=weight.shape).strategy
    for name, s in seconds.items():
        print(f"   {name:<24} {s * 1e3:8.2f} ms")
    print(
        f"   convnd ('{plan}' plan) is {seconds['frame loop over conv3d'] / seconds['convnd']:.1f}x the loop;"
        " `convnd bench` measures every workload and peer"
    )


def _animate(directory: Path) -> None:
    layer, shape = "nn.Conv2d(1, 1, 3, stride=2, padding=1)", "1,1,7,7"
    print(f"\n7. The kernel sliding: convnd animate '{layer}' --input {shape} --output FILE.gif")
    if not animation.viz_available():
        print("   (install the viz extra, pip install 'convnd[viz]', to draw it)")
        return
    print(f"   wrote {convnd.animate(layer, shape, directory / 'convnd-demo.gif')}")
