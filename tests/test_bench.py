"""``convnd bench``: the tables, the chart and a tiny end-to-end run (timings are never asserted)."""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys

import pytest
import torch

from convnd import bench

W = bench.Workload("t", 1, 2, 4, (3, 3, 4, 4), 3, 1)


def _result(backward: bool = False) -> bench.Result:
    seconds = {"convnd": 0.002, "convnd:fold": 0.0025, "torchnd": 0.004, "frame loop": 0.008}
    return bench.Result(W, backward, seconds, gemm=1e11, plan="fold native dims (1, 2, 3)")


def test_flops_count_the_direct_convolution():
    assert W.output_size() == (3, 3, 4, 4)
    assert W.flops() == 2 * 1 * 4 * (3 * 3 * 4 * 4) * 2 * 3**4
    up = bench.Workload("u", 1, 4, 2, (3, 3), 2, 0, 2, 1, True)
    assert up.output_size() == (6, 6)
    assert up.flops() == 2 * 4 * 9 * 2 * 4  # every input element meets every tap of every output channel


def test_table_reports_time_rate_gemm_fraction_and_speedup():
    table = bench.format_table(_result())
    lines = table.splitlines()
    assert (
        lines[0].startswith("t: 4-d, batch 1, 2->4 ch, 3x3x4x4, kernel 3") and "[forward; convnd plan: fold" in lines[0]
    )
    assert lines[1].split() == ["implementation", "ms", "GFLOP/s", "of", "GEMM", "convnd", "x"]
    rate = W.flops() / 0.004 / 1e9
    assert lines[4].split() == ["torchnd", "4.000", f"{rate:.2f}", f"{rate * 1e9 / 1e11:.2f}", "2.00"]
    assert lines[2].split()[0] == "convnd" and len(lines[2].split()) == 4  # no speed-up over itself


def test_printed_tables_parse_back_for_replotting():
    results = [_result(False), _result(True)]
    for r in results:
        r.gemm = 1e9  # so the printed "of GEMM" fraction keeps two significant digits
    text = "\n".join(bench.format_table(r) for r in results)
    parsed = bench.parse_tables(text.replace("t: 4-d", "4d-tiny: 4-d"))
    assert [p.backward for p in parsed] == [False, True]
    assert parsed[0].plan == "fold native dims (1, 2, 3)"
    assert parsed[0].seconds == pytest.approx(results[0].seconds, rel=1e-3)
    assert parsed[0].gemm == pytest.approx(1e9, rel=0.05)


def test_backward_rates_count_three_convolutions():
    assert _result(True).gflops("convnd") == pytest.approx(3 * _result(False).gflops("convnd"))


def test_geometric_mean_skips_convnd_columns():
    means = bench.geometric_mean_speedup([_result(), _result()])
    assert means == pytest.approx({"torchnd": 2.0, "frame loop": 4.0, "fastest peer": 2.0})


def test_geometric_mean_over_the_fastest_peer_takes_each_workloads_own():
    other = _result()
    other.seconds = {"convnd": 0.002, "torchnd": 0.008, "frame loop": 0.001}
    means = bench.geometric_mean_speedup([_result(), other])
    assert means["fastest peer"] == pytest.approx((2.0 * 0.5) ** 0.5)  # torchnd's 2x, then the loop's 0.5x


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "bench.png"
    bench.plot([_result(False), _result(True)], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_counts_on_a_terminal_and_clears_itself():
    stream = _Terminal()
    progress = bench.Progress(4, stream)
    progress.label = "t fwd"
    progress()
    progress()
    assert stream.getvalue().rstrip().endswith("2/4 t fwd")
    assert "#" * 15 + "." * 15 in stream.getvalue()
    progress.clear()
    assert stream.getvalue().endswith("\r" + " " * bench.Progress.WIDTH + "\r")


def test_progress_bar_stays_out_of_logs():
    stream = io.StringIO()  # not a terminal: a redirected stderr
    progress = bench.Progress(4, stream)
    progress()
    progress.clear()
    assert stream.getvalue() == ""


@pytest.mark.parametrize("w", [*bench.QUICK, bench.Workload("s", 1, 2, 2, (3, 4, 3, 4), 2, 1, 2)])
def test_the_frame_loop_peer_is_a_correct_convolution(w):
    x, weight = w.operands(torch.float64)
    expected = bench.convnd_runner(w)(x, weight)
    torch.testing.assert_close(bench.frame_loop_runner(w)(x, weight), expected)


def test_quick_cli_run_prints_tables_and_a_plot(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    png = tmp_path / "quick.png"
    done = subprocess.run(
        [sys.executable, "-m", "convnd", "bench", "--quick", "--rounds", "1", "--mode", "forward",
         "--only", "4d-tiny", "3d-tiny", "--plot", str(png)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "float32 GEMM timed in the same rounds" in done.stdout
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert ("malloc keeps freed memory" if glibc else "system malloc") in done.stdout
    assert "4d-tiny: 4-d" in done.stdout and "3d-tiny: 3-d" in done.stdout
    assert "geometric-mean speed-up of convnd (forward)" in done.stdout
    assert "[#" not in done.stdout  # the progress bar never goes into the tables
    assert done.stderr == ""  # and, with stderr redirected (not a terminal), not into logs either
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_each_timed_sample_follows_an_untimed_call_of_the_same_step():
    # a sample must not pay for what the previous implementation left behind (a GEMM's evicted caches)
    log = []
    steps = {name: (lambda name=name: log.append(name)) for name in "abc"}
    medians = bench.time_side_by_side(steps, rounds=4)
    assert set(medians) == {"a", "b", "c"}
    assert len(log) == 2 * 3 * 4
    assert all(log[i] == log[i + 1] for i in range(0, len(log), 2))  # pairs: untimed, then timed


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_on_reallocation():
    # in a fresh process: once warm, a 64 MiB block allocated and freed again and again is reused, not mapped anew
    # (glibc's default maps every block over 32 MiB fresh: 16384 faults each time)
    code = """
import resource, torch
from convnd import bench
print(bench.keep_freed_memory())
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(1 << 24)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print([faults() for _ in range(8)])
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    said, counts = done.stdout.split("\n")[:2]
    assert said == "malloc keeps freed memory"
    assert sum(int(n) for n in counts.strip("[]").split(",")[4:]) < 400, counts


def test_no_geometric_mean_line_when_only_native_ranks_ran():
    out = io.StringIO()
    tiny = bench.find("3d-tiny")
    bench.run_benchmarks([tiny], modes=[False], rounds=1, strategies=False, gemm=64, out=out, system_malloc=True)
    assert "threads, system malloc;" in out.getvalue()
    assert f"{tiny.name}: 3-d" in out.getvalue()
    assert "geometric-mean" not in out.getvalue()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS through /proc/self (Linux)")
@pytest.mark.parametrize("w", [w for w in bench.WORKLOADS if w.dims > 3], ids=lambda w: w.name)
def test_peak_extra_memory_of_a_forward_stays_within_the_target(w):
    # the memory target: at most 1.5x (input + output) bytes beyond input, weight and output, in a fresh
    # process (deterministic: every buffer its own mapping); the default budget of 1.25x leaves the margin
    measured = bench.peak_extra_memory(w)
    assert measured["extra_bytes"] <= 1.5 * measured["input_plus_output_bytes"], measured


def test_forced_winograd_dft_and_foldspread_get_a_column_only_where_they_run_as_themselves():
    # elsewhere a forced winograd, dft or foldspread runs fold: its column would time fold twice under another name
    assert bench._applies("winograd", bench.find("4d")) and bench._applies("winograd", bench.find("4d-wide"))
    assert not bench._applies("winograd", bench.find("4d-strided"))  # stride 2 along the lowered dim
    assert not bench._applies("winograd", bench.find("5d"))  # two lowered dims
    assert not bench._applies("dft", bench.find("5d")) and not bench._applies("dft", bench.find("4d-strided"))
    assert bench._applies("dft", bench.find("4d-large-kernel"))
    assert all(bench._applies(name, bench.find("5d")) for name in bench.STRATEGIES if name not in ("winograd", "dft"))
    four_d = [w for w in bench.WORKLOADS if w.dims == 4]
    assert four_d and not any(bench._applies("foldspread", w) for w in four_d)  # one lowered dim each


@pytest.mark.parametrize("w", [w for w in (*bench.WORKLOADS, *bench.QUICK) if w.dims > 3], ids=lambda w: w.name)
def test_the_equal_flops_conv3d_does_the_workloads_multiply_adds(w, monkeypatch):
    # the CUDA target's yardstick: cuDNN's conv3d on the same work (folded outer frames and taps)
    seen = []
    for name in ("conv3d", "conv_transpose3d"):
        native = getattr(torch.nn.functional, name)
        monkeypatch.setattr(torch.nn.functional, name, lambda *a, native=native, **k: seen.append(a) or native(*a, **k))
    run = bench.equal_flops_runner(w)
    x, weight = w.operands()
    y = run(x, weight)
    ((xs, ws, *_),) = seen
    taps = ws[0, 0].numel()
    macs = xs.numel() * ws.shape[1] * taps if w.transposed else y.numel() * ws.shape[1] * taps
    assert 2 * macs == w.flops()


def test_off_the_cpu_the_yardstick_joins_and_jax_leaves():
    w = bench.find("4d")
    assert bench.EQUAL_FLOPS not in bench.peers(w, False, "cpu")
    on_gpu = bench.peers(w, False, "cuda")  # only the device's type decides; nothing runs here
    assert bench.EQUAL_FLOPS in on_gpu and "jax" not in on_gpu
    assert bench.EQUAL_FLOPS not in bench.peers(bench.find("3d-tiny"), False, "cuda")  # N <= 3: torch itself


def test_the_yardstick_is_not_a_peer_in_the_geometric_mean():
    r = _result()
    r.seconds = {"convnd": 0.002, "torchnd": 0.004, bench.EQUAL_FLOPS: 0.001}
    means = bench.geometric_mean_speedup([r])
    assert means["fastest peer"] == pytest.approx(2.0) and means[bench.EQUAL_FLOPS] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpu0", "--device must be a torch device such as 'cpu' or 'cuda', got 'gpu0'"),
        ("meta", "--device must be a device available here (torch sees none of that type), got 'meta'"),
    ],
)
def test_an_unusable_device_is_refused_by_name(name, expected):
    with pytest.raises(ValueError) as caught:
        bench.bench_device(name)
    assert str(caught.value) == expected


def test_a_run_on_the_device_times_every_implementation_there(device):
    # on CPU in CI; with pytest --device=cuda, the GPU path: operands there, synchronized steps, the yardstick
    out = io.StringIO()
    tiny = bench.find("4d-tiny")
    results = bench.run_benchmarks([tiny], modes=[False, True], rounds=1, strategies=False, gemm=64, out=out,
                                   device=device)  # fmt: skip
    for r in results:
        assert (bench.EQUAL_FLOPS in r.seconds) == (device.type != "cpu")
        assert all(s > 0 for s in r.seconds.values())
    assert f"{tiny.name}: 4-d" in out.getvalue()
