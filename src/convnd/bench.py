"""``convnd bench``: convnd against its peers and the machine's float32 GEMM, side by side.

Every implementation of a workload is timed in the same rounds, interleaved (one run of
each per round), and the median over rounds is reported, so slow drifts of a shared
machine hit every column alike. GFLOP/s count the direct convolution's multiply-adds
(2 per tap), whatever the algorithm (FFT included), so columns compare time on equal
work. Peers are imported here only, when the benchmark runs:

- ``torchnd``: ``torchnd.conv_nd`` (PyPI), when installed;
- ``frame loop``: the usual hand-written ConvNd port, one conv3d per output frame and
  outer kernel tap (written below);
- ``jax``: ``jax.lax.conv_general_dilated``, when installed (on the CPU).

On a GPU (``--device cuda``) every implementation runs there, each timed call ends with a
synchronization, and a yardstick joins them: ``conv3d, equal FLOPs``, the native conv3d
(cuDNN) of the same multiply-adds (:func:`equal_flops_runner`), the issue's CUDA reference.

``benchmarks/run.py`` drives the same functions; the README's numbers come from it.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import itertools
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import selection
from .errors import fail
from .functional import conv, conv_transpose
from .lowering import plan
from .selection import STRATEGIES, strategy
from .spec import ConvSpec, make_spec

Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Workload:
    """One benchmark convolution: (batch, C_in, C_out, spatial, kernel, padding, stride, groups)."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    spatial: tuple[int, ...]
    kernel: int
    padding: int = 0
    stride: int = 1
    groups: int = 1
    transposed: bool = False

    @property
    def dims(self) -> int:
        return len(self.spatial)

    def operands(
        self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random input and weight (a fixed seed, so every implementation sees the same numbers), on ``device``."""
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((self.batch, self.in_channels, *self.spatial), generator=gen, dtype=dtype)
        if self.transposed:
            shape = (self.in_channels, self.out_channels // self.groups)
        else:
            shape = (self.out_channels, self.in_channels // self.groups)
        w = torch.randn((*shape, *(self.kernel,) * self.dims), generator=gen, dtype=dtype) / 10
        return x.to(device), w.to(device)

    @property
    def spec(self) -> ConvSpec:
        """The workload's convolution, validated like any other convnd call."""
        return make_spec(
            (self.kernel,) * self.dims, self.stride, self.padding, 1, self.groups, transposed=self.transposed
        )

    def output_size(self) -> tuple[int, ...]:
        return self.spec.output_size(self.spatial)

    def flops(self) -> int:
        """Multiply-adds of the direct convolution, times 2."""
        per_output = self.in_channels // self.groups * self.kernel**self.dims
        if self.transposed:  # every input element meets every tap of its group's outputs
            return (
                2
                * self.batch
                * self.in_channels
                * math.prod(self.spatial)
                * self.out_channels
                // self.groups
                * self.kernel**self.dims
            )
        return 2 * self.batch * self.out_channels * math.prod(self.output_size()) * per_output

    def describe(self) -> str:
        kind = "transposed " if self.transposed else ""
        size = "x".join(map(str, self.spatial))
        return (
            f"{self.name}: {kind}{self.dims}-d, batch {self.batch}, {self.in_channels}->{self.out_channels} ch, "
            f"{size}, kernel {self.kernel}, padding {self.padding}, stride {self.stride}, groups {self.groups}"
        )


# the workloads, plus a 4-d transposed one
WORKLOADS = (
    Workload("4d", 2, 8, 16, (9, 9, 24, 24), 3, 1),
    Workload("4d-wide", 1, 16, 16, (8, 16, 16, 16), 3, 1),
    Workload("4d-strided", 2, 16, 32, (10, 10, 20, 20), 3, 1, 2),
    Workload("4d-depthwise", 2, 32, 32, (8, 8, 16, 16), 3, 1, 1, 32),
    Workload("4d-large-kernel", 1, 4, 4, (12, 12, 16, 16), 7, 3),
    Workload("5d", 1, 4, 8, (6, 6, 6, 8, 8), 3, 1),
    Workload("4d-transposed", 1, 16, 8, (6, 6, 12, 12), 2, 0, 2, 1, True),
)
QUICK = (
    Workload("4d-tiny", 1, 2, 3, (4, 4, 5, 5), 3, 1),
    Workload("4d-tiny-transposed", 1, 2, 2, (3, 3, 4, 4), 2, 0, 2, 1, True),
)
# N <= 3: convnd's overhead over calling torch.nn.functional directly
OVERHEAD = (
    Workload("3d-tiny", 1, 1, 1, (4, 4, 4), 3, 1),
    Workload("3d-medium", 2, 16, 16, (24, 24, 24), 3, 1),
)


# --- implementations -----------------------------------------------------------------------


def convnd_runner(w: Workload, name: str | None = None, custom_backward: bool = True) -> Runner:
    """convnd on this workload; ``name`` forces a lowering strategy (None: the planner's choice)."""
    call = conv_transpose if w.transposed else conv
    kwargs = {"stride": w.stride, "padding": w.padding, "groups": w.groups}

    def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if name is None and custom_backward:
            return call(x, weight, **kwargs)
        with strategy(name, custom_backward=custom_backward):
            return call(x, weight, **kwargs)

    return run


def torch_runner(w: Workload) -> Runner:
    """torch.nn.functional's own convolution (N <= 3 only)."""
    fn = getattr(F, f"conv_transpose{w.dims}d" if w.transposed else f"conv{w.dims}d")
    return lambda x, weight: fn(x, weight, None, w.stride, w.padding, groups=w.groups)


def frame_loop_runner(w: Workload) -> Runner:
    """A plain port: one conv3d per (outer output frame, outer tap), summed (transposed: scattered)."""
    native = F.conv_transpose3d if w.transposed else F.conv3d
    k, p, s = w.kernel, w.padding, w.stride

    def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        n_outer = w.dims - 3
        out = w.output_size()
        y = x.new_zeros((x.shape[0], w.out_channels, *out))
        frames = out[:n_outer] if not w.transposed else w.spatial[:n_outer]
        limit = w.spatial[:n_outer] if not w.transposed else out[:n_outer]
        for frame in itertools.product(*map(range, frames)):
            for tap in itertools.product(range(k), repeat=n_outer):
                # forward: output frame o reads input o*s + t - p; transposed: input i lands on i*s + t - p
                other = [f * s + t - p for f, t in zip(frame, tap)]
                if any(o < 0 or o >= n for o, n in zip(other, limit)):
                    continue
                wt = weight[(slice(None), slice(None), *tap)]
                if w.transposed:
                    y[(slice(None), slice(None), *other)] += native(
                        x[(slice(None), slice(None), *frame)], wt, None, s, p, groups=w.groups
                    )
                else:
                    y[(slice(None), slice(None), *frame)] += native(
                        x[(slice(None), slice(None), *other)], wt, None, s, p, groups=w.groups
                    )
        return y

    return run


def torchnd_runner(w: Workload) -> Runner | None:
    """``torchnd.conv_nd`` when the package is installed (imported here only)."""
    if importlib.util.find_spec("torchnd") is None:
        return None
    import torchnd

    dims = tuple(range(2, 2 + w.dims))
    return lambda x, weight: torchnd.conv_nd(
        x, weight, dim=dims, stride=w.stride, padding=w.padding, groups=w.groups, transposed=w.transposed
    )


def jax_runner(w: Workload) -> Runner | None:
    """``jax.lax.conv_general_dilated`` when JAX is installed (forward only; timing includes the host copy)."""
    if importlib.util.find_spec("jax") is None or w.transposed:
        return None
    import jax
    import numpy as np

    spatial = "".join("DHWUVZ"[i] for i in range(w.dims))
    numbers = (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}")
    fn = jax.jit(
        lambda x, k: jax.lax.conv_general_dilated(
            x,
            k,
            (w.stride,) * w.dims,
            [(w.padding, w.padding)] * w.dims,
            dimension_numbers=numbers,
            feature_group_count=w.groups,
        )
    )
    # np.array copies JAX's read-only buffer into one torch may own (from_numpy warns on a read-only array)
    return lambda x, weight: torch.from_numpy(np.array(fn(x.numpy(), weight.numpy()).block_until_ready()))


def equal_flops_runner(w: Workload) -> Runner:
    """The native conv3d with the multiply-adds of ``w`` (N > 3): the outer dims' output frames join the batch and
    their kernel taps the input channels (transposed: the output channels), over the inner three dims with the same
    kernel, stride and padding. A yardstick of the native kernels' rate on equal work (cuDNN on a GPU), not a peer:
    it computes another convolution. Its input is a fresh tensor of the folded shape; only time is compared."""
    n_outer = w.dims - 3
    frames = math.prod(w.spatial[:n_outer] if w.transposed else w.output_size()[:n_outer])
    taps = w.kernel**n_outer
    inner = w.spatial[n_outer:]
    if w.transposed:
        x_shape = (w.batch * frames, w.in_channels, *inner)
        w_shape, native = (w.in_channels, w.out_channels * taps // w.groups), F.conv_transpose3d
    else:
        x_shape = (w.batch * frames, w.in_channels * taps, *inner)
        w_shape, native = (w.out_channels, w.in_channels * taps // w.groups), F.conv3d
    operands: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

    def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype, x.requires_grad)
        if key not in operands:  # made once per device and mode: the timed calls run only the convolution
            xs = torch.randn(x_shape, device=x.device, dtype=x.dtype).requires_grad_(x.requires_grad)
            ws = torch.randn((*w_shape, *(w.kernel,) * 3), device=x.device, dtype=x.dtype)
            operands[key] = xs, ws.requires_grad_(weight.requires_grad)
        xs, ws = operands[key]
        return native(xs, ws, None, w.stride, w.padding, groups=w.groups)

    return run


EQUAL_FLOPS = "conv3d, equal FLOPs"


def peers(w: Workload, backward: bool, device: str | torch.device = "cpu") -> dict[str, Runner]:
    """The peers found for this workload (JAX forward only, on the CPU); off the CPU, past 3 dims, the equal-FLOPs
    conv3d yardstick (:func:`equal_flops_runner`) too."""
    found: dict[str, Runner | None] = {"torchnd": torchnd_runner(w)}
    if w.dims > 3:
        found["frame loop"] = frame_loop_runner(w)
        if not backward and torch.device(device).type == "cpu":
            found["jax"] = jax_runner(w)
        if torch.device(device).type != "cpu":
            found[EQUAL_FLOPS] = equal_flops_runner(w)
    else:
        found["torch.nn.functional"] = torch_runner(w)
    return {name: run for name, run in found.items() if run is not None}


# --- timing --------------------------------------------------------------------------------


def _step(run: Runner, x: torch.Tensor, weight: torch.Tensor, backward: bool, calls: int) -> Callable[[], None]:
    """One timed unit: ``calls`` forward (or forward+backward) passes, finished on the device (synchronized)."""
    done = _synchronizer(x.device)
    if not backward:

        def forward() -> None:
            with torch.no_grad():
                for _ in range(calls):
                    run(x, weight)
            done()

        return forward
    xg, wg = x.detach().requires_grad_(), weight.detach().requires_grad_()

    def both() -> None:
        for _ in range(calls):
            run(xg, wg).sum().backward()
            xg.grad = wg.grad = None
        done()

    return both


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes a timed unit's end its kernels' end: nothing on the CPU, a device synchronization elsewhere."""
    if device.type == "cpu":
        return lambda: None
    module = getattr(torch, device.type)
    return lambda: module.synchronize(device)


def time_side_by_side(
    steps: dict[str, Callable[[], None]], rounds: int, progress: Callable[[], None] | None = None
) -> dict[str, float]:
    """Median seconds of each step over ``rounds`` interleaved rounds (:func:`samples_side_by_side`)."""
    return {name: statistics.median(s) for name, s in samples_side_by_side(steps, rounds, progress).items()}


def samples_side_by_side(
    steps: dict[str, Callable[[], None]], rounds: int, progress: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds of each step in each of ``rounds`` interleaved rounds, each sample in steady state.

    Each round runs every step in a fresh (seeded) order, so slow drifts of a shared machine
    hit every step alike. Within a round each step runs twice back to back and only the second
    run is timed: the first absorbs what the previous step left behind (a 1536^3 GEMM or JAX's
    call evicts the caches and leaves its worker threads spinning, measured to slow the next
    call by 0.6-1 ms), which a random order does not spread evenly over few rounds (measured:
    one implementation followed JAX 14 times in 30 rounds, another 4 times). A timed call thus
    sees what a call inside a loop sees: its own previous call.
    """
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    order = random.Random(0)
    for _ in range(rounds):
        order.shuffle(names)
        for name in names:
            steps[name]()  # untimed: the state a loop of this call is in
            start = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - start)
        if progress is not None:
            progress()
    return samples


@dataclass
class Result:
    """One workload's medians: seconds per call of each implementation."""

    workload: Workload
    backward: bool
    seconds: dict[str, float]
    gemm: float  # FLOP/s of a float32 GEMM timed in the same rounds
    plan: str = ""

    def gflops(self, name: str) -> float:
        work = self.workload.flops() * (3 if self.backward else 1)  # backward: grad input + grad weight
        return work / self.seconds[name] / 1e9


def bench_workload(
    w: Workload,
    *,
    backward: bool,
    rounds: int,
    strategies: bool,
    gemm: int,
    progress: Callable[[], None] | None = None,
    device: str | torch.device = "cpu",
) -> Result:
    """Time convnd (and, with ``strategies``, each forced strategy) against every peer found, on ``device``.

    A ``gemm`` x ``gemm`` float32 matrix product runs in the same rounds: its rate is the
    machine's reference for this workload's "of GEMM" column.
    """
    runners: dict[str, Runner] = {"convnd": convnd_runner(w)}
    if strategies and w.dims > 3:
        runners.update({f"convnd:{s}": convnd_runner(w, s) for s in STRATEGIES if _applies(s, w)})
        if backward:
            runners["convnd:autograd-thru"] = convnd_runner(w, custom_backward=False)
    runners.update(peers(w, backward, device))
    seconds = time_runners(w, runners, backward=backward, rounds=rounds, gemm=gemm, progress=progress, device=device)
    rate = 2 * gemm**3 / seconds.pop(GEMM)
    return Result(w, backward, seconds, rate, plan=plan_name(w, training=backward))


def _applies(name: str, w: Workload) -> bool:
    """Whether a forced strategy runs as itself on ``w`` (a forced ``winograd``, ``dft`` or ``foldspread`` runs
    ``fold`` where it cannot: its column would time fold twice)."""
    x, weight = w.operands()
    how = plan(w.spec, input_shape=x.shape, weight_shape=weight.shape)
    return selection.runs_as_itself(name, w.spec, how, tuple(x.shape), tuple(weight.shape))


def time_runners(
    w: Workload,
    runners: dict[str, Runner],
    *,
    backward: bool,
    rounds: int,
    gemm: int | None = None,
    progress: Callable[[], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Median seconds per call of each runner on ``w``'s operands (on ``device``), side by side
    (:func:`time_side_by_side`); with ``gemm``, a ``gemm``-sized float32 matrix product in the same rounds (its
    seconds under :data:`GEMM`)."""
    x, weight = w.operands(device=device)
    calls = _calls(w)
    steps = {name: _step(run, x, weight, backward, calls) for name, run in runners.items()}
    if gemm is not None:
        steps[GEMM] = _gemm_step(gemm, x.device)
    medians = time_side_by_side(steps, rounds, progress)
    return {name: s / (1 if name == GEMM else calls) for name, s in medians.items()}


GEMM = "float32 GEMM"


def _gemm_step(size: int, device: str | torch.device = "cpu") -> Callable[[], None]:
    """One square float32 matrix product on ``device``, timed in the same rounds as the workload."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device) for _ in range(2))
    done = _synchronizer(torch.device(device))
    return lambda: (torch.mm(a, b), done())


def _calls(w: Workload) -> int:
    """Calls per timed unit: enough that a tiny workload's unit is not all timer noise."""
    return max(1, min(1000, int(2e7 // max(w.flops(), 1))))


def plan_name(w: Workload, training: bool = False) -> str:
    """The strategy (and native dims) convnd's planner picks for ``w``'s forward, or (``training``) when a
    gradient will be computed."""
    x, weight = w.operands()
    how = plan(w.spec, input_shape=x.shape, weight_shape=weight.shape, training=training)
    axes = f" native dims {how.native_axes}" if how.native_axes else ""
    return f"{how.strategy}{axes}"


# --- memory ---------------------------------------------------------------------------------


def _rss(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def measure_extra_memory(w: Workload) -> dict[str, float]:
    """In this process: peak resident bytes of one forward beyond its input, weight and output.

    Linux only. Call it in a fresh process started with ``MALLOC_MMAP_THRESHOLD_=65536`` (as
    :func:`peak_extra_memory` does), so every tensor buffer is its own mapping and freeing
    it returns the memory: the resident peak then counts live allocations exactly, oneDNN's
    internal buffers included. The peak is reset through ``/proc/self/clear_refs`` after a
    warm-up call (which builds oneDNN's kernels).
    """
    x, weight = w.operands()
    run = convnd_runner(w)
    with torch.no_grad():
        run(x, weight)
        before = _rss("VmRSS:")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        y = run(x, weight)
        peak = _rss("VmHWM:")
    io = (x.numel() + y.numel()) * x.element_size()
    return {"extra_bytes": peak - before - y.numel() * y.element_size(), "input_plus_output_bytes": io}


def peak_extra_memory(w: Workload) -> dict[str, float]:
    """:func:`measure_extra_memory` in a fresh subprocess with a fixed mmap threshold."""
    import json
    import os
    import subprocess

    code = f"import json, convnd.bench as b; print(json.dumps(b.measure_extra_memory(b.find({w.name!r}))))"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def device_extra_memory(w: Workload, device: torch.device) -> dict[str, float]:
    """On a CUDA device: the caching allocator's peak of one forward beyond its input, weight and output (its
    statistics count live tensors exactly, so no fresh process is needed)."""
    x, weight = w.operands(device=device)
    run = convnd_runner(w)
    with torch.no_grad():
        run(x, weight)  # warm-up: plans, cuDNN's choices
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        y = run(x, weight)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    io = (x.numel() + y.numel()) * x.element_size()
    return {"extra_bytes": peak - before - y.numel() * y.element_size(), "input_plus_output_bytes": io}


def find(name: str) -> Workload:
    """The workload called ``name``."""
    known = (*WORKLOADS, *QUICK, *OVERHEAD)
    for workload in known:
        if workload.name == name:
            return workload
    fail("--only", name, "one of " + ", ".join(w.name for w in known))


# --- reporting -------------------------------------------------------------------------------


def format_table(result: Result) -> str:
    """A plain-text table: per implementation, ms, GFLOP/s, fraction of GEMM, and convnd's speed-up over it."""
    mode = "forward+backward" if result.backward else "forward"
    lines = [
        f"{result.workload.describe()}  [{mode}; convnd plan: {result.plan}]",
        f"  {'implementation':<22}{'ms':>10}{'GFLOP/s':>10}{'of GEMM':>9}{'convnd x':>10}",
    ]
    ours = result.seconds["convnd"]
    for name, seconds in result.seconds.items():
        speedup = "" if name == "convnd" else f"{seconds / ours:.2f}"
        lines.append(
            f"  {name:<22}{seconds * 1e3:>10.3f}{result.gflops(name):>10.2f}"
            f"{result.gflops(name) * 1e9 / result.gemm:>9.2f}{speedup:>10}"
        )
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str) -> None:
    """Bar chart: GFLOP/s of every implementation per workload, one panel per mode, the GEMM rate as a line.

    Each implementation keeps one colour in every panel; the dashes mark the GEMM rate
    measured with each workload (the "of GEMM" reference).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everyone = list(dict.fromkeys(n for r in results for n in r.seconds))
    cmap = plt.get_cmap("tab20" if len(everyone) > 10 else "tab10")
    colours = {name: cmap(i) for i, name in enumerate(everyone)}
    modes = [m for m in (False, True) if any(r.backward == m for r in results)]
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 4.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        rows = [r for r in results if r.backward == mode]
        width = 0.85 / max(len(r.seconds) for r in rows)
        labelled: set[str] = set()
        for j, r in enumerate(rows):
            for i, name in enumerate(r.seconds):
                label = None if name in labelled else name
                labelled.add(name)
                ax.bar(j + i * width, r.gflops(name), width, color=colours[name], label=label)
            ax.plot([j - width / 2, j + 0.85 - width / 2], [r.gemm / 1e9] * 2, "k--", linewidth=1)
        ax.set_xticks([j + 0.425 - width / 2 for j in range(len(rows))])
        ax.set_xticklabels([r.workload.name for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("GFLOP/s (direct-convolution FLOPs)")
        ax.set_title(("forward+backward" if mode else "forward") + " (dashes: float32 GEMM, same rounds)")
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_tables(text: str) -> list[Result]:
    """The results a run printed (``format_table`` output), to re-plot without timing again."""
    results: list[Result] = []
    for line in text.splitlines():
        if "[forward" in line and ": " in line:
            mode = line.split("[", 1)[1]
            plan = mode.split("convnd plan: ", 1)[1].rstrip("]") if "convnd plan: " in mode else ""
            results.append(Result(find(line.split(":", 1)[0]), mode.startswith("forward+backward"), {}, 0.0, plan))
        elif results and line.startswith("  ") and not line.strip().startswith("implementation"):
            name, ms, rate, fraction = line[2:24].strip(), *map(float, line[24:].split()[:3])
            results[-1].seconds[name] = ms / 1e3
            results[-1].gemm = rate * 1e9 / fraction if fraction else results[-1].gemm
    return results


def geometric_mean_speedup(results: Sequence[Result]) -> dict[str, float]:
    """Per peer, the geometric mean over workloads of convnd's speed-up; ``fastest peer``: over whichever
    peer was fastest on each workload (the issue's target)."""
    ratios: dict[str, list[float]] = {}
    for r in results:
        others = {name: s for name, s in r.seconds.items() if name != "convnd" and not name.startswith("convnd:")}
        for name, seconds in others.items():
            ratios.setdefault(name, []).append(seconds / r.seconds["convnd"])
        peers = [s for name, s in others.items() if name != EQUAL_FLOPS]  # a yardstick, not a peer
        if peers:
            ratios.setdefault(FASTEST, []).append(min(peers) / r.seconds["convnd"])
    return {name: math.exp(statistics.fmean(map(math.log, v))) for name, v in ratios.items()}


FASTEST = "fastest peer"


def keep_freed_memory() -> str:
    """Tell glibc's malloc to keep freed memory in the process (fixed thresholds, as with ``MALLOC_TRIM_THRESHOLD_``
    and ``MALLOC_MMAP_THRESHOLD_``); returns what the table header says about the allocator.

    By default glibc maps large blocks fresh and hands freed ones back, adjusting its thresholds
    as it goes, so whether a call's buffers cost page faults depends on what ran before it: on
    the README's VM a fault costs 1.5-2 us per 4 KiB page, and one forward+backward measured
    from 1 to 3160 faults per call in different processes. A caching allocator (PyTorch's CPU
    tuning guide recommends jemalloc or tcmalloc) reuses freed memory; this is glibc's own
    version of that, for every implementation in the run alike. ``--system-malloc`` skips it.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "system malloc"
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    trim, mmap = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD (malloc.h)
    if libc.mallopt(trim, 1 << 30) != 1 or libc.mallopt(mmap, 1 << 30) != 1:
        return "system malloc"
    return "malloc keeps freed memory"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (logs stay clean)."""

    WIDTH = 80

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.done, self.stream = max(total, 1), 0, stream or sys.stderr
        self.label = ""
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self) -> None:
        self.done += 1
        if self.live:
            filled = int(30 * self.done / self.total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {self.label}"
            self.stream.write("\r" + bar[: self.WIDTH].ljust(self.WIDTH))
            self.stream.flush()

    def clear(self) -> None:
        """Erase the bar, so the next line printed starts on a clean line."""
        if self.live:
            self.stream.write("\r" + " " * self.WIDTH + "\r")
            self.stream.flush()


def run_benchmarks(
    workloads: Sequence[Workload],
    *,
    modes: Sequence[bool],
    rounds: int,
    strategies: bool,
    gemm: int = 1536,
    out: Any = None,
    system_malloc: bool = False,
    device: str | torch.device = "cpu",
) -> list[Result]:
    """Benchmark every workload in every mode on ``device``, printing each table as it completes.

    Unless ``system_malloc``, glibc's malloc is first told to keep freed memory (:func:`keep_freed_memory`).
    """
    out = out or sys.stdout
    progress = Progress(len(workloads) * len(modes) * rounds)
    allocator = "system malloc" if system_malloc else keep_freed_memory()
    print(
        f"torch {torch.__version__}{_device_words(device)}, {torch.get_num_threads()} threads, {allocator}; "
        f"medians of {rounds} interleaved "
        f"rounds, each a call after an untimed one; 'of GEMM': fraction of a {gemm}^3 float32 GEMM timed in the same "
        "rounds",
        file=out,
    )
    results = []
    for backward in modes:
        for w in workloads:
            progress.label = f"{w.name} {'fwd+bwd' if backward else 'fwd'}"
            result = bench_workload(
                w, backward=backward, rounds=rounds, strategies=strategies, gemm=gemm, progress=progress, device=device
            )
            results.append(result)
            progress.clear()
            print(format_table(result), file=out)
    for backward in modes:
        means = geometric_mean_speedup([r for r in results if r.backward == backward and r.workload.dims > 3])
        if not means:
            continue  # only N <= 3 workloads ran (--overhead): there is no lowering to summarize
        text = ", ".join(f"{name} {value:.2f}x" for name, value in means.items())
        print(f"geometric-mean speed-up of convnd ({'forward+backward' if backward else 'forward'}): {text}", file=out)
    return results


def _device_words(device: str | torch.device) -> str:
    """The table header's words for a device other than the CPU (its name, where torch can tell it)."""
    device = torch.device(device)
    if device.type == "cpu":
        return ""
    module = getattr(torch, device.type, None)
    name = module.get_device_name(device) if hasattr(module, "get_device_name") else device.type
    return f" on {name}"


def bench_device(name: str) -> torch.device:
    """``--device``'s value as a device torch can run the benchmark on, else convnd's error naming it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        fail("--device", name, "a torch device such as 'cpu' or 'cuda'")
    module = getattr(torch, device.type, None)
    if device.type != "cpu" and not (hasattr(module, "is_available") and module.is_available()):
        fail("--device", name, "a device available here (torch sees none of that type)")
    return device


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convnd bench`` options."""
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per workload (median reported)")
    parser.add_argument(
        "--mode", choices=("forward", "backward", "both"), default="both", help="forward, forward+backward, or both"
    )
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME", help="workload names to run")
    parser.add_argument("--strategies", action="store_true", help="also time each lowering strategy, forced")
    parser.add_argument("--overhead", action="store_true", help="also measure N <= 3 overhead over torch")
    parser.add_argument("--plot", metavar="FILE.png", default=None, help="draw the results as a bar chart")
    parser.add_argument("--memory", action="store_true", help="also measure peak extra memory of each forward")
    parser.add_argument(
        "--device", default="cpu", help="where to run: cpu (default) or a GPU such as cuda (adds cuDNN's conv3d)"
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc returning freed memory to the system (page faults in the timings)",
    )
    parser.add_argument(
        "--replot",
        metavar="RESULTS.txt",
        default=None,
        help="draw --plot from the tables a previous run printed, without timing",
    )


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark the options describe."""
    if args.replot:
        with open(args.replot) as tables:
            plot(parse_tables(tables.read()), args.plot or args.replot.rsplit(".", 1)[0] + ".png")
        return 0
    workloads = list(QUICK if args.quick else WORKLOADS)
    if args.overhead or args.quick:
        workloads += OVERHEAD[:1] if args.quick else OVERHEAD
    if args.only:
        workloads = [find(name) for name in args.only]
    rounds = args.rounds or (2 if args.quick else 7)
    modes = {"forward": (False,), "backward": (True,), "both": (False, True)}[args.mode]
    gemm = 256 if args.quick else 1536
    device = bench_device(args.device)
    results = run_benchmarks(
        workloads,
        modes=modes,
        rounds=rounds,
        strategies=args.strategies,
        gemm=gemm,
        system_malloc=args.system_malloc,
        device=device,
    )
    if args.memory:
        for w in workloads:
            if w.dims > 3 and device.type == "cuda":
                m = device_extra_memory(w, device)
                how = "peak allocated, CUDA caching allocator"
            elif w.dims > 3 and device.type == "cpu" and sys.platform.startswith("linux"):
                m, how = peak_extra_memory(w), "peak RSS, fresh process"
            else:
                continue
            ratio = m["extra_bytes"] / m["input_plus_output_bytes"]
            print(
                f"peak extra memory, {w.name} forward: {ratio:.2f} x (input + output) "
                f"= {m['extra_bytes'] / 1e6:.1f} MB ({how})"
            )
    if args.plot:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")
    return 0
