"""Shared fixtures: the device the suite runs on (``pytest --device=cuda``), as kornia does.

CI runs on CPU; on a GPU machine ``pytest --device=cuda`` runs every test that takes
the ``device`` fixture on CUDA instead.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

# one intra-op thread per process: pytest -n 2 already uses both cores, and oversubscribed
# threads made the float64 gradchecks ten times slower on the 2-core CI machine
torch.set_num_threads(1)

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same torch RNG state: tests drawing from the global generator (hypothesis
    chooses the shapes, torch the values) reproduce their failures."""
    torch.manual_seed(0)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="device for tests taking the device fixture: cpu or cuda")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device=cuda given but no CUDA device is available")
    return torch.device(name)
