"""THE Horovod seam: every collective hvdtrain performs goes through this package.

``init(framework)`` imports the Horovod binding of the one framework this rank uses
(``horovod.torch`` or ``horovod.tensorflow``) and returns a ``Comm``. Adapters get the raw
module from ``Comm.hvd`` for what only the framework binding can do (DistributedOptimizer,
broadcast of framework state); the loop uses only the framework-neutral methods here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

_BINDINGS = {"torch": "horovod.torch", "tensorflow": "horovod.tensorflow"}


@dataclass
class Comm:
    framework: str
    hvd: ModuleType

    @property
    def rank(self) -> int:
        return int(self.hvd.rank())

    @property
    def size(self) -> int:
        return int(self.hvd.size())

    @property
    def local_rank(self) -> int:
        return int(self.hvd.local_rank())

    def allreduce_sum(self, values: np.ndarray, name: str) -> np.ndarray:
        """Sum a small float64 vector across ranks (metrics, counts)."""
        if self.framework == "torch":
            import torch

            out = self.hvd.allreduce(torch.from_numpy(np.asarray(values, dtype=np.float64)),
                                     op=self.hvd.Sum, name=name)
            return np.asarray(out.numpy())
        import tensorflow as tf

        out = self.hvd.allreduce(tf.constant(values, dtype=tf.float64), op=self.hvd.Sum,
                                 name=name)
        return np.asarray(out.numpy())

    def allgather_object(self, value: Any) -> list[Any]:
        return list(self.hvd.allgather_object(value))

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        return self.hvd.broadcast_object(value, root_rank=root)


def init(framework: str) -> Comm:
    hvd = importlib.import_module(_BINDINGS[framework])
    hvd.init()
    return Comm(framework, hvd)
