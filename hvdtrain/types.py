"""The neutral types that adapters implement and the training loop consumes.

They sit below both ``frameworks/`` and ``training/`` so that neither has to import the other
(Keras 3's ``backend/common`` plays the same part for its backends): the loop sees a
``FrameworkAdapter`` and a ``Collectives``; an adapter sees a ``TrainConfig``, a ``Dataset``
and a ``DeviceChoice``. ``TrainConfig`` is the single validator of training options: the Click
options only parse, so a YAML file, an ``HVDTRAIN_*`` variable and a flag are checked by the
same code with the same messages.

Nothing here imports NumPy at run time (only for type checking), so ``cluster/`` can use
``DeviceChoice`` and ``hvdtrain plan`` stays free of heavy imports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hvdtrain import catalog
from hvdtrain.errors import ConfigError
from hvdtrain.pretrained import check_framework, is_pretrained, parse_pretrained

if TYPE_CHECKING:
    import numpy as np

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


def is_user_model(name: str) -> bool:
    """``module.path:factory`` names a user's model factory (``hf:``/``keras-hub:`` name a
    pretrained model instead)."""
    return ":" in name and not is_pretrained(name)


@dataclass(frozen=True)
class TrainConfig:
    """Every training option, typed and validated once (on the launcher and in each rank)."""

    framework: str = "torch"
    model: str = "mlp"
    data: str = "synthetic"
    label_column: str = "label"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_scaling: str = "linear"
    warmup_epochs: float = 0.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    compression: str = "none"
    grad_accumulation: int = 1
    seed: int = 42
    val_fraction: float = 0.2
    early_stopping_patience: int = 0  # 0 = off
    run_dir: str = "runs/latest"
    checkpoint_every: int = 1  # epochs; 0 = never
    checkpoint_every_steps: int = 0  # steps, within an epoch; 0 = only at epoch ends
    keep_checkpoints: int = 3
    resume: str | None = None  # "latest", "auto" (latest if any, else start) or a path
    on_nonfinite: str = "stop"  # stop | skip (catalog.ON_NONFINITE)
    log_every_seconds: float = 30.0  # a progress line this often when not on a terminal
    # text files for pretrained language models (hvdtrain.pretrained)
    text_column: str = "text"
    text_pair_column: str | None = None
    max_length: int = 128  # tokens; longer texts are truncated
    # the fine-tuning recipe (any model)
    lr_schedule: str = "constant"  # catalog.LR_SCHEDULES, per optimizer step
    warmup_steps: int = 0  # optimizer steps of linear warm-up from 0 (or --warmup-ratio)
    warmup_ratio: float = 0.0  # of all training steps
    clip_grad_norm: float = 0.0  # global norm of the averaged gradient; 0 = off
    precision: str = "fp32"  # catalog.PRECISIONS
    freeze_embeddings: bool = False
    freeze_layers: int = 0  # the first K blocks of a pretrained model

    def __post_init__(self) -> None:
        catalog.FRAMEWORKS.get(self.framework)
        catalog.ON_NONFINITE.get(self.on_nonfinite)
        pretrained = parse_pretrained(self.model)
        if pretrained is not None:
            check_framework(pretrained, self.framework)
        elif not is_user_model(self.model):
            catalog.MODELS.get(self.model)
        catalog.LR_SCHEDULES.get(self.lr_schedule)
        catalog.PRECISIONS.get(self.precision)
        if self.warmup_steps and self.warmup_ratio:
            raise ConfigError("give --warmup-steps or --warmup-ratio, not both")
        if (self.freeze_embeddings or self.freeze_layers) and pretrained is None:
            raise ConfigError("--freeze-embeddings/--freeze-layers apply to a pretrained "
                              f"model (hf:DIR or keras-hub:DIR), not --model {self.model}")
        catalog.OPTIMIZERS.get(self.optimizer)
        catalog.COMPRESSIONS.get(self.compression)
        catalog.LR_SCALINGS.get(self.lr_scaling)
        ranges = [
            ("--epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("--lr", self.lr, self.lr > 0, "> 0"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("--grad-accumulation", self.grad_accumulation, self.grad_accumulation >= 1,
             ">= 1"),
            ("--warmup-epochs", self.warmup_epochs, self.warmup_epochs >= 0, ">= 0"),
            ("--early-stopping-patience", self.early_stopping_patience,
             self.early_stopping_patience >= 0, ">= 0"),
            ("--checkpoint-every", self.checkpoint_every, self.checkpoint_every >= 0, ">= 0"),
            ("--checkpoint-every-steps", self.checkpoint_every_steps,
             self.checkpoint_every_steps >= 0, ">= 0"),
            ("--keep-checkpoints", self.keep_checkpoints, self.keep_checkpoints >= 1, ">= 1"),
            ("--val-fraction", self.val_fraction, 0 < self.val_fraction < 1,
             "between 0 and 1 (exclusive)"),
            ("--log-every-seconds", self.log_every_seconds, self.log_every_seconds >= 0,
             ">= 0"),
            ("--max-length", self.max_length, self.max_length >= 2, ">= 2"),
            ("--warmup-steps", self.warmup_steps, self.warmup_steps >= 0, ">= 0"),
            ("--warmup-ratio", self.warmup_ratio, 0 <= self.warmup_ratio < 1,
             "at least 0 and below 1"),
            ("--clip-grad-norm", self.clip_grad_norm, self.clip_grad_norm >= 0, ">= 0"),
            ("--freeze-layers", self.freeze_layers, self.freeze_layers >= 0, ">= 0"),
        ]
        for flag, value, ok, rule in ranges:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{flag} must be a finite number, got {value}")
            if not ok:
                raise ConfigError(f"{flag} must be {rule}, got {value}")

    def scaled_lr(self, size: int) -> float:
        return self.lr * size if self.lr_scaling == "linear" else self.lr

    def lr_at(self, epoch_progress: float, size: int, steps_per_epoch: int = 0) -> float:
        """The lr after ``epoch_progress`` epochs (fractional: per step). Gradual warm-up
        (Goyal et al.) from the base lr to the scaled lr over ``--warmup-epochs``; or the
        fine-tuning schedule: linear warm-up from 0 over ``--warmup-steps`` optimizer steps
        (``steps_per_epoch`` of them an epoch) or ``--warmup-ratio`` of the run, then
        ``--lr-schedule`` decay (constant, linear or cosine to 0 at the last step)."""
        target = self.scaled_lr(size)
        if 0 < epoch_progress < self.warmup_epochs:
            return self.lr + (target - self.lr) * epoch_progress / self.warmup_epochs
        warm = self.warmup_ratio * self.epochs
        if self.warmup_steps and steps_per_epoch:
            warm = self.warmup_steps / steps_per_epoch
        if epoch_progress < warm:
            return target * epoch_progress / warm
        if self.lr_schedule == "constant":
            return target
        left = max(0.0, 1.0 - (epoch_progress - warm) / max(self.epochs - warm, 1e-12))
        if self.lr_schedule == "linear":
            return target * left
        return target * 0.5 * (1.0 + math.cos(math.pi * (1.0 - left)))

    def as_json(self) -> dict[str, object]:
        return asdict(self)
