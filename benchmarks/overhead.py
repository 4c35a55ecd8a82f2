"""Per-call overhead of convnd over torch for N <= 3 (run by hand, not a test).

convnd.conv and convnd.Conv2d validate their arguments and then make the same single
torch call torch.nn would; this measures what that costs next to
torch.nn.functional.conv2d and torch.nn.Conv2d, on a tiny input (where only overhead
shows) and a medium one (where it should vanish). The calls are interleaved round by
round so a busy machine slows them all alike; the medians are printed side by side, beside them the
fastest round of each (the least disturbed: on a shared host a busy spell slows every call, and its
overhead with it, by up to 1.7x here), and for each difference the median of the rounds' own
differences ("paired": a drift that slows a whole round cancels out).

    PYTHONPATH=src python benchmarks/overhead.py [--rounds 41] [--threads 1] > benchmarks/overhead.txt
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

import convnd
from convnd.bench import samples_side_by_side

WORKLOADS = {
    # name: (input shape, in channels, out channels, kernel)
    "tiny": ((1, 1, 8, 8), 1, 1, 3),
    "small": ((4, 16, 32, 32), 16, 16, 3),
    "medium": ((8, 32, 32, 32), 32, 32, 3),
}


def measure(name: str, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender in each round on one workload (convnd.bench's interleaved, shuffled
    rounds)."""
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
    # a step is many back-to-back calls (about 20 ms), so a microsecond call is not lost in timer noise
    start = time.perf_counter()
    contenders["F.conv2d"]()
    calls = max(1, int(0.02 / max(time.perf_counter() - start, 1e-7)))

    def repeated(fn: Callable[[], object]) -> Callable[[], None]:
        return lambda: [fn() for _ in range(calls)] and None

    with torch.no_grad():
        samples = samples_side_by_side({key: repeated(fn) for key, fn in contenders.items()}, rounds)
    return {key: [seconds / calls for seconds in values] for key, values in samples.items()}


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
        print(f"  {'':38s} {'median':>19s} {'fastest round':>19s} {'paired':>19s}")
        stats = [{key: statistic(values) for key, values in samples.items()} for statistic in (statistics.median, min)]
        for key in samples:
            print(f"  {key:38s}" + "".join(f" {s[key] * 1e6:17.2f}us" for s in stats))
        for ours, theirs in [
            ("convnd.conv", "F.conv2d"),
            ("convnd.Conv2d", "F.conv2d"),
            ("convnd.Conv2d", "torch.nn.Conv2d"),
        ]:
            extra = [s[ours] - s[theirs] for s in stats]
            cells = "".join(f" {e * 1e6:+9.2f}us ({e / s[theirs]:+6.1%})" for e, s in zip(extra, stats))
            # each round's own difference, then their median: a drift that slows a whole round cancels out
            paired = statistics.median(a - b for a, b in zip(samples[ours], samples[theirs]))
            print(f"  {ours + ' - ' + theirs:38s}{cells} {paired * 1e6:+9.2f}us ({paired / stats[0][theirs]:+6.1%})")


if __name__ == "__main__":
    main()
