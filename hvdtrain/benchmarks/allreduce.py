"""Allreduce bandwidth through hvdtrain's Horovod seam against raw MPI, same ranks, same buffers.

Runs inside every rank (``python -m hvdtrain.benchmarks.allreduce OUT.json CONFIG_JSON``,
started by ``hvdtrain bench allreduce`` through the ordinary launcher). For each size, dtype
the contenders (every compression, and raw MPI) are timed alternately after a warm-up:

* ``hvdtrain``: ``hvd.allreduce`` on a torch tensor, as the training loop and adapters issue
  it; with ``fp16`` compression the same pre-scaled fp16 sum the overflow-safe compressor
  sends (``comm.fp16``), including the casts;
* ``mpi``: ``MPI_Allreduce`` through mpi4py on a NumPy buffer of the same bytes (only under
  Horovod's MPI controller, where MPI is initialised; under Gloo there is no MPI to compare).

Each timing is a barrier-synchronised window (the slowest rank's time is what a step waits
for: the maximum over ranks is taken). Reported: median seconds, algorithm bandwidth
(bytes / time) and bus bandwidth (× 2(n−1)/n, the ring's traffic per link), and the ratio
hvdtrain / MPI.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hvdtrain.atomic import atomic_write_text

DTYPES = ("float32", "float16")
COMPRESSIONS = ("none", "fp16")


@dataclass(frozen=True)
class AllreduceConfig:
    sizes: tuple[int, ...]  # bytes
    dtypes: tuple[str, ...] = ("float32",)
    compressions: tuple[str, ...] = COMPRESSIONS
    repeats: int = 10
    warmup: int = 3


def parse_size(text: str) -> int:
    """``4K``, ``16M``, ``1G`` or a plain number of bytes."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    value = int(float(number) * factor)
    if value <= 0:
        raise ValueError(f"size must be > 0, got {text!r}")
    return value


def human_size(size: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _timed(run: Callable[[], Any], barrier: Callable[[], Any]) -> float:
    barrier()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(config: AllreduceConfig) -> dict[str, Any]:
    import horovod.torch as hvd
    import numpy as np
    import torch

    from hvdtrain import comm

    torch.set_num_threads(1)
    seam = comm.init("horovod.torch", torch.from_numpy)
    size = seam.size
    mpi = None
    if hvd.mpi_enabled():
        from mpi4py import MPI

        mpi = MPI.COMM_WORLD

    def barrier() -> None:
        hvd.barrier() if mpi is None else mpi.Barrier()

    rows = []
    for dtype in config.dtypes:
        item = np.dtype(dtype).itemsize
        for nbytes in config.sizes:
            count = max(1, nbytes // item)
            tensor = torch.ones(count, dtype=getattr(torch, dtype))
            send = np.ones(count, dtype=dtype)
            recv = np.empty_like(send)
            kinds = [c for c in config.compressions
                     if not (c == "fp16" and dtype == "float16")]  # fp16 data: no cast

            def ours(c: str, t: Any = tensor, n: int = nbytes) -> Any:
                if c == "fp16":  # what SafeFP16 sends: pre-scaled fp16, summed, cast back
                    half = (t / size).half()
                    return hvd.allreduce(half, op=hvd.Sum, name=f"b{n}.{c}").to(t.dtype)
                return hvd.allreduce(t, op=hvd.Sum, name=f"b{n}.{c}")

            def raw(s: Any = send, r: Any = recv) -> None:
                mpi.Allreduce(s, r)  # type: ignore[union-attr]

            for _ in range(config.warmup):
                for kind in kinds:
                    ours(kind)
                if mpi is not None:
                    raw()
            # interleaved: each repetition times every compression and raw MPI in turn, so a
            # noisy moment hits all of them (fp16 vs none is a ratio of the same moments)
            mine: dict[str, list[float]] = {kind: [] for kind in kinds}
            theirs: list[float] = []
            for _ in range(config.repeats):
                for kind in kinds:
                    mine[kind].append(_timed(partial(ours, kind), barrier))
                if mpi is not None:
                    theirs.append(_timed(raw, barrier))
            # the slowest rank is what everyone waits for
            if theirs:
                theirs = [max(t) for t in zip(*seam.allgather_object(theirs), strict=True)]
            for kind in kinds:
                slowest = [max(t) for t in zip(*seam.allgather_object(mine[kind]), strict=True)]
                rows.append(_row(dtype, nbytes, kind, size, slowest, theirs))
    return {"ranks": size, "controller": "mpi" if hvd.mpi_enabled() else "gloo",
            "config": asdict(config), "rows": rows}


def _bandwidths(nbytes: int, seconds: float, size: int) -> dict[str, float]:
    algbw = nbytes / seconds / 1e9
    return {"seconds": seconds, "algbw_gb_s": algbw, "busbw_gb_s": algbw * 2 * (size - 1) / size}


def _row(dtype: str, nbytes: int, compression: str, size: int, mine: list[float],
         theirs: list[float]) -> dict[str, Any]:
    ours = _bandwidths(nbytes, statistics.median(mine), size)
    row: dict[str, Any] = {"dtype": dtype, "bytes": nbytes, "compression": compression,
                           "hvdtrain": ours, "spread_s": [min(mine), max(mine)]}
    if theirs:
        base = _bandwidths(nbytes, statistics.median(theirs), size)
        row["mpi"] = base
        row["ratio"] = base["seconds"] / ours["seconds"]  # > 1: hvdtrain faster
    return row


def main(argv: list[str]) -> None:
    out, raw = Path(argv[0]), json.loads(argv[1])
    config = AllreduceConfig(tuple(raw["sizes"]), tuple(raw["dtypes"]),
                             tuple(raw["compressions"]), int(raw["repeats"]),
                             int(raw["warmup"]))
    result = measure(config)
    import horovod.torch as hvd

    if hvd.rank() == 0:
        atomic_write_text(out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
