"""``convnd demo``: every section runs and every claim it prints holds."""

from __future__ import annotations

import re
import sys

import pytest

from convnd import animation, cli, demo


def _demo(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert cli.main(["demo", *args]) == 0
    return capsys.readouterr().out


def test_demo_tours_the_product_and_its_claims_hold(tmp_path, capsys):
    out = _demo(capsys, "--output-dir", str(tmp_path))
    sections = re.findall(r"^(\d)\. ", out, flags=re.MULTILINE)
    assert sections == [str(n) for n in range(1, 8)]
    assert "identical to torch.nn.Conv2d(4, 4, 1) with the same weights: True" in out
    error = float(re.search(r"max \|error\| = (\S+)", out).group(1))
    assert error < 1e-12
    lhs, rhs = re.search(r"^\s+(-?[\d.]+) == (-?[\d.]+)$", out, flags=re.MULTILINE).groups()
    assert lhs == rhs
    assert "fails: RuntimeError" in out  # stock torch.nn.Conv1d refuses the 2-d kernel
    # the rewritten model ran 2-d convolutions only, same checkpoint keys, same numbers
    assert re.search(r"native convolutions that ran: \d+ x conv2d; same state_dict keys: True; same output: True", out)
    assert re.search(r"convnd \('\w+' plan\) is [\d.]+x the loop", out)
    gif = tmp_path / "convnd-demo.gif"
    assert f"wrote {gif}" in out and gif.stat().st_size > 0


def test_demo_makes_its_output_folder(tmp_path, capsys, monkeypatch):
    # only the animation step matters here: the others are the first test's
    for step in ("_rank_follows_the_kernel", "_exact_past_three_dims", "_adjoint", "_explain", "_rewrite", "_speed"):
        monkeypatch.setattr(demo, step, lambda *args: None)
    out = _demo(capsys, "--output-dir", str(tmp_path / "new" / "folder"))
    gif = tmp_path / "new" / "folder" / "convnd-demo.gif"
    assert f"wrote {gif}" in out and gif.stat().st_size > 0


def test_demo_without_the_viz_extra_says_how_to_get_the_animation(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert not animation.viz_available()
    out = _demo(capsys, "--output-dir", str(tmp_path))
    assert "pip install 'convnd[viz]'" in out
    assert not (tmp_path / "convnd-demo.gif").exists()
