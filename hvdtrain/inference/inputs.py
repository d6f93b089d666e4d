"""``--data`` for evaluate and predict: read in input order, in batches, prepared as training
prepared it, so a checkpoint sees exactly what it was validated on.

* Features are standardised with the **checkpoint's** statistics (those of its training split),
  float32 as in training, so the validation split of the training data comes out bit for bit
  as the training run's own ``x_val``. Text is byte-encoded as in training.
* ``--split`` (``catalog.SPLITS``): ``val``/``train`` select the training run's own split of
  its own data (same seed and fraction, taken from the checkpoint), ``all`` every sample;
  ``auto`` (default) is ``val`` for the training data and ``all`` for anything else. Samples
  keep their position in ``--data`` as their index, and come in ascending order.
* Files stream: ``.csv`` and ``.jsonl`` line by line, ``.npz`` ``x`` in chunks of rows, so memory
  does not grow with the file. Batch ``k`` is the ``k``-th run of ``batch`` selected samples,
  whatever the rank count; a rank parses only the batches it wants (``want``).
* Every problem is a one-line ``DataError`` naming the place (``file:line``, ``x[i]``): a wrong
  feature count, a value that is not a finite number, a label outside the trained classes.
  The launching host runs the same pass (``check``) before any rank starts.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.catalog import DATA_FILES, DATASETS, SPLITS
from hvdtrain.errors import ConfigError, DataError
from hvdtrain.inference.card import ModelCard
from hvdtrain.training import datasets
from hvdtrain.training.sharding import split_and_standardise

# One sample as read: (features: list of cells, ndarray row or text; raw label or None; place)
Row = tuple[Any, Any, str]


@dataclass(frozen=True)
class Batch:
    number: int  # k: the k-th run of `batch` selected samples
    index: np.ndarray  # positions in --data (int64, ascending)
    x: np.ndarray  # standardised float32, or int64 tokens for text
    y: np.ndarray | None  # class ids, when labels were read


def is_training_data(card: ModelCard, data: str) -> bool:
    trained = card.config.data
    if data in DATASETS or trained in DATASETS:
        return data == trained
    return Path(data).resolve() == Path(trained).resolve()


def _kind_of(data: str) -> str:
    if data in DATASETS:
        return DATASETS.get(data).kind
    return DATA_FILES.get(Path(data).suffix).kind


class Inputs:
    """``data`` read for ``card``; ``labels``: read (and check) the labels too."""

    def __init__(self, card: ModelCard, data: str, split: str = "auto",
                 label_column: str | None = None, labels: bool = False) -> None:
        SPLITS.get(split)
        datasets.check_data_source(data)
        self.card, self.data, self.labels = card, data, labels
        self.label_column = label_column or card.config.label_column
        trained = is_training_data(card, data)
        if split == "auto":
            split = "val" if trained else "all"
        if split != "all" and not trained:
            raise ConfigError(f"--split {split} selects from the data the checkpoint was "
                              f"trained on ({card.config.data}), not {data}",
                              hint="use --split all for another data set")
        self.split = split
        kind = _kind_of(data)
        if (kind == "text") != (card.kind == "text"):
            raise DataError(f"{data} is {kind} data; the checkpoint's model reads "
                            f"{card.kind} data ({card.describe()})")
        self._names: list[str] | None = None  # class names found in the file (text labels)
        self._selected: np.ndarray | None = None

    # -- reading ---------------------------------------------------------------------------
    def _rows(self) -> Iterator[Row]:
        if self.data in DATASETS:
            return self._builtin_rows()
        suffix = Path(self.data).suffix
        return {".csv": self._csv_rows, ".npz": self._npz_rows,
                ".jsonl": self._jsonl_rows}[suffix]()

    def _builtin_rows(self) -> Iterator[Row]:
        seed = self.card.config.seed  # generated sets depend on the training seed
        if self.data == "synthetic-text":
            texts, y = datasets.synthetic_text(seed=seed)
            return ((t, int(label), f"{self.data}[{i}]")
                    for i, (t, label) in enumerate(zip(texts, y, strict=True)))
        if self.data == "synthetic":
            x, y = datasets.synthetic(seed=seed)
        else:
            from sklearn import datasets as sk

            loader = {"digits": sk.load_digits, "breast-cancer": sk.load_breast_cancer}
            bunch = loader[self.data]()
            x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
        return ((x[i], int(y[i]), f"{self.data}[{i}]") for i in range(len(x)))

    def _csv_rows(self) -> Iterator[Row]:
        path = Path(self.data)
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = [h.strip() for h in next(reader, [])]
                if not any(header):
                    raise DataError(f"{path}: empty; needs a header row")
                at = header.index(self.label_column) if self.label_column in header else None
                if at is None and self.labels:
                    raise DataError(f"{path}: no label column {self.label_column!r} (columns: "
                                    f"{', '.join(header)})",
                                    hint="evaluating needs labels; choose the column with "
                                    "--label-column")
                self._header = [h for i, h in enumerate(header) if i != at]
                for number, row in enumerate(reader, start=2):
                    if not any(cell.strip() for cell in row):
                        continue  # as training's reader: blank lines are not samples
                    place = f"{path}:{number}"
                    if len(row) != len(header):
                        raise DataError(f"{place}: {len(row)} values, header has {len(header)}")
                    label = row[at].strip() if at is not None else None
                    yield [c for i, c in enumerate(row) if i != at], label, place
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: cannot read CSV ({exc})") from None

    def _jsonl_rows(self) -> Iterator[Row]:
        path = Path(self.data)
        try:
            with path.open(encoding="utf-8-sig") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    place = f"{path}:{number}"
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise DataError(f"{place}: not valid JSON",
                                        hint=datasets.JSONL_FORMAT) from None
                    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                        raise DataError(f"{place}: each line needs a string 'text'",
                                        hint=datasets.JSONL_FORMAT)
                    if self.labels and "label" not in item:
                        raise DataError(f"{place}: no 'label' (evaluating needs labels)")
                    label = item.get("label")
                    yield item["text"], None if label is None else str(label), place
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from None

    def _npz_rows(self, chunk_rows: int = 4096) -> Iterator[Row]:
        """``x`` streamed from the archive in chunks of rows (C order); ``y`` read whole (one
        integer per sample). A Fortran-ordered ``x`` is read whole, as training does."""
        import zipfile

        path = Path(self.data)
        try:
            with np.load(path, allow_pickle=False) as loaded:  # reads only the y member
                y = np.asarray(loaded["y"]) if "y" in loaded.files else None
            with zipfile.ZipFile(path) as archive, archive.open("x.npy") as handle:
                version = np.lib.format.read_magic(handle)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(handle)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable .npz file with arrays x and y ({exc})",
                            hint=datasets.NPZ_FORMAT) from None
        if (y is None or y.dtype.kind not in "iu" or len(shape) < 2 or y.shape != shape[:1]
                or np.dtype(dtype).kind not in "biuf"):
            raise DataError(f"{path}: needs x (samples, features...) of numbers and y "
                            "(samples,) of integer class ids", hint=datasets.NPZ_FORMAT)
        samples, width = int(shape[0]), math.prod(shape[1:])
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as handle:
            np.lib.format.read_magic(handle)
            read(handle)  # past the header: the values follow
            if fortran:
                x_all, _ = datasets.read_npz(path)
                yield from ((x_all[i], int(y[i]), f"{path}: x[{i}]") for i in range(samples))
                return
            row_bytes = np.dtype(dtype).itemsize * width
            start = 0
            while start < samples:
                rows = min(chunk_rows, samples - start)
                chunk = handle.read(rows * row_bytes)
                if len(chunk) != rows * row_bytes:
                    raise DataError(f"{path}: array 'x' is truncated at row {start}")
                block = np.frombuffer(chunk, dtype=dtype).reshape(rows, width)
                for i in range(rows):
                    yield block[i], int(y[start + i]), f"{path}: x[{start + i}]"
                start += rows

    # -- preparing -------------------------------------------------------------------------
    def _features(self, rows: list[Row]) -> np.ndarray:
        card = self.card
        if card.kind == "text":
            return datasets.encode_texts([str(r[0]) for r in rows])
        width = card.num_features
        out = np.zeros((len(rows), width), dtype=np.float32)
        for i, (cells, _, place) in enumerate(rows):
            if len(cells) != width:
                raise DataError(f"{place}: {len(cells)} features; the checkpoint's model reads "
                                f"{width} ({card.describe()})")
            if isinstance(cells, np.ndarray):
                with np.errstate(over="ignore", invalid="ignore"):
                    out[i] = cells.astype(np.float32)
                bad = np.flatnonzero(~np.isfinite(out[i]))
                if bad.size:
                    raise DataError(f"{place}: feature {int(bad[0])} is "
                                    f"{cells[bad[0]]!r}, not a finite float32",
                                    hint=datasets.NONFINITE_HINT)
            else:
                out[i] = [self._number(c, j, place) for j, c in enumerate(cells)]
        if card.mean is not None and card.std is not None:
            out = ((out - card.mean) / card.std).astype(np.float32)
        return out

    def _number(self, cell: str, column: int, place: str) -> float:
        name = self._header[column] if column < len(self._header) else str(column)
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"{place}: non-numeric value {cell.strip()!r} in column "
                            f"{name!r}") from None
        if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
            raise DataError(f"{place}: column {name!r} is not a finite float32 ({cell.strip()!r})",
                            hint=datasets.NONFINITE_HINT)
        return value

    def _label_names(self) -> list[str] | None:
        """Class names when the file's labels are text (numbered in sorted order, as training
        numbered them), else None. One pass over the labels, only for labelled files."""
        if self._names is None:
            raw = {str(label) for _, label, _ in self._rows() if label is not None}
            numeric = True
            for value in raw:
                try:
                    float(value)
                except ValueError:
                    numeric = False
                    break
            self._names = [] if numeric else sorted(raw)
        return self._names or None

    def _label_ids(self, rows: list[Row]) -> np.ndarray:
        card = self.card
        names = None if self.data in DATASETS or self.data.endswith(".npz") else (
            self._label_names())
        ids = np.zeros(len(rows), dtype=np.int64)
        for i, (_, label, place) in enumerate(rows):
            if names is not None:
                ids[i] = names.index(str(label))
                if len(names) > card.num_classes:
                    raise DataError(f"{self.data}: {len(names)} class names; the checkpoint "
                                    f"was trained on {card.num_classes} classes")
                continue
            number = float(label)
            if not math.isfinite(number) or number != int(number) or number < 0:
                raise DataError(f"{place}: label {label!r} is not a class id",
                                hint=datasets.LABEL_HINT)
            if number >= card.num_classes:
                raise DataError(f"{place}: label {int(number)} is outside the trained classes "
                                f"0..{card.num_classes - 1} ({card.describe()})")
            ids[i] = int(number)
        return ids

    def _selection(self) -> np.ndarray | None:
        """Positions of the chosen split (ascending), None for every sample."""
        if self.split == "all":
            return None
        if self._selected is None:
            total = sum(1 for _ in self._rows())
            config = self.card.config
            positions = np.arange(total, dtype=np.int64).reshape(-1, 1)
            # the training loader's own split function (kind "text": nothing standardised)
            split = split_and_standardise("split", "text", positions,
                                          np.zeros(total, dtype=np.int64), config.seed,
                                          config.val_fraction)
            chosen = split.x_val if self.split == "val" else split.x_train
            self._selected = np.sort(chosen[:, 0])
        return self._selected

    def batches(self, size: int, want: Callable[[int], bool] = lambda _k: True
                ) -> Iterator[Batch | None]:
        """Every batch in order: a ``Batch`` for those ``want`` accepts, ``None`` for the
        others (read past, not parsed)."""
        selected = self._selection()
        mask = None
        if selected is not None:
            mask = np.zeros(int(selected[-1]) + 1 if len(selected) else 0, dtype=bool)
            mask[selected] = True
        pending: list[Row] = []
        positions: list[int] = []
        number = 0
        for position, row in enumerate(self._rows()):
            if mask is not None and (position >= len(mask) or not mask[position]):
                continue
            pending.append(row)
            positions.append(position)
            if len(pending) == size:
                yield self._batch(number, positions, pending, want)
                number, pending, positions = number + 1, [], []
        if pending:
            yield self._batch(number, positions, pending, want)

    def _batch(self, number: int, positions: list[int], rows: list[Row],
               want: Callable[[int], bool]) -> Batch | None:
        if not want(number):
            return None
        return Batch(number, np.asarray(positions, dtype=np.int64), self._features(rows),
                     self._label_ids(rows) if self.labels else None)

    def check(self) -> int:
        """Read everything once, as the ranks will; the number of samples selected."""
        count = 0
        for batch in self.batches(1024):
            assert batch is not None
            count += len(batch.index)
        if count == 0:
            raise DataError(f"{self.data}: no samples")
        return count
