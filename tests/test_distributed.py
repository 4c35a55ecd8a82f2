"""convnd modules under torch.distributed: 2 local processes (gloo, loopback) against one on the whole batch.

DistributedDataParallel and FSDP2's ``fully_shard`` both apply on CPU with gloo and are
tested here. FSDP1 (``FullyShardedDataParallel``) refuses to start without an accelerator
("FSDP needs a non-CPU accelerator device"), so it cannot run in CPU CI.

One spawn runs both wrappers (starting processes dominates the time); the gradients
each rank saw are written to files and compared here. Summation order differs between
two half-batch means averaged by all-reduce and one whole-batch mean, so the gradients
agree to float64 rounding, not bit for bit.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import convnd

pytestmark = pytest.mark.slow

WORLD = 2
TIMEOUT_S = 50  # the whole spawn; each collective also times out (init_process_group below)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        convnd.ConvNd(2, 3, (2, 3, 2, 2), padding=1, dtype=torch.float64),
        torch.nn.Tanh(),
        convnd.ConvTransposeNd(3, 2, (2, 2, 2, 2), stride=2, dtype=torch.float64),
    )


def _batch() -> torch.Tensor:
    return torch.randn(4, 2, 3, 3, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _step(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One training step: mean loss over the (local) batch, backward, SGD update."""
    model(x).square().mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # two processes on a 2-core CI machine
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=30))
    try:
        x = _batch().chunk(WORLD)[rank]
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        _step(ddp, x)
        results = {"ddp": _state(ddp.module)}

        from torch.distributed.fsdp import fully_shard

        sharded = _model()
        for layer in sharded:
            if isinstance(layer, (convnd.ConvNd, convnd.ConvTransposeNd)):
                fully_shard(layer)
        fully_shard(sharded)
        _step(sharded, x)
        results["fully_shard"] = _state(sharded)
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # skip the interpreter's teardown: after a gloo FSDP2 run it sometimes aborts there ("terminate called without an
    # active exception", a C++ thread still joinable at exit; seen in 1-3 of 6 runs, before convnd's latest changes
    # too), after the results are saved; a failure above still raises and reaches spawn's error file
    os._exit(0)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradients and updated parameters, gathered whole when they are sharded DTensors."""

    def whole(t: torch.Tensor) -> torch.Tensor:
        return t.full_tensor() if hasattr(t, "full_tensor") else t.detach().clone()

    state = {f"{name}.grad": whole(p.grad) for name, p in model.named_parameters()}
    return state | {name: whole(p) for name, p in model.named_parameters()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("distributed")
    context = mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        # join returns as soon as one process ends (raising if it failed), so wait until all have or time is up
        finished = False
        while not finished and time.monotonic() < deadline:
            finished = context.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    assert finished, f"the {WORLD} processes did not finish within {TIMEOUT_S} s"
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict[str, torch.Tensor]:
    model = _model()
    _step(model, _batch())
    return _state(model)


@pytest.mark.parametrize("wrapper", ["ddp", "fully_shard"])
def test_two_processes_match_one_process_on_the_whole_batch(wrapper: str, ranks: list[dict], single: dict) -> None:
    for rank, results in enumerate(ranks):
        got = results[wrapper]
        assert sorted(got) == sorted(single)
        for name, expected in single.items():
            torch.testing.assert_close(got[name], expected, rtol=1e-12, atol=1e-14, msg=f"rank {rank}: {name}")
