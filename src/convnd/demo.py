"""``convnd demo``: the seed questions answered by running convnd."""

from __future__ import annotations

import argparse

import torch

import convnd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run_cli(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
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

    print("\n2. A 4-d convolution (light field: B, C, U, V, S, T), exact against the NumPy reference.")
    lf = torch.randn(1, 2, 5, 5, 8, 8, dtype=torch.float64)
    conv4 = convnd.ConvNd(2, 3, kernel_size=(3, 3, 3, 3), padding="same", dtype=torch.float64)
    y = conv4(lf)
    s = conv4.spec
    expected = convnd.reference.conv(lf, conv4.weight, conv4.bias, s.stride, s.padding, s.dilation)
    error = (y.detach().numpy() - expected).__abs__().max()
    print(f"   {conv4}\n   input {tuple(lf.shape)} -> output {tuple(y.shape)}, max |error| = {error:.1e}")

    print("\n3. Its transposed convolution is the adjoint: <conv(x), y> == <x, conv_transpose(y)>.")
    w = conv4.weight.detach()
    out = torch.randn_like(y)
    lhs = (convnd.conv(lf, w, padding=1) * out).sum()
    rhs = (lf * convnd.conv_transpose(out, w, padding=1)).sum()
    print(f"   {lhs.item():.6f} == {rhs.item():.6f}")
    return 0
