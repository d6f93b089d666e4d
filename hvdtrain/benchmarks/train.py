"""Training throughput: hvdtrain's adapter against a minimal Horovod loop and PyTorch DDP.

Runs inside every rank (``python -m hvdtrain.benchmarks.train OUT.json CONFIG_JSON``, started
by ``hvdtrain bench train`` through the ordinary launcher). The three contenders train the
same MLP on the same synthetic batches with one thread per rank:

* ``hvdtrain``: the torch ``FrameworkAdapter`` exactly as ``hvdtrain train`` drives it;
* ``horovod``: the classic synthetic-benchmark shape (``hvd.DistributedOptimizer``, Adam,
  ``loss.backward(); opt.step()``): what hvdtrain's own overhead is measured against;
* ``ddp``: ``DistributedDataParallel`` over ``torch.distributed`` with Gloo, PyTorch's own.

They run interleaved in rounds (hvdtrain, horovod, ddp, hvdtrain, ...); each timed window is
barrier-synchronised and throughput is the aggregate over all ranks (samples of all ranks /
the window), never one rank's speed times the rank count.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CONTENDERS = ("hvdtrain", "horovod", "ddp")


@dataclass(frozen=True)
class TrainBenchConfig:
    features: int = 128
    hidden: int = 1024
    batch_size: int = 256  # per rank
    steps: int = 20  # timed steps per window
    warmup: int = 5
    rounds: int = 3
    contenders: tuple[str, ...] = CONTENDERS
    ddp_address: str = "127.0.0.1"  # rank 0's host, for torch.distributed's store
    ddp_port: int = 29511


_HIDDEN = {"width": TrainBenchConfig.hidden}  # read by bench_model, set by measure()


def bench_model(num_features: int, num_outputs: int) -> Any:
    """The benchmark's MLP (features → hidden → hidden → out), also as hvdtrain's
    ``--model hvdtrain.benchmarks.train:bench_model`` so all contenders train the same net."""
    import torch.nn as nn

    width = _HIDDEN["width"]
    return nn.Sequential(nn.Linear(num_features, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_outputs))


def _loss(torch: Any, logits: Any, y: Any) -> Any:
    """Binary task, one logit: the loss hvdtrain's adapter uses for two classes."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())


def measure(config: TrainBenchConfig) -> dict[str, Any]:
    import horovod.torch as hvd
    import numpy as np
    import torch

    torch.set_num_threads(1)
    _HIDDEN["width"] = config.hidden
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((config.batch_size, config.features)).astype(np.float32)
    y = rng.integers(0, 2, config.batch_size).astype(np.int64)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    steps: dict[str, Callable[[], None]] = {}
    if "hvdtrain" in config.contenders:
        steps["hvdtrain"] = _hvdtrain_step(config, x, y)
    if "horovod" in config.contenders:
        torch.manual_seed(0)
        model = bench_model(config.features, 1)
        opt = hvd.DistributedOptimizer(torch.optim.Adam(model.parameters(), 1e-3),
                                       named_parameters=model.named_parameters())
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)

        def horovod_step() -> None:
            opt.zero_grad()
            _loss(torch, model(xt), yt).backward()
            opt.step()

        steps["horovod"] = horovod_step
    if "ddp" in config.contenders:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://{config.ddp_address}:"
                                f"{config.ddp_port}", rank=rank, world_size=size)
        torch.manual_seed(0)
        ddp = torch.nn.parallel.DistributedDataParallel(bench_model(config.features, 1))
        ddp_opt = torch.optim.Adam(ddp.parameters(), 1e-3)

        def ddp_step() -> None:
            ddp_opt.zero_grad()
            _loss(torch, ddp(xt), yt).backward()
            ddp_opt.step()

        steps["ddp"] = ddp_step

    for step in steps.values():
        for _ in range(config.warmup):
            step()
    windows: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(config.rounds):
        for name, step in steps.items():  # interleaved: a noisy moment hits every contender
            hvd.barrier()
            start = time.perf_counter()
            for _ in range(config.steps):
                step()
            hvd.barrier()
            windows[name].append(time.perf_counter() - start)
    samples = config.steps * config.batch_size * size
    result = {name: {"samples_per_second": samples / statistics.median(times),
                     "windows_s": times} for name, times in windows.items()}
    return {"ranks": size, "controller": "mpi" if hvd.mpi_enabled() else "gloo",
            "config": asdict(config), "contenders": result}


def _hvdtrain_step(config: TrainBenchConfig, x: Any, y: Any) -> Callable[[], None]:
    """hvdtrain's torch adapter on a Dataset holding exactly the benchmark's batch."""
    from hvdtrain.frameworks.registry import create_adapter
    from hvdtrain.types import Dataset, DeviceChoice, TrainConfig

    adapter = create_adapter("torch")
    adapter.pin(DeviceChoice("cpu", None, "benchmark"))
    import torch

    torch.set_num_threads(1)  # pin() splits the cores; the benchmark fixes one per rank
    data = Dataset("bench", "tabular", x, y, x[:2], y[:2], num_classes=2)
    adapter.setup(TrainConfig(model=f"{__name__}:bench_model", data="synthetic", lr=1e-3,
                              lr_scaling="none", seed=0), data)

    def step() -> None:
        adapter.train_batch(x, y, 1e-3)  # NumPy batches, as the loop gives them

    return step


def main(argv: list[str]) -> None:
    out, raw = Path(argv[0]), json.loads(argv[1])
    raw["contenders"] = tuple(raw["contenders"])
    result = measure(TrainBenchConfig(**raw))
    import horovod.torch as hvd

    if hvd.rank() == 0:
        out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
