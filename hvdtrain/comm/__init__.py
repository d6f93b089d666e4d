"""THE Horovod seam: every collective hvdtrain performs goes through this package.

``init(binding, to_tensor)`` imports the Horovod binding of the one framework this rank uses
(``horovod.torch`` or ``horovod.tensorflow``, named by that framework's adapter) and returns a
``Comm``. The only framework-specific piece the neutral collectives need is how to turn a NumPy
vector into that framework's tensor, and the adapter hands that in (``to_tensor``): no
``if framework ==`` here. Adapters use the raw module ``Comm.hvd`` for what only the binding can
do (DistributedOptimizer, broadcast of framework state); the loop sees only ``Collectives``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np


@dataclass
class Comm:
    hvd: ModuleType
    to_tensor: Callable[[np.ndarray], Any]  # NumPy → this framework's tensor

    @property
    def rank(self) -> int:
        return int(self.hvd.rank())

    @property
    def size(self) -> int:
        return int(self.hvd.size())

    @property
    def local_rank(self) -> int:
        return int(self.hvd.local_rank())

    @property
    def local_size(self) -> int:
        return int(self.hvd.local_size())

    def allreduce_sum(self, values: np.ndarray, name: str) -> np.ndarray:
        """Sum a small float64 vector across ranks (metrics, counts)."""
        tensor = self.to_tensor(np.asarray(values, dtype=np.float64))
        out = self.hvd.allreduce(tensor, op=self.hvd.Sum, name=name)
        return np.asarray(out.numpy())

    def allgather_object(self, value: Any) -> list[Any]:
        return list(self.hvd.allgather_object(value))

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        return self.hvd.broadcast_object(value, root_rank=root)

    def reinitialise(self) -> None:
        """Horovod elastic's reset: leave the old ranks, join the new set (rank and size
        change; every property above reads them afresh)."""
        self.hvd.shutdown()
        self.hvd.init()


# Horovod's background thread starts the collectives queued since its last cycle every
# HOROVOD_CYCLE_TIME ms (Horovod's default: 1). hvdtrain's default, measured with
# scripts/bench_compare_launches.py (docs/BENCHMARKS.md, "Cycle time"): 0.2 ms gave the
# default 2-rank job 1.36x the samples/s of 1 ms on one host and 1.15x between two hosts
# over a 1 Gbit/s link, and changed nothing measurable on a 30 ms step. A value the user set
# wins (the launchers' --cycle-time-ms sets the variable); with autotune Horovod tunes it
# itself.
DEFAULT_CYCLE_TIME_MS = "0.2"


def horovod_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """hvdtrain's Horovod settings, for variables the user left unset; before ``hvd.init``."""
    if "HOROVOD_CYCLE_TIME" not in environ and environ.get("HOROVOD_AUTOTUNE") != "1":
        environ["HOROVOD_CYCLE_TIME"] = DEFAULT_CYCLE_TIME_MS


def init(binding: str, to_tensor: Callable[[np.ndarray], Any]) -> Comm:
    """Import and initialise Horovod's ``binding`` module (e.g. ``horovod.torch``)."""
    hvd = importlib.import_module(binding)
    horovod_defaults()
    hvd.init()
    return Comm(hvd, to_tensor)
