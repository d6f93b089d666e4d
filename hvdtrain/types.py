"""The neutral types that adapters implement and the training loop consumes.

They sit below both ``frameworks/`` and ``training/`` so that neither has to import the other
(Keras 3's ``backend/common`` plays the same part for its backends): the loop sees a
``FrameworkAdapter`` and a ``Collectives``; an adapter sees a ``TrainConfig`` (the validated
options, in ``hvdtrain/config.py``), a ``Dataset`` and a ``DeviceChoice``.

Nothing here imports NumPy at run time (only for type checking), so ``cluster/`` can use
``DeviceChoice`` and ``hvdtrain plan`` stays free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from hvdtrain.config import TrainConfig

TEXT_LENGTH = 64  # byte tokens per text sample (0 = padding, byte b -> b + 1)
# Dataset.kind of text tokenized by a pretrained model's own tokenizer: rows are packed token
# arrays (ids, attention mask, token types), see frameworks/torch/pretrained.py
TOKENS = "tokens"
TEXT_VOCAB = 257


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # "cuda" or "cpu"
    index: int | None
    message: str
    mismatch: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Train and validation arrays, already split and standardised (same on every rank)."""

    name: str
    kind: str  # tabular | image | text | tokens
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int  # 2 = binary (one sigmoid output), k > 2 = k logits
    image_shape: tuple[int, ...] | None = None  # (channels, h, w) for image sets
    mean: np.ndarray | None = None  # standardisation statistics of the training split
    std: np.ndarray | None = None
    label_names: tuple[str, ...] | None = None  # class id i is label_names[i] (text files)

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes


@dataclass(frozen=True)
class BatchStats:
    loss_sum: float
    correct: int
    count: int
    # The synchronised (allreduced) gradient of this step was NaN/inf, so the adapter did not
    # apply it. Identical on every rank: a rank whose own loss is non-finite poisons its
    # gradient, and the allreduce carries that to all. Only set on a step that applies an
    # update (the last pass of a gradient accumulation).
    nonfinite: bool = False


class Collectives(Protocol):
    """What the loop needs of Horovod; ``comm.Comm`` implements it."""

    @property
    def rank(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def local_rank(self) -> int: ...

    @property
    def local_size(self) -> int: ...

    def allreduce_sum(self, values: np.ndarray, name: str) -> np.ndarray:
        """Sum a small float64 vector across ranks (metrics, counts)."""

    def allgather_object(self, value: Any) -> list[Any]: ...

    def broadcast_object(self, value: Any, root: int = 0) -> Any: ...


class FrameworkAdapter(Protocol):
    """The seam between the framework-free loop and one framework.

    Declared (not implied by duck typing) so both adapters are checked against one definition,
    and one conformance test runs against every registered adapter. Batches cross the seam as
    NumPy arrays; metrics come back as plain sums so the loop can reduce them across ranks with
    one collective. Checkpoint *files* are the adapter's business (each framework has its own
    safe format); where and when they are written is the loop's.
    """

    name: str
    comm: Collectives
    fp16_recoveries: int

    def pin(self, choice: DeviceChoice) -> None:
        """Use the device the plan chose (GPU id or CPU)."""

    def describe_device(self) -> str:
        """Where this rank computes (cpu, cuda:N, /GPU:N)."""

    def setup(self, config: TrainConfig, data: Dataset, broadcast: bool = True) -> None:
        """Build model and optimizer, wrap for Horovod, broadcast from rank 0 (not under
        Horovod elastic, ``broadcast=False``: its state's sync broadcasts, and a collective
        before it would deadlock a rank that joins a running job)."""

    def train_batch(self, x: np.ndarray, y: np.ndarray, lr: float) -> BatchStats:
        """One synchronised optimisation step (or accumulation pass) on this rank's batch.

        A step whose synchronised gradient is not finite (or whose loss is not finite on any
        rank) is never applied, on any rank; it comes back with ``nonfinite=True``."""

    def finish_accumulation(self) -> bool | None:
        """Apply the pending passes of a gradient accumulation cut short (an epoch whose
        batch count is not a multiple of ``--grad-accumulation``; the same on every rank) as
        one step on the mean of those passes, so no half-accumulated gradient crosses an
        epoch's end (where a checkpoint could not hold it). ``None`` when no pass is pending,
        else whether that step was non-finite and so not applied (as ``train_batch``)."""

    def parameters_finite(self) -> bool:
        """Every parameter is finite (checked before a checkpoint is written)."""

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

    def snapshot(self) -> Any:
        """A copy, in memory, of model and optimizer state (Horovod elastic's commit)."""

    def restore_snapshot(self, snapshot: Any) -> None:
        """Return to a ``snapshot`` (after a failed step), with no step half-done."""


class OfflineFramework(Protocol):
    """What the launcher's checks need of a framework without Horovod: build the model for the
    data and run it once, read a checkpoint and check it fits the model.

    The launching host runs these in a subprocess (``train_launcher.modelcheck``), so the CLI never
    imports a framework; ``read_meta`` runs in the CLI itself and must not import one (the
    module defining an ``OfflineFramework`` imports its framework only inside methods). The
    adapters use the same functions, so the launcher's check and the ranks cannot disagree.
    """

    name: str

    def available(self) -> str | None:
        """``None`` when the framework imports here, else why it does not."""

    def build(self, config: TrainConfig, data: Dataset) -> Any:
        """The model ``config.model`` for ``data`` (built-in or a user's factory)."""

    def output_shape(self, model: Any, x: np.ndarray) -> tuple[int, ...]:
        """The shape of the model's output on the batch ``x`` (inference mode)."""

    def read_meta(self, path: Path) -> dict[str, Any]:
        """A checkpoint's metadata (format, epoch, config), read without the framework."""

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        """A checkpoint's full payload; ``CheckpointError`` for a corrupt or foreign file."""

    def check_checkpoint_fits(self, model: Any, payload: dict[str, Any]) -> None:
        """``CheckpointError`` unless the payload's weights load into ``model``."""
