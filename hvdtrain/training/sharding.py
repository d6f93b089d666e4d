"""Splitting, standardising and sharding: identical on every rank, whatever the rank count.

Every rank builds the same arrays from the same seed (cheap at these sizes) and then takes its
own shard, so no rank needs another's files and the split never depends on the rank count.
Tabular features are standardised with statistics of the *training* split only; those
statistics travel with checkpoints. The built-in sets live in ``datasets``, the readers of
users' files in ``hvdtrain.data``; the ``Dataset`` container is a neutral type
(``hvdtrain.types``).
"""

from __future__ import annotations

import base64
import math
import zlib

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


def shard_batches(n: int, rank: int, size: int, batch_size: int, seed: int,
                  consumed: np.ndarray | None = None) -> list[np.ndarray]:
    """This rank's batches for one epoch: a disjoint shard, same step count on every rank.

    All ranks draw the same permutation, rank r takes every size-th index from r; the shard is
    cut into ``ceil(floor(n/size)/batch_size)`` batches on every rank (uneven step counts are
    Horovod's classic hang), so each sample is used exactly once per epoch across ranks. With
    ``n`` divisible by ``size × batch_size``, step k of all ranks together is exactly batch k
    of a single rank with batch ``size × batch_size`` (the equivalence the tests check).

    ``consumed`` (a boolean mask over the ``n`` samples, from a mid-epoch checkpoint) leaves
    out the samples the interrupted epoch already trained on: the rest, in the epoch's own
    order, is sharded over *this* world size, which may differ from the one that wrote it.
    """
    order = np.random.default_rng(seed).permutation(n)
    if consumed is not None:
        order = order[~consumed[order]]
    shard = order[rank::size]
    if len(order) == 0:
        return []
    return list(np.array_split(shard, batch_count(len(order), size, batch_size)))


def batch_count(n: int, size: int, batch_size: int) -> int:
    """Each rank's number of batches for ``n`` samples (``n`` > 0): as many as the *shortest*
    shard can fill, so no rank gets an empty batch (some batches are then one sample larger);
    with fewer samples than ranks, one step in which some ranks train on nothing (their zero
    gradient still joins the allreduce). The same on every rank."""
    return max(1, math.ceil((n // size) / batch_size))


def consumed_after(n: int, size: int, batch_size: int, seed: int,
                   consumed: np.ndarray | None, steps_done: int) -> np.ndarray:
    """The epoch's consumed-sample mask after ``steps_done`` steps of every rank (each rank
    can compute every other's shard, so rank 0 knows the whole set without a collective)."""
    mask = np.zeros(n, dtype=bool) if consumed is None else consumed.copy()
    for rank in range(size):
        for batch in shard_batches(n, rank, size, batch_size, seed, consumed)[:steps_done]:
            mask[batch] = True
    return mask


def encode_mask(mask: np.ndarray) -> str:
    """A consumed-sample mask as text for a checkpoint's JSON metadata (n/8 bytes, deflated)."""
    return base64.b64encode(zlib.compress(np.packbits(mask).tobytes())).decode("ascii")


def decode_mask(text: str, n: int) -> np.ndarray:
    bits = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)
    return np.unpackbits(bits, count=n).astype(bool)


def eval_shard(n: int, rank: int, size: int) -> np.ndarray:
    """Contiguous, disjoint evaluation shard; the sums are reduced, so unequal sizes are fine."""
    return np.array_split(np.arange(n), size)[rank]
