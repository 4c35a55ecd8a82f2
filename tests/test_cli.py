"""The command line, as a user runs it: ``python -m convnd explain|animate ...`` in a subprocess.

Each subprocess pays torch's import (about 2 s), so the end-to-end runs are few; the finer
checks run ``convnd.cli.main`` in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import convnd
from convnd.cli import main

SRC = str(Path(convnd.__file__).resolve().parents[1])


def convnd_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "convnd", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_seed_question_end_to_end(tmp_path):
    done = convnd_cli("explain", "nn.Conv1d(4, 4, kernel_size=(1, 1))", "--input", "2,4,5,6", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "A 2-d convolution: kernel_size=(1, 1) has 2 entries" in out
    assert "output shape     (2, 4, 5, 6)" in out
    assert f"Stock torch.nn (torch {torch.__version__})" in out
    assert "fails: RuntimeError: Expected 2D (unbatched) or 3D (batched) input to conv1d" in out


def test_json_output_shape_is_what_convnd_computes(tmp_path):
    spec = "ConvTransposeNd(2, 3, (2, 3, 2, 2), stride=(2, 1, 2, 1), padding=(0, 1, 1, 0), output_padding=(1, 0, 0, 0))"
    done = convnd_cli("explain", spec, "--input", "1,2,3,4,3,2", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    layer = convnd.ConvTransposeNd(
        2, 3, (2, 3, 2, 2), stride=(2, 1, 2, 1), padding=(0, 1, 1, 0), output_padding=(1, 0, 0, 0)
    )
    with torch.no_grad():
        expected = layer(torch.randn(1, 2, 3, 4, 3, 2)).shape
    assert tuple(report["output_shape"]) == tuple(expected)
    how = convnd.lowering.plan(layer.spec, input_shape=(1, 2, 3, 4, 3, 2), weight_shape=tuple(layer.weight.shape))
    assert report["dims"] == 4 and report["convnd_plan"]["strategy"] == how.strategy  # the plan that runs


def test_malicious_spec_is_refused_in_one_line_and_runs_nothing(tmp_path):
    done = convnd_cli("explain", "__import__('os').system('touch PWNED')", "--input", "1,1,5", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("convnd explain: error: SPEC must be a call of a convolution class")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "PWNED").exists()


def test_animate_writes_a_gif(tmp_path):
    done = convnd_cli("animate", "Conv1d(1, 1, 3, stride=2)", "--input", "1,1,9", "--output", "a.gif", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "nn.Conv2d(3, 8, 3)", "--input", "1,4,5,5"], "input must be a tensor with 3 channels"),
        (["explain", "nn.Conv2d(3, 8, 3)", "--input", "1,3,5,5,5"], "input must be a tensor with 3 (unbatched)"),
        (["explain", "nn.Conv2d(3, 8, 3, stride=0)", "--input", "1,3,5,5"], "stride must be"),
        (["explain", "nn.Conv2d(3, 8, lambda: 3)", "--input", "1,3,5,5"], "is not a literal"),
        (["explain", "nn.Conv2d(3, 8, 3)", "--input", "1,3,five"], "--input must be sizes >= 1"),
        (["animate", "nn.Conv2d(3, 8, 3)", "--input", "1,3,5,5", "--output", "x.txt"], "--output must be"),
        (["bench", "--only", "nope"], "--only must be one of 4d, "),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convnd {argv[0]}: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`convnd explain ... | head -1`: the pipe closes before convnd writes."""
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = [sys.executable, "-m", "convnd", "explain", "nn.Conv1d(4, 4, kernel_size=(1, 1))", "--input", "2,4,5,6"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    child.stdout.close()  # before the child has imported torch, so its first write meets a closed pipe
    _, err = child.communicate(timeout=120)
    assert child.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
