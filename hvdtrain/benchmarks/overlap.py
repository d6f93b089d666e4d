"""Rank side of ``hvdtrain bench overlap``: how much allreduce each contender hides behind its
backward pass (PyTorch: hvdtrain's adapter, the minimal Horovod loop, DDP).

Runs inside every rank (``python -m hvdtrain.benchmarks.overlap OUT.json CONFIG_JSON``). The
contenders train the same model on the same batches as ``bench train`` (its factories are
reused), one after another, each for ``warmup`` then ``steps`` steps. Rank 0 stamps every
measured step with the wall clock: its start, the moment the last parameter gradient was
accumulated (a post-accumulate hook on every parameter: the backward compute is over) and its
end. Where the communication is seen:

* the Horovod contenders: Horovod's timeline, started on rank 0 for the measured steps only
  (``HOROVOD_TIMELINE=DYNAMIC``), read back by ``benchmarks.timeline``;
* DDP: a communication hook that does what DDP's default hook does (allreduce the bucket,
  divide by the world size) and stamps each bucket's allreduce start and completion; DDP's
  buckets are its unit of overlap, as fused tensors are Horovod's.

Both become the same intervals, so one analysis (``timeline.step_overlap``) serves all three.
Rank 0 writes the per-step stamps, the intervals and the medians.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hvdtrain.atomic import atomic_write_text
from hvdtrain.benchmarks import timeline
from hvdtrain.benchmarks.train import (
    TrainBenchConfig,
    _batch,
    _hvdtrain_steps,
    _loss,
    bench_encoder,
    bench_model,
    contender_adam,
    horovod_torch_step,
)
from hvdtrain.errors import ConfigError

CONTENDERS = ("hvdtrain", "horovod", "ddp")
FLUSH_WAIT_S = 10.0  # Horovod's timeline writer is a thread: how long to wait for its records


def _now_us() -> int:
    return time.time_ns() // 1000


class GradientClock:
    """The wall-clock time of the latest parameter-gradient accumulation."""

    def __init__(self, parameters: Any) -> None:
        self.last_us = 0
        for parameter in parameters:
            if parameter.requires_grad:
                parameter.register_post_accumulate_grad_hook(self._stamp)

    def _stamp(self, _parameter: Any) -> None:
        self.last_us = _now_us()


class BucketClock:
    """A DDP communication hook equal to DDP's default (allreduce, then divide by the world
    size) that records when each bucket's allreduce started and completed."""

    def __init__(self, dist: Any) -> None:
        self.dist = dist
        self.intervals: list[tuple[int, int]] = []

    def hook(self) -> Callable[[Any, Any], Any]:
        """The hook for ``register_comm_hook``, which checks annotations against torch's own
        classes: this module's are strings (postponed evaluation), so the hook has none."""

        def allreduce_and_stamp(_state: Any, bucket: Any) -> Any:
            start = _now_us()
            size = self.dist.get_world_size()
            future = self.dist.all_reduce(bucket.buffer(), async_op=True).get_future()

            def done(fut: Any) -> Any:
                self.intervals.append((start, _now_us()))
                return fut.value()[0].div_(size)

            return future.then(done)

        allreduce_and_stamp.__annotations__ = {}
        return allreduce_and_stamp


def _model(config: TrainBenchConfig) -> Any:
    import torch

    torch.manual_seed(0)
    return bench_encoder(1) if config.model == "encoder" else bench_model(config.features, 1)


def _contenders(config: TrainBenchConfig, hvd: Any) -> dict[str, tuple[Callable[[], None],
                                                                      GradientClock]]:
    import torch

    rank, size = hvd.rank(), hvd.size()
    x, y = _batch(config, rank)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    factory = "bench_encoder" if config.model == "encoder" else "bench_model"
    out: dict[str, tuple[Callable[[], None], GradientClock]] = {}
    if "hvdtrain" in config.contenders:
        adapters: dict[str, Any] = {}
        steps = _hvdtrain_steps("torch", f"hvdtrain.benchmarks.train:{factory}", x, y,
                                config, after_pin=lambda: torch.set_num_threads(1),
                                adapters_out=adapters)
        out["hvdtrain"] = (steps["hvdtrain"],
                           GradientClock(adapters["hvdtrain"].model.parameters()))
    if "horovod" in config.contenders:
        model = _model(config)
        out["horovod"] = (horovod_torch_step(hvd, torch, model, xt, yt),
                          GradientClock(model.parameters()))
    if "ddp" in config.contenders:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://{config.ddp_address}:"
                                f"{config.ddp_port}", rank=rank, world_size=size)
        ddp = torch.nn.parallel.DistributedDataParallel(_model(config))
        buckets = BucketClock(dist)
        ddp.register_comm_hook(None, buckets.hook())
        ddp_opt = contender_adam(torch, ddp.parameters())

        def ddp_step() -> None:
            ddp_opt.zero_grad()
            _loss(torch, ddp(xt), yt).backward()
            ddp_opt.step()

        clock = GradientClock(ddp.module.parameters())
        clock.buckets = buckets  # type: ignore[attr-defined]
        out["ddp"] = (ddp_step, clock)
    return out


def _wait_for_timeline(path: Path, last_step_start_us: int) -> list[timeline.Activity]:
    """The timeline's network activities once the writer thread has written the last
    measured step's (or ``FLUSH_WAIT_S`` passed)."""
    deadline = time.monotonic() + FLUSH_WAIT_S
    activities: list[timeline.Activity] = []
    while time.monotonic() < deadline:
        try:
            activities = timeline.network_activities(timeline.read_activities(path))
        except ConfigError:  # a half-written record: read again shortly
            activities = []
        if activities and activities[-1].start_us >= last_step_start_us:
            break
        time.sleep(0.25)
    return activities


def measure(config: TrainBenchConfig, timeline_path: Path) -> dict[str, Any]:
    os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"  # started and stopped below, on rank 0
    import horovod.torch as hvd
    import torch

    from hvdtrain import comm

    comm.horovod_defaults()
    torch.set_num_threads(1)
    hvd.init()
    contenders = _contenders(config, hvd)
    for step, _clock in contenders.values():
        for _ in range(config.warmup):
            step()
    hvd.barrier()
    if hvd.rank() == 0:
        hvd.start_timeline(str(timeline_path))
    stamps: dict[str, list[timeline.Step]] = {}
    for name, (step, clock) in contenders.items():
        hvd.barrier()
        stamps[name] = []
        for _ in range(config.steps):
            start = _now_us()
            step()
            stamps[name].append(timeline.Step(start, clock.last_us, _now_us()))
    hvd.barrier()
    if hvd.rank() != 0:
        return {}
    hvd.stop_timeline()
    horovod_steps = [s for name in ("hvdtrain", "horovod") for s in stamps.get(name, [])]
    network = _wait_for_timeline(timeline_path, max((s.start_us for s in horovod_steps),
                                                    default=0))
    result: dict[str, Any] = {}
    for name, (_step, clock) in contenders.items():
        if name == "ddp":
            intervals = [timeline.Activity("bucket", "GLOO_ALLREDUCE", start, end)
                         for start, end in clock.buckets.intervals]  # type: ignore[attr-defined]
        else:
            intervals = network
        overlaps = [timeline.step_overlap(s, intervals) for s in stamps[name]]
        result[name] = {"summary": timeline.summarise(overlaps),
                        "steps": [asdict(s) for s in stamps[name]],
                        "overlaps": [asdict(o) for o in overlaps],
                        "intervals": [(a.start_us, a.end_us) for a in intervals
                                      if stamps[name][0].start_us <= a.start_us
                                      <= stamps[name][-1].end_us]}
    return {"ranks": hvd.size(), "config": asdict(config), "contenders": result,
            "controller": "mpi" if hvd.mpi_enabled() else "gloo",
            "gradient_bytes_per_step": 4 * sum(p.numel() for p in _model(config).parameters())}


def main(argv: list[str]) -> None:
    out, raw = Path(argv[0]), json.loads(argv[1])
    raw["contenders"] = tuple(raw["contenders"])
    result = measure(TrainBenchConfig(**raw), out.with_suffix(".timeline.json"))
    if result:
        atomic_write_text(out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
