"""The typed training configuration every rank receives (from CLI options or YAML)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hvdtrain.errors import ConfigError

FRAMEWORKS = ("torch", "tensorflow")
MODELS = ("mlp", "cnn", "transformer")  # or a user's "module.path:factory"
OPTIMIZERS = ("adam", "adamw", "sgd")
COMPRESSIONS = ("none", "fp16")
BUILTIN_DATA = ("synthetic", "digits", "breast-cancer", "synthetic-text")


@dataclass(frozen=True)
class TrainConfig:
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
    keep_checkpoints: int = 3
    resume: str | None = None  # "latest" or a checkpoint path

    def __post_init__(self) -> None:
        checks = [
            (self.framework in FRAMEWORKS, f"--framework must be one of {FRAMEWORKS}"),
            (self.model in MODELS or ":" in self.model,
             f"--model must be one of {MODELS} or 'module.path:factory', got {self.model!r}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}"),
            (self.compression in COMPRESSIONS, f"--compression must be one of {COMPRESSIONS}"),
            (self.lr_scaling in ("linear", "none"), "--lr-scaling must be linear or none"),
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.lr > 0, "--lr must be > 0"),
            (self.grad_accumulation >= 1, "--grad-accumulation must be >= 1"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (self.early_stopping_patience >= 0, "--early-stopping-patience must be >= 0"),
            (self.checkpoint_every >= 0, "--checkpoint-every must be >= 0"),
            (self.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1"),
            (0 < self.val_fraction < 1, "--val-fraction must be between 0 and 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def scaled_lr(self, size: int) -> float:
        return self.lr * size if self.lr_scaling == "linear" else self.lr

    def lr_at(self, epoch_progress: float, size: int) -> float:
        """Gradual warm-up (Goyal et al.) from the base lr to the scaled lr."""
        target = self.scaled_lr(size)
        if self.warmup_epochs <= 0 or epoch_progress >= self.warmup_epochs:
            return target
        return self.lr + (target - self.lr) * epoch_progress / self.warmup_epochs

    def as_json(self) -> dict[str, object]:
        return asdict(self)
