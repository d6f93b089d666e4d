"""Splitting, standardising and sharding: identical on every rank, whatever the rank count.

Every rank builds the same arrays from the same seed (cheap at these sizes) and then takes its
own shard, so no rank needs another's files and the split never depends on the rank count.
Tabular features are standardised with statistics of the *training* split only; those
statistics travel with checkpoints. Readers for built-in sets and user files live in
``datasets``; the ``Dataset`` container is a neutral type (``hvdtrain.types``).
"""

from __future__ import annotations

import math

import numpy as np

from hvdtrain.errors import DataError
from hvdtrain.types import Dataset

MIN_SAMPLES = 4  # at least one to validate on and a few to train on


def check_sample_count(name: str, n: int) -> None:
    if n < MIN_SAMPLES:
        raise DataError(f"{name}: only {n} samples; need at least {MIN_SAMPLES} to train and "
                        "validate", hint="--val-fraction of them are held out for validation")


def split_and_standardise(name: str, kind: str, x: np.ndarray, y: np.ndarray, seed: int,
                          val_fraction: float, image_shape: tuple[int, ...] | None = None
                          ) -> Dataset:
    check_sample_count(name, len(x))
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = min(max(1, round(len(x) * val_fraction)), len(x) - 1)
    val, train = order[:n_val], order[n_val:]
    classes = max(int(y.max()) + 1, 2)
    if kind == "text":
        return Dataset(name, kind, x[train], y[train], x[val], y[val], classes)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow: reported just below
        mean = x[train].mean(axis=0).astype(np.float32)
        std = x[train].std(axis=0).astype(np.float32)
    std[std == 0] = 1.0  # constant columns (e.g. border pixels of digits)
    overflow = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
    if overflow.size:  # values near float32's limit: their mean or spread is not finite
        raise DataError(f"{name}: feature {int(overflow[0])} is too large to standardise "
                        "(its mean or standard deviation overflows float32)",
                        hint="rescale that column before training")

    def standardise(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    return Dataset(name, kind, standardise(x[train]), y[train], standardise(x[val]), y[val],
                   classes, image_shape, mean, std)


def shard_batches(n: int, rank: int, size: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """This rank's batches for one epoch: a disjoint shard, same step count on every rank.

    All ranks draw the same permutation, rank r takes every size-th index from r; the shard is
    cut into ``ceil(ceil(n/size)/batch_size)`` batches on every rank (uneven step counts are
    Horovod's classic hang), so each sample is used exactly once per epoch across ranks. With
    ``n`` divisible by ``size × batch_size``, step k of all ranks together is exactly batch k
    of a single rank with batch ``size × batch_size`` (the equivalence the tests check).
    """
    order = np.random.default_rng(seed).permutation(n)
    shard = order[rank::size]
    steps = math.ceil(math.ceil(n / size) / batch_size)
    return list(np.array_split(shard, steps))


def eval_shard(n: int, rank: int, size: int) -> np.ndarray:
    """Contiguous, disjoint evaluation shard; the sums are reduced, so unequal sizes are fine."""
    return np.array_split(np.arange(n), size)[rank]
