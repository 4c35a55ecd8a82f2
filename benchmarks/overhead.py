"""Per-call overhead of convnd over torch for N <= 3 (run by hand, not a test).

convnd.conv and convnd.Conv2d validate their arguments and then make the same single
torch call torch.nn would; this measures what that costs next to
torch.nn.functional.conv2d and torch.nn.Conv2d, on a tiny input (where only overhead
shows) and a medium one (where it should vanish). The calls are interleaved round by
round so a busy machine slows them all alike; the medians are printed side by side.

    PYTHONPATH=src python benchmarks/overhead.py [--rounds 41] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

import convnd

WORKLOADS = {
    # name: (input shape, in channels, out channels, kernel)
    "tiny": ((1, 1, 8, 8), 1, 1, 3),
    "small": ((4, 16, 32, 32), 16, 16, 3),
    "medium": ((8, 32, 32, 32), 32, 32, 3),
}


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call, over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure(name: str, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender on one workload, one sample per round."""
    shape, cin, cout, k = WORKLOADS[name]
    x = torch.randn(shape)
    theirs = torch.nn.Conv2d(cin, cout, k, padding=1)
    ours = convnd.Conv2d(cin, cout, k, padding=1)
    ours.load_state_dict(theirs.state_dict())
    w, b = theirs.weight.detach(), theirs.bias.detach()
    contenders = {
        "F.conv2d": lambda: F.conv2d(x, w, b, 1, 1),
        "convnd.conv": lambda: convnd.conv(x, w, b, 1, 1),
        "torch.nn.Conv2d": lambda: theirs(x),
        "convnd.Conv2d": lambda: ours(x),
    }
    assert torch.equal(convnd.conv(x, w, b, 1, 1), F.conv2d(x, w, b, 1, 1))
    calls = max(1, int(0.02 / per_call(contenders["F.conv2d"], 3)))  # about 20 ms per contender per round
    samples: dict[str, list[float]] = {key: [] for key in contenders}
    with torch.no_grad():
        for _ in range(rounds):
            for key, fn in contenders.items():
                samples[key].append(per_call(fn, calls))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.rounds} interleaved rounds")
    for name in WORKLOADS:
        samples = measure(name, args.rounds)
        shape, cin, cout, k = WORKLOADS[name]
        print(f"\n{name}: input {shape}, {cin}->{cout} channels, {k}x{k} kernel, padding 1")
        print(f"  {'':16s} {'median':>10s} {'min':>10s}")
        for key, values in samples.items():
            print(f"  {key:16s} {statistics.median(values) * 1e6:8.2f}us {min(values) * 1e6:8.2f}us")
        for ours, theirs in [
            ("convnd.conv", "F.conv2d"),
            ("convnd.Conv2d", "F.conv2d"),
            ("convnd.Conv2d", "torch.nn.Conv2d"),
        ]:
            parts = []
            for stat in (statistics.median, min):
                extra = stat(samples[ours]) - stat(samples[theirs])
                parts.append(f"{extra * 1e6:+8.2f}us ({extra / stat(samples[theirs]):+6.1%})")
            print(f"  {ours} - {theirs}: median {parts[0]}, min {parts[1]}")


if __name__ == "__main__":
    main()
