"""Built-in data sets and readers for users' files, all returning ``Dataset``.

Built in (no download: everything ships with scikit-learn or is generated):

* ``synthetic`` (default) — *synthetic* 128-feature binary classification from scikit-learn's
  ``make_classification`` (4 clusters per class on hypercube vertices: learnable, non-linear),
  seeded. It is not real data.
* ``digits`` — the real UCI 8×8 handwritten digits bundled with scikit-learn (1797 images).
* ``breast-cancer`` — the real Wisconsin diagnostic set bundled with scikit-learn (569 rows).
* ``synthetic-text`` — *synthetic* sentiment-style sentences (positive/negative words among
  filler), for the transformer.

User files, by extension: ``.csv`` (header row; the label column by name, every other column
numeric), ``.npz`` (arrays ``x`` and ``y``), ``.jsonl`` (objects with ``text`` and ``label``).
Every problem is a one-line ``DataError`` naming the file and what is wrong.

The names and suffixes are declared in ``catalog.DATASETS`` / ``catalog.DATA_FILES``, whose
targets are the ``Loader`` functions at the end of this module; ``load_dataset`` dispatches
through those registries, with no list of names of its own.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hvdtrain.catalog import DATA_FILES, DATASETS
from hvdtrain.errors import DataError
from hvdtrain.training.sharding import split_and_standardise
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


def _labels_as_ints(raw: list[str], path: Path) -> np.ndarray:
    try:
        return np.array([int(float(v)) for v in raw], dtype=np.int64)
    except ValueError:
        classes = sorted(set(raw))  # string labels: classes in sorted order
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[v] for v in raw], dtype=np.int64)


def read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{path}: no label column {label_column!r} (columns: "
                        f"{', '.join(header)}); choose one with --label-column")
    label_at = header.index(label_column)
    features, labels = [], []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: {len(row)} values, header has {len(header)}")
        try:
            features.append([float(v) for i, v in enumerate(row) if i != label_at])
        except ValueError:
            raise DataError(f"{path}:{number}: non-numeric feature value in {row!r}") from None
        labels.append(row[label_at].strip())
    if not features or not features[0]:
        raise DataError(f"{path}: no feature columns besides {label_column!r}")
    return np.array(features, dtype=np.float32), _labels_as_ints(labels, path)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DataError(f"{path}: needs arrays 'x' and 'y' (has {', '.join(archive)})")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: x must be (n, features...) and y (n,), got {x.shape} and "
                        f"{y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(f"{path}: y must hold non-negative integer class ids")
    return x.reshape(len(x), -1).astype(np.float32), y.astype(np.int64)


def read_jsonl(path: Path) -> tuple[list[str], np.ndarray]:
    texts, raw = [], []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise DataError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(item, dict) or "text" not in item or "label" not in item:
            raise DataError(f"{path}:{number}: each line needs 'text' and 'label'")
        texts.append(str(item["text"]))
        raw.append(str(item["label"]))
    if not texts:
        raise DataError(f"{path}: no samples")
    return texts, _labels_as_ints(raw, path)


def check_data_source(name: str) -> None:
    """Fail before any rank starts when ``--data`` names nothing we can read."""
    if name in DATASETS:
        return
    path = Path(name)
    if path.suffix not in DATA_FILES:
        raise DataError(f"unknown data set {name!r}: use one of {', '.join(DATASETS.names())} "
                        f"or a {'/'.join(DATA_FILES.names())} file")
    if not path.is_file():
        raise DataError(f"{path}: no such data file")


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
    return split_and_standardise(path.name, "tabular", x, y, seed, val_fraction)


def npz_file(name: str, seed: int, val_fraction: float, _label_column: str) -> Dataset:
    path = Path(name)
    x, y = read_npz(path)
    return split_and_standardise(path.name, "tabular", x, y, seed, val_fraction)


def jsonl_file(name: str, seed: int, val_fraction: float, _label_column: str) -> Dataset:
    path = Path(name)
    texts, labels = read_jsonl(path)
    return split_and_standardise(path.name, "text", encode_texts(texts), labels, seed,
                                 val_fraction)
