"""The seam between the framework-free loop and a framework: ``FrameworkAdapter``.

Declared as a ``typing.Protocol`` (not implied by duck typing) so both adapters are checked
against one definition, and one conformance test runs against every registered adapter.
Batches cross the seam as NumPy arrays; metrics come back as plain sums so the loop can
reduce them across ranks with one collective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hvdtrain.training.config import TrainConfig
from hvdtrain.training.data import Dataset


@dataclass(frozen=True)
class BatchStats:
    loss_sum: float
    correct: int
    count: int


class FrameworkAdapter(Protocol):
    name: str

    def setup(self, config: TrainConfig, data: Dataset) -> None:
        """Build model and optimizer, wrap for Horovod, broadcast from rank 0."""

    def train_batch(self, x: np.ndarray, y: np.ndarray, lr: float) -> BatchStats:
        """One synchronised optimisation step on this rank's batch."""

    def evaluate_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        """Loss and accuracy sums on a batch, no gradient."""

    def parameter_hash(self) -> str:
        """sha256 of all trainable parameters (for 'identical on every rank' checks)."""

    def describe_device(self) -> str:
        """Where this rank computes (cpu, cuda:N)."""
