"""convnd modules survive pickle, deepcopy and torch.save/torch.load, and their state_dicts load with weights_only."""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convnd

CLASSES = [
    convnd.ConvNd, convnd.Conv1d, convnd.Conv2d, convnd.Conv3d,
    convnd.ConvTransposeNd, convnd.ConvTranspose1d, convnd.ConvTranspose2d, convnd.ConvTranspose3d,
]  # fmt: skip
RANKS = [1, 2, 3, 4, 5]


def _module(cls: type, dims: int, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A small module of rank ``dims`` (a tuple kernel sets the rank for every class) with non-default arguments."""
    torch.manual_seed(dims)
    kernel = (2, 1, 2, 2, 1)[:dims]
    if issubclass(cls, convnd.ConvTransposeNd):
        return cls(4, 2, kernel, stride=2, padding=1, output_padding=1, groups=2, dilation=1, device=device)
    return cls(4, 2, kernel, stride=(1, 2, 1, 1, 2)[:dims], padding="same" if dims == 1 else 1, groups=2,
               padding_mode="circular", device=device)  # fmt: skip


def _roundtrips() -> dict:
    def torch_save(m: torch.nn.Module) -> torch.nn.Module:
        buffer = io.BytesIO()
        torch.save(m, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)  # a whole module is code, not weights

    return {"pickle": lambda m: pickle.loads(pickle.dumps(m)), "deepcopy": copy.deepcopy, "torch.save": torch_save}


ROUNDTRIPS = _roundtrips()


def _same_module(got: torch.nn.Module, original: torch.nn.Module, dims: int, device: torch.device) -> None:
    assert type(got) is type(original) and repr(got) == repr(original)
    assert got.spec == original.spec
    for (name, p), (_, q) in zip(got.state_dict().items(), original.state_dict().items()):
        assert torch.equal(p, q) and p.device == q.device, name
    x = torch.randn(2, 4, *(5,) * dims, device=device)
    assert torch.equal(got(x), original(x))


@pytest.mark.parametrize("how", ROUNDTRIPS)
@pytest.mark.parametrize("dims", RANKS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_module_roundtrip(cls: type, dims: int, how: str, device) -> None:
    original = _module(cls, dims, device)
    _same_module(ROUNDTRIPS[how](original), original, dims, device)


@pytest.mark.parametrize("dims", RANKS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_state_dict_loads_with_weights_only(cls: type, dims: int, device) -> None:
    original = _module(cls, dims, device)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    fresh = _module(cls, dims, device)
    fresh.reset_parameters()
    assert not torch.equal(fresh.weight, original.weight)  # so the load below has something to do
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    _same_module(fresh, original, dims, device)


def test_pickled_model_runs_in_a_fresh_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(convnd.ConvNd(2, 3, (2, 2, 2, 2), padding=1), convnd.ConvTransposeNd(3, 2, (2,) * 5))
    x = torch.randn(1, 2, 3, 3, 3, 3)
    model = torch.nn.Sequential(model[0], torch.nn.Unflatten(2, (1, 4)), model[1])  # 4-d output -> 5-d input
    torch.save({"model": model, "x": x}, tmp_path / "model.pt")
    script = (
        "import sys, torch\n"
        "saved = torch.load(sys.argv[1], weights_only=False)\n"
        "torch.save(saved['model'](saved['x']), sys.argv[2])\n"
    )
    src = str(Path(convnd.__file__).parents[1])
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.pt"), str(tmp_path / "y.pt")],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), model(x))
