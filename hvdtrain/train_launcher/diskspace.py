"""Will the checkpoints fit? An estimate the launcher makes before any rank starts.

A run directory on a small filesystem fills up at a checkpoint write; the run then stops
cleanly (exit 7, ``CheckpointStore.write_failed``), but only after the time spent training up
to there. So the launcher estimates, without a framework and in milliseconds, what the
checkpoints will take at their peak and says so when the filesystem has less free.

One checkpoint's size: that of the checkpoint resumed from, when there is one (exact); else
the built-in model's parameter count, from the layer sizes its builders use
(``frameworks/*/models.py``; a test compares the count with torch's), times 4 bytes, times 1 +
the optimizer's slots (Adam keeps two moments, SGD one momentum), plus the metadata. A user's
model is not built on this host for this (the model check builds it in a subprocess and says
nothing of its size), so it gets no estimate, and no note, until it has a checkpoint.

The peak: the retention writes the next epoch checkpoint before it deletes the oldest of the
``--keep-checkpoints`` kept, ``best.ckpt`` is written again beside them (the new one is
complete before the old one goes), and ``--checkpoint-every-steps`` keeps one step checkpoint.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from hvdtrain.atomic import free_bytes, human_bytes
from hvdtrain.catalog import DATASETS
from hvdtrain.config import TrainConfig
from hvdtrain.training.datasets import inspect_npz
from hvdtrain.types import TEXT_LENGTH, TEXT_VOCAB

META_BYTES = 64 * 1024  # the metadata: config, every rank's RNG state, a sampler mask
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}  # float32 values kept per parameter
ImageShape = tuple[int, ...]  # (channels, height, width)
# (features, image shape, outputs) of the built-in data sets; a test checks the loaders agree
BUILTIN_INPUTS: dict[str, tuple[int, ImageShape | None, int]] = {
    "synthetic": (128, None, 1),
    "digits": (64, (1, 8, 8), 10),
    "breast-cancer": (30, None, 1),
    "synthetic-text": (TEXT_LENGTH, None, 1),
}


def _dense(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def parameter_count(model: str, features: int, image_shape: ImageShape | None,
                    outputs: int) -> int | None:
    """The built-in model's parameters (``catalog.MODELS``); None for a user's model."""
    if model == "mlp":
        return _dense(features, 256) + _dense(256, 256) + _dense(256, outputs)
    if model == "cnn" and image_shape is not None:
        channels, height, width = image_shape
        return (9 * channels * 32 + 32 + 9 * 32 * 64 + 64
                + _dense(64 * (height // 2) * (width // 2), 128) + _dense(128, outputs))
    if model == "transformer":
        width = 64
        layer = (3 * _dense(width, width) + _dense(width, width)  # attention: qkv, output
                 + _dense(width, 128) + _dense(128, width) + 4 * width)  # feed-forward, norms
        return TEXT_VOCAB * width + TEXT_LENGTH * width + 2 * layer + _dense(width, outputs)
    return None


def input_shape(config: TrainConfig) -> tuple[int, ImageShape | None, int] | None:
    """(features, image shape, outputs) without loading the data: a built-in set's are known,
    a CSV's header and an npz's array header say them (outputs: 1, the head is small)."""
    if config.data in DATASETS:
        return BUILTIN_INPUTS.get(config.data)
    path = Path(config.data)
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                return len(next(csv.reader(handle), [])) - 1, None, 1
        if path.suffix == ".npz":
            return math.prod(inspect_npz(path)[1]), None, 1
    except (OSError, ValueError):
        return None
    if path.suffix == ".jsonl":
        return TEXT_LENGTH, None, 1
    return None


def checkpoint_bytes(config: TrainConfig, resume_from: Path | None = None) -> int | None:
    """About how large one checkpoint of this run is; None when it cannot be told cheaply."""
    if resume_from is not None:
        try:
            return resume_from.stat().st_size
        except OSError:
            pass
    shape = input_shape(config)
    count = parameter_count(config.model, *shape) if shape else None
    if count is None:
        return None
    return 4 * count * (1 + OPTIMIZER_SLOTS.get(config.optimizer, 2)) + META_BYTES


def peak_checkpoints(config: TrainConfig) -> int:
    """How many checkpoint files the run directory may hold at once (0: none written)."""
    if not config.checkpoint_every and not config.checkpoint_every_steps:
        return 0  # only a stop on request writes one
    written = math.ceil(config.epochs / config.checkpoint_every) if config.checkpoint_every else 1
    # kept epoch files and the next one, best.ckpt and its replacement, the newest step file
    return (min(config.keep_checkpoints + 1, written) + 2
            + (1 if config.checkpoint_every_steps else 0))


def space_note(config: TrainConfig, run_dir: Path, resume_from: Path | None = None
               ) -> str | None:
    """A note when the run directory's filesystem cannot hold the checkpoints, else None."""
    size = checkpoint_bytes(config, resume_from)
    files = peak_checkpoints(config)
    free = free_bytes(run_dir)
    if size is None or not files or free is None:
        return None
    # the run's own checkpoints (resuming) are part of the peak, not in its way
    existing = sum(p.stat().st_size for p in (run_dir / "checkpoints").glob("*.ckpt")
                   if p.is_file()) if (run_dir / "checkpoints").is_dir() else 0
    need = files * size
    if need <= free + existing:
        return None
    return (f"warning: low disk space: {run_dir} has {human_bytes(free)} free, but its "
            f"checkpoints may take about {human_bytes(need)} at once ({files} files of about "
            f"{human_bytes(size)}: --keep-checkpoints {config.keep_checkpoints}, best.ckpt and "
            "the one being written); training stops with exit 7 when the disk is full: free "
            "space, lower --keep-checkpoints or choose a --run-dir on a larger filesystem")
