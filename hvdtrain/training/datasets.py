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
Every problem is a one-line ``DataError`` naming the file and the place (``file:line`` and the
column, or ``x[i, j]``) and what is wrong: a value that is not a number, NaN or infinite (or
beyond float32), ragged rows, missing keys, labels that are neither class ids ``0..k-1`` nor
names. The ranks' readers and the launcher's check (``train_launcher.validate``) are the same code;
for ``.npz`` the launcher streams ``x`` from the archive in chunks (``inspect_npz``) instead of
loading it.

The names and suffixes are declared in ``catalog.DATASETS`` / ``catalog.DATA_FILES``, whose
targets are the ``Loader`` functions at the end of this module; ``load_dataset`` dispatches
through those registries, with no list of names of its own.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from hvdtrain.catalog import DATA_FILES, DATASETS
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


NONFINITE_HINT = "NaN and infinite values cannot be trained on: drop or impute them first"
LABEL_HINT = ("labels are class ids 0, 1, ..., k-1 (integers) or class names (any text, "
              "taken in sorted order)")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _labels_as_ints(raw: list[str], where: list[str]) -> np.ndarray:
    """Class ids from the label cells: all numbers → non-negative integer ids; otherwise class
    names, numbered in sorted order. ``where[i]`` names label i in errors (``file:line``)."""
    numbers: list[float] = []
    for value in raw:
        try:
            numbers.append(float(value))
        except ValueError:
            classes = sorted(set(raw))  # string labels: classes in sorted order
            index = {c: i for i, c in enumerate(classes)}
            return np.array([index[v] for v in raw], dtype=np.int64)
    for value, number, place in zip(raw, numbers, where, strict=True):
        if not math.isfinite(number) or number != int(number):
            raise DataError(f"{place}: label {value!r} is not a class id", hint=LABEL_HINT)
        if number < 0:
            raise DataError(f"{place}: label {value!r} is negative; class ids start at 0",
                            hint=LABEL_HINT)
    return np.array([int(n) for n in numbers], dtype=np.int64)


def _not_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else "infinite" if math.isinf(value) else (
        f"{value:g}, too large for float32")


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Every cell is parsed and checked: the first problem is one ``DataError`` that names
    the file, the line and the column."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a BOM is not a name
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{path}: empty; needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    for column, name in enumerate(header):
        if name in header[:column]:
            raise DataError(f"{path}:1: column {name!r} appears twice in the header")
    if label_column not in header:
        raise DataError(f"{path}: no label column {label_column!r} (columns: "
                        f"{', '.join(header)})", hint="choose one with --label-column")
    label_at = header.index(label_column)
    if len(header) < 2:
        raise DataError(f"{path}: no feature columns besides {label_column!r}")
    features, labels, lines = [], [], []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: {len(row)} values, header has {len(header)}")
        values = []
        for column, cell in enumerate(row):
            if column == label_at:
                continue
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{path}:{number}: non-numeric value {cell.strip()!r} in "
                                f"column {header[column]!r}",
                                hint="every column but the label must hold numbers") from None
            if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
                raise DataError(f"{path}:{number}: column {header[column]!r} is "
                                f"{_not_finite(value)} ({cell.strip()!r})", hint=NONFINITE_HINT)
            values.append(value)
        label = row[label_at].strip()
        if not label:
            raise DataError(f"{path}:{number}: empty label in column {label_column!r}")
        features.append(values)
        labels.append(label)
        lines.append(f"{path}:{number}")
    if not features:
        raise DataError(f"{path}: needs a header row and at least one data row")
    return np.array(features, dtype=np.float32), _labels_as_ints(labels, lines)


# -- .npz: arrays read from the zip's .npy members, checked before (or without) loading ---
@dataclass(frozen=True)
class _NpyHeader:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype[Any]


def _npy_header(handle: IO[bytes]) -> _NpyHeader:
    version = np.lib.format.read_magic(handle)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read(handle)
    return _NpyHeader(tuple(int(d) for d in shape), bool(fortran_order), np.dtype(dtype))


def _npz_headers(path: Path, archive: zipfile.ZipFile) -> dict[str, _NpyHeader]:
    """The shapes and dtypes of ``x`` and ``y``, checked, from the headers alone."""
    members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
    if "x" not in members or "y" not in members:
        raise DataError(f"{path}: needs arrays 'x' and 'y' (has "
                        f"{', '.join(sorted(members)) or 'no arrays'})",
                        hint=NPZ_FORMAT)
    headers = {}
    for key in ("x", "y"):
        try:
            with archive.open(members[key]) as handle:
                headers[key] = _npy_header(handle)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: array {key!r} is not a readable .npy array "
                            f"({_first_line(exc)})") from None
    x, y = headers["x"], headers["y"]
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x has dtype {x.dtype}; it must hold numbers (int or float)")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: y has dtype {y.dtype}; it must hold integer class ids",
                        hint="save y.astype(int); " + LABEL_HINT)
    if len(x.shape) < 2 or len(y.shape) != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: x must be (n, features...) and y (n,), got x {x.shape} and "
                        f"y {y.shape}")
    if math.prod(x.shape[1:]) == 0:
        raise DataError(f"{path}: x has no features (shape {x.shape})")
    return headers


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [exc.__class__.__name__])[0])[:200]


def _bad_value(path: Path, key: str, flat: int, header: _NpyHeader, value: float) -> DataError:
    index = np.unravel_index(flat, header.shape, order="F" if header.fortran_order else "C")
    at = ", ".join(str(int(i)) for i in index)
    return DataError(f"{path}: {key}[{at}] is {_not_finite(float(value))}", hint=NONFINITE_HINT)


def _first_nonfinite(values: np.ndarray) -> int | None:
    """Flat index of the first value that is not a finite float32, or None."""
    if values.dtype.kind != "f":
        return None  # integers are always finite (and int64 fits float32's range)
    bad = ~np.isfinite(values)
    if values.dtype.itemsize > 4:
        with np.errstate(invalid="ignore"):
            bad |= np.abs(values) > _FLOAT32_MAX
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def _scan_npy(path: Path, archive: zipfile.ZipFile, key: str, header: _NpyHeader,
              keep: bool, chunk_bytes: int = 1 << 24) -> np.ndarray:
    """Stream ``key`` in chunks (memory stays small however large ``x`` is), checking that
    every value is finite and the array is complete; returns the values if ``keep``."""
    dtype, itemsize = header.dtype, header.dtype.itemsize
    expected, seen, rest = math.prod(header.shape), 0, b""
    kept = [np.zeros(0, dtype)]
    try:
        with archive.open(f"{key}.npy") as handle:
            _npy_header(handle)
            while chunk := handle.read(chunk_bytes):
                chunk = rest + chunk
                usable = len(chunk) - len(chunk) % itemsize
                values, rest = np.frombuffer(chunk[:usable], dtype=dtype), chunk[usable:]
                bad = _first_nonfinite(values)
                if bad is not None:
                    raise _bad_value(path, key, seen + bad, header, values[bad])
                if keep:
                    kept.append(values)
                seen += len(values)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: array {key!r} cannot be read ({_first_line(exc)})") from None
    if seen != expected or rest:
        raise DataError(f"{path}: array {key!r} is truncated ({seen} of {expected} values)")
    return np.concatenate(kept)


def _open_npz(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({_first_line(exc)})",
                        hint=NPZ_FORMAT) from None


def _check_class_ids(path: Path, y: np.ndarray) -> None:
    negative = np.flatnonzero(y < 0)
    if negative.size:
        raise DataError(f"{path}: y[{int(negative[0])}] is {int(y[negative[0]])}; class ids "
                        "start at 0", hint=LABEL_HINT)


def _inspect_npz(path: Path) -> tuple[int, tuple[int, ...]]:
    """Check a .npz file completely without loading ``x`` whole: (samples, feature shape)."""
    with _open_npz(path) as archive:
        headers = _npz_headers(path, archive)
        _scan_npy(path, archive, "x", headers["x"], keep=False)
        y = _scan_npy(path, archive, "y", headers["y"], keep=True)
    _check_class_ids(path, y)
    return headers["x"].shape[0], headers["x"].shape[1:]


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with _open_npz(path) as archive:
        headers = _npz_headers(path, archive)
    try:
        with np.load(path, allow_pickle=False) as loaded:
            x, y = loaded["x"], loaded["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz file ({_first_line(exc)})") from None
    flat = x.reshape(-1, order="F" if headers["x"].fortran_order else "C")
    bad = _first_nonfinite(flat)
    if bad is not None:
        raise _bad_value(path, "x", bad, headers["x"], flat[bad])
    _check_class_ids(path, y)
    return x.reshape(len(x), -1).astype(np.float32), y.astype(np.int64)


def _read_jsonl(path: Path) -> tuple[list[str], np.ndarray]:
    texts, raw, where = [], [], []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({_first_line(exc)})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({_first_line(exc)})",
                            hint=JSONL_FORMAT) from None
        if not isinstance(item, dict) or "text" not in item or "label" not in item:
            raise DataError(f"{path}:{number}: each line needs 'text' and 'label'")
        text, label = item["text"], item["label"]
        if not isinstance(text, str):
            raise DataError(f"{path}:{number}: 'text' must be a string, got "
                            f"{type(text).__name__}")
        if isinstance(label, bool) or not isinstance(label, (int, float, str)):
            raise DataError(f"{path}:{number}: 'label' must be a class id or a class name, got "
                            f"{json.dumps(label)}", hint=LABEL_HINT)
        texts.append(text)
        raw.append(str(label))
        where.append(f"{path}:{number}")
    if not texts:
        raise DataError(f"{path}: no samples")
    return texts, _labels_as_ints(raw, where)


CSV_FORMAT = ("a header row of column names, then one row per sample: numbers, and the label "
              "column (--label-column)")
NPZ_FORMAT = ("numpy.savez(path, x=features shaped (samples, ...), y=integer class ids shaped "
              "(samples,))")
JSONL_FORMAT = 'one JSON object per line: {"text": "...", "label": 0 or "a class name"}'


@contextmanager
def _format_hint(hint: str) -> Iterator[None]:
    """Errors without a hint of their own get the file format's."""
    try:
        yield
    except DataError as exc:
        if exc.hint:
            raise
        raise DataError(exc.message, hint=hint) from None


def read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with _format_hint(CSV_FORMAT):
        return _read_csv(path, label_column)


def inspect_npz(path: Path) -> tuple[int, tuple[int, ...]]:
    with _format_hint(NPZ_FORMAT):
        return _inspect_npz(path)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with _format_hint(NPZ_FORMAT):
        return _read_npz(path)


def read_jsonl(path: Path) -> tuple[list[str], np.ndarray]:
    with _format_hint(JSONL_FORMAT):
        return _read_jsonl(path)


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
