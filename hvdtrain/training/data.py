"""Data sets as NumPy arrays, split and standardised identically on every rank.

Every rank builds the same arrays from the same seed (cheap at these sizes) and then takes its
own shard, so no rank needs to read another's files and the split never depends on rank count.
Built-in sets:

* ``synthetic`` — seeded, *synthetic* 128-feature binary classification from scikit-learn's
  ``make_classification`` (several clusters per class: learnable, non-linear). Not real data.
* ``digits`` — scikit-learn's bundled copy of the UCI 8×8 handwritten digits (1797 images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hvdtrain.errors import DataError

BUILTIN = ("synthetic", "digits")


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int  # 2 = binary (one sigmoid output)
    image_shape: tuple[int, ...] | None = None  # (channels, h, w) for image sets

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def synthetic(n: int = 16384, features: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    # scikit-learn's generator: 4 Gaussian clusters per class on hypercube vertices in 16
    # informative dimensions (+16 redundant, 96 noise) - learnable, but not linearly.
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n, n_features=features, n_informative=16, n_redundant=16,
        n_clusters_per_class=4, class_sep=2.0, flip_y=0.0, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def load_dataset(name: str, seed: int, val_fraction: float) -> Dataset:
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if name == "synthetic":
        x, y = synthetic(seed=seed)
        image_shape = None
    elif name == "digits":
        x, y = _digits()
        image_shape = (1, 8, 8)
    else:
        raise DataError(f"unknown data set {name!r} (built in: {', '.join(BUILTIN)})")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, round(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant pixels in digits
    standardise = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    classes = int(y.max()) + 1
    return Dataset(name, standardise(x[train]), y[train], standardise(x[val]), y[val],
                   classes, image_shape)


def shard_batches(n: int, rank: int, size: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """This rank's batches for one epoch: a disjoint shard, same step count on every rank.

    All ranks draw the same permutation, rank r takes every size-th index from r; the shard is
    cut into ``ceil(ceil(n/size)/batch_size)`` batches on every rank (uneven step counts are
    Horovod's classic hang), so each sample is used exactly once per epoch across ranks.
    """
    order = np.random.default_rng(seed).permutation(n)
    shard = order[rank::size]
    per_rank = math.ceil(n / size)
    steps = math.ceil(per_rank / batch_size)
    return list(np.array_split(shard, steps))


def eval_shard(n: int, rank: int, size: int) -> np.ndarray:
    """Contiguous, disjoint evaluation shard; the sums are reduced, so unequal sizes are fine."""
    return np.array_split(np.arange(n), size)[rank]
