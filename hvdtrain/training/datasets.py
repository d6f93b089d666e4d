"""Built-in data sets and users' files, all returning ``Dataset``.

Built in (no download: everything ships with scikit-learn or is generated):

* ``synthetic`` (default) — *synthetic* 128-feature binary classification from scikit-learn's
  ``make_classification`` (4 clusters per class on hypercube vertices: learnable, non-linear),
  seeded. It is not real data.
* ``digits`` — the real UCI 8×8 handwritten digits bundled with scikit-learn (1797 images).
* ``breast-cancer`` — the real Wisconsin diagnostic set bundled with scikit-learn (569 rows).
* ``synthetic-text`` — *synthetic* sentiment-style sentences (positive/negative words among
  filler), for the transformer.

User files, by extension: ``.csv`` (header row; the label column by name, every other column
numeric), ``.npz`` (arrays ``x`` and ``y``), ``.jsonl`` (objects with ``text`` and ``label``),
read by the one reader of each format in ``hvdtrain.data`` (evaluate and predict use the same):
every problem is a one-line ``DataError`` naming the file and the place. The ranks' loaders
and the launcher's check (``train_launcher.validate``) are the same code; for ``.npz`` the
launcher streams ``x`` from the archive in chunks (``inspect_npz``) instead of loading it.

The names and suffixes are declared in ``catalog.DATASETS`` / ``catalog.DATA_FILES``, whose
targets are the ``Loader`` functions at the end of this module; ``load_dataset`` dispatches
through those registries, with no list of names of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hvdtrain.catalog import DATA_FILES, DATASETS
from hvdtrain.data.jsonl import read_jsonl
from hvdtrain.data.npy import inspect_npz, read_npz
from hvdtrain.data.tabular import read_csv
from hvdtrain.errors import ConfigError, DataError
from hvdtrain.training.sharding import check_sample_count, split_and_standardise
from hvdtrain.types import TEXT_LENGTH, Dataset

# (source, seed, val_fraction, label_column) → Dataset
Loader = Callable[[str, int, float, str], Dataset]

_POSITIVE = ("good", "great", "excellent", "love", "wonderful", "best", "happy", "superb")
_NEGATIVE = ("bad", "awful", "terrible", "hate", "worst", "poor", "sad", "boring")
_FILLER = ("the", "movie", "was", "plot", "actor", "scene", "film", "story", "and", "it",
           "quite", "really", "a", "very")


def encode_texts(texts: list[str], length: int = TEXT_LENGTH) -> np.ndarray:
    """Byte tokens, padded with 0 (byte b becomes token b + 1)."""
    out = np.zeros((len(texts), length), dtype=np.int64)
    for row, text in enumerate(texts):
        data = np.frombuffer(text.encode("utf-8")[:length], dtype=np.uint8).astype(np.int64)
        out[row, : len(data)] = data + 1
    return out


def synthetic(n: int = 16384, features: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n, n_features=features, n_informative=16, n_redundant=16,
        n_clusters_per_class=4, class_sep=2.0, flip_y=0.0, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64)


def synthetic_text(n: int = 4096, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(20_000 + seed)
    texts, labels = [], np.zeros(n, dtype=np.int64)
    for i in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(_FILLER, size=int(rng.integers(4, 8))))
        sentiment = _POSITIVE if label else _NEGATIVE
        for word in rng.choice(sentiment, size=int(rng.integers(1, 3))):
            words.insert(int(rng.integers(len(words) + 1)), str(word))
        texts.append(" ".join(words))
        labels[i] = label
    return texts, labels


def check_data_source(name: str) -> None:
    """Fail before any rank starts when ``--data`` names nothing we can read."""
    if name in DATASETS:
        return
    path = Path(name)
    if path.suffix not in DATA_FILES:
        raise ConfigError(f"unknown data set {name!r}: use one of "
                          f"{', '.join(DATASETS.names())} or a {'/'.join(DATA_FILES.names())} "
                          "file")
    if not path.is_file():
        raise DataError(f"{path}: no such data file",
                        hint="a relative path is taken from the directory hvdtrain runs in; "
                        "ranks on other hosts read it at the same path")


def load_dataset(name: str, seed: int, val_fraction: float,
                 label_column: str = "label") -> Dataset:
    check_data_source(name)
    registry, key = (DATASETS, name) if name in DATASETS else (DATA_FILES, Path(name).suffix)
    loader: Loader = registry.load(key)
    return loader(name, seed, val_fraction, label_column)


# -- the loaders behind catalog.DATASETS and catalog.DATA_FILES ----------------------------
def synthetic_set(name: str, seed: int, val_fraction: float, _label_column: str) -> Dataset:
    x, y = synthetic(seed=seed)
    return split_and_standardise(name, "tabular", x, y, seed, val_fraction)


def digits(name: str, seed: int, val_fraction: float, _label_column: str) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return split_and_standardise(name, "image", bunch.data.astype(np.float32),
                                 bunch.target.astype(np.int64), seed, val_fraction,
                                 image_shape=(1, 8, 8))


def breast_cancer(name: str, seed: int, val_fraction: float, _label_column: str) -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return split_and_standardise(name, "tabular", bunch.data.astype(np.float32),
                                 bunch.target.astype(np.int64), seed, val_fraction)


def synthetic_text_set(name: str, seed: int, val_fraction: float,
                       _label_column: str) -> Dataset:
    texts, labels = synthetic_text(seed=seed)
    return split_and_standardise(name, "text", encode_texts(texts), labels, seed, val_fraction)


def csv_file(name: str, seed: int, val_fraction: float, label_column: str) -> Dataset:
    path = Path(name)
    x, y = read_csv(path, label_column)
    check_sample_count(str(path), len(x))
    return split_and_standardise(path.name, "tabular", x, y, seed, val_fraction)


def npz_file(name: str, seed: int, val_fraction: float, _label_column: str) -> Dataset:
    path = Path(name)
    x, y = read_npz(path)
    check_sample_count(str(path), len(x))
    return split_and_standardise(path.name, "tabular", x, y, seed, val_fraction)


def check_npz_file(name: str, _seed: int, _val_fraction: float, _label_column: str) -> None:
    """The launcher's check of a .npz file: complete, streamed, without loading ``x`` whole."""
    path = Path(name)
    samples, _ = inspect_npz(path)
    check_sample_count(str(path), samples)


def jsonl_file(name: str, seed: int, val_fraction: float, _label_column: str) -> Dataset:
    path = Path(name)
    texts, labels = read_jsonl(path)
    check_sample_count(str(path), len(texts))
    return split_and_standardise(path.name, "text", encode_texts(texts), labels, seed,
                                 val_fraction)
