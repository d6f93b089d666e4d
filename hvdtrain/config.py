"""Every training option, typed and validated once: ``TrainConfig``.

The Click options only parse; a YAML file, an ``HVDTRAIN_*`` variable and a flag are checked by
this one class with the same messages, on the launcher and again in each rank. It sits low in
the package (catalog, pretrained and errors below it, no NumPy, no framework) so that
``cluster/``-free commands such as ``plan`` stay light.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hvdtrain import catalog
from hvdtrain.errors import ConfigError
from hvdtrain.pretrained import check_framework, is_pretrained, parse_pretrained


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
    powersgd_rank: int = 4  # --compression powersgd: rank of the low-rank factors
    powersgd_warmup_steps: int = 0  # optimizer steps averaged in full precision first
    # an embedding's gradient as the rows a step touched (comm.sparse_rows; torch)
    sparse_embeddings: str = "auto"
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
        catalog.SPARSE_EMBEDDINGS.get(self.sparse_embeddings)
        if self.sparse_embeddings == "on" and self.framework != "torch":
            raise ConfigError("--sparse-embeddings on is for --framework torch; TensorFlow "
                              "sends embedding gradients whole")
        catalog.LR_SCALINGS.get(self.lr_scaling)
        ranges = [
            ("--epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("--lr", self.lr, self.lr > 0, "> 0"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("--grad-accumulation", self.grad_accumulation, self.grad_accumulation >= 1,
             ">= 1"),
            ("--powersgd-rank", self.powersgd_rank, self.powersgd_rank >= 1, ">= 1"),
            ("--powersgd-warmup-steps", self.powersgd_warmup_steps,
             self.powersgd_warmup_steps >= 0, ">= 0"),
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
