"""The seam between the framework-free loop and a framework: ``FrameworkAdapter``.

Declared as a ``typing.Protocol`` (not implied by duck typing) so both adapters are checked
against one definition, and one conformance test runs against every registered adapter.
Batches cross the seam as NumPy arrays; metrics come back as plain sums so the loop can reduce
them across ranks with one collective. Checkpoint *files* are the adapter's business (each
framework has its own safe format); where and when they are written is the loop's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hvdtrain.cluster.pinning import DeviceChoice
from hvdtrain.comm import Comm
from hvdtrain.training.config import TrainConfig
from hvdtrain.training.data import Dataset


@dataclass(frozen=True)
class BatchStats:
    loss_sum: float
    correct: int
    count: int


class FrameworkAdapter(Protocol):
    name: str
    comm: Comm
    fp16_recoveries: int

    def pin(self, choice: DeviceChoice) -> None:
        """Use the device the plan chose (GPU id or CPU)."""

    def describe_device(self) -> str:
        """Where this rank computes (cpu, cuda:N, /GPU:N)."""

    def setup(self, config: TrainConfig, data: Dataset) -> None:
        """Build model and optimizer, wrap for Horovod, broadcast from rank 0."""

    def train_batch(self, x: np.ndarray, y: np.ndarray, lr: float) -> BatchStats:
        """One synchronised optimisation step (or accumulation pass) on this rank's batch."""

    def evaluate_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        """Loss and accuracy sums on a batch, no gradient."""

    def parameter_hash(self) -> str:
        """sha256 of all parameters (for 'identical on every rank' checks)."""

    def rng_state(self) -> Any:
        """This rank's framework RNG state (picklable)."""

    def set_rng_state(self, state: Any) -> None: ...

    def write_checkpoint(self, path: Path, meta: dict[str, Any]) -> None:
        """Write model, optimizer and ``meta`` to ``path`` (rank 0)."""

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        """Read a checkpoint safely; ``CheckpointError`` for a corrupt or foreign file."""

    def apply_checkpoint(self, payload: dict[str, Any]) -> None:
        """Load model and optimizer state from a payload of ``read_checkpoint`` (rank 0)."""

    def broadcast_state(self) -> None:
        """Broadcast model and optimizer state from rank 0 to every rank."""
