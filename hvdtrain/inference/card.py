"""What a checkpoint says about its model, read without a framework: the ``ModelCard``.

Training writes into every checkpoint's metadata the config (``TrainConfig.as_json()``), the
standardisation statistics of the training split and the data's shape (``dataset``: name,
kind, classes, features, image shape). That is enough to rebuild the model and to prepare any
data for it the way training did, with no flags beyond the checkpoint and the data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError
from hvdtrain.training.checkpoint import FORMAT, CheckpointStore, read_checkpoint_meta
from hvdtrain.types import TOKENS, Dataset

NO_SHAPE_HINT = ("this checkpoint was written before checkpoints carried the data's shape; "
                 "train again (or --resume it for one more epoch) to get one that does")


def resolve_checkpoint(given: str) -> Path:
    """A checkpoint file, or a run directory (its newest epoch checkpoint)."""
    path = Path(given)
    if path.is_dir():
        inner = path / "checkpoints"
        newest = CheckpointStore(inner if inner.is_dir() else path).latest()
        if newest is None:
            raise CheckpointError(f"--checkpoint {given}: no checkpoint in this directory",
                                  hint="give a run directory whose checkpoints/ holds "
                                  "epoch-NNNN.ckpt files, or a checkpoint file")
        return newest
    if not path.is_file():
        raise CheckpointError(f"--checkpoint {given}: no such file or run directory",
                              hint="give a checkpoints/epoch-NNNN.ckpt or best.ckpt file, or "
                              "the run directory (its newest checkpoint is used)")
    return path


@dataclass(frozen=True)
class ModelCard:
    path: Path
    framework: str
    config: TrainConfig
    epoch: int
    data_name: str  # as the training run's Dataset named it (a file's base name)
    kind: str  # tabular | image | text | tokens
    num_classes: int
    num_features: int
    image_shape: tuple[int, ...] | None
    mean: np.ndarray | None  # float32, the training split's statistics
    std: np.ndarray | None
    class_names: tuple[str, ...]

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def input_dtype(self) -> str:
        return "int64" if self.kind in ("text", TOKENS) else "float32"

    def stub(self) -> Dataset:
        """An empty data set shaped like the training data: what building the model needs."""
        x = np.zeros((0, self.num_features), dtype=self.input_dtype)
        y = np.zeros(0, dtype=np.int64)
        return Dataset(self.data_name, self.kind, x, y, x, y, self.num_classes,
                       self.image_shape, self.mean, self.std,
                       self.class_names if self.kind == TOKENS else None)

    def describe(self) -> str:
        return (f"{self.framework} {self.config.model} on {self.data_name} "
                f"({self.num_classes} classes, epoch {self.epoch})")


def _float32(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


def card_from_meta(path: Path, meta: dict[str, Any]) -> ModelCard:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an hvdtrain checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    data, raw_config = meta.get("dataset"), meta.get("config")
    if not isinstance(data, dict) or not isinstance(raw_config, dict):
        raise CheckpointError(f"{path}: the checkpoint does not say what data it was trained "
                              "on", hint=NO_SHAPE_HINT)
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in raw_config.items() if k in known})
    standardisation = meta.get("standardisation") or {}
    classes = int(data["num_classes"])
    names = data.get("class_names") or [str(i) for i in range(classes)]
    shape = data.get("image_shape")
    return ModelCard(path, config.framework, config, int(meta.get("epoch", 0)),
                     str(data["name"]), str(data["kind"]), classes, int(data["num_features"]),
                     tuple(int(d) for d in shape) if shape else None,
                     _float32(standardisation.get("mean")), _float32(standardisation.get("std")),
                     tuple(str(n) for n in names))


def load_card(given: str) -> ModelCard:
    """The card of ``--checkpoint`` (file or run directory), checked complete, no framework."""
    path = resolve_checkpoint(given)
    return card_from_meta(path, read_checkpoint_meta(path))
