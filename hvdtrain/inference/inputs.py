"""``--data`` for evaluate and predict: read in input order, in batches, prepared as training
prepared it, so a checkpoint sees exactly what it was validated on.

* Features are standardised with the **checkpoint's** statistics (those of its training split),
  float32 as in training, so the validation split of the training data comes out bit for bit
  as the training run's own ``x_val``. Text is byte-encoded as in training.
* ``--split`` (``catalog.SPLITS``): ``val``/``train`` select the training run's own split of
  its own data (same seed and fraction, taken from the checkpoint), ``all`` every sample;
  ``auto`` (default) is ``val`` for the training data and ``all`` for anything else. Samples
  keep their position in ``--data`` as their index, and come in ascending order.
* Files stream, read by training's own readers (``hvdtrain.data``): ``.csv`` and ``.jsonl``
  line by line, ``.npz`` ``x`` and ``y`` in blocks of rows, so memory does not grow with the
  file. Batch ``k`` is the ``k``-th run of ``batch`` selected samples, whatever the rank count;
  a rank parses only the batches it wants (``want``).
* Every problem is a one-line ``DataError`` naming the place (``file:line``, ``x[i]``): a wrong
  feature count, a value that is not a finite number, a label outside the trained classes.
  The launching host runs the same pass (``check``) before any rank starts.
* ``prepare_rows`` is the one preparation path: these batches go through it, and so do the
  rows a request brings to ``hvdtrain serve`` (``serving.servable``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.catalog import DATA_FILES, DATASETS, SPLITS
from hvdtrain.data.jsonl import text_samples
from hvdtrain.data.npy import NPZ_FORMAT, npz_headers, open_npz, row_blocks
from hvdtrain.data.schema import NONFINITE_HINT, class_id, class_names, format_hint
from hvdtrain.data.tabular import CsvTable
from hvdtrain.data.text import TEXT_SUFFIXES, label_ids, read_labelled_text
from hvdtrain.errors import ConfigError, DataError
from hvdtrain.inference.card import ModelCard
from hvdtrain.training import datasets
from hvdtrain.training.sharding import split_and_standardise
from hvdtrain.training.text_data import encoder_for
from hvdtrain.types import TOKENS

# One sample as read: (features: list of cells, ndarray row or text; raw label or None; place)
Row = tuple[Any, Any, str]
# A language model's tokenizer: (texts, second texts or None) -> packed (rows, 3, length)
Tokenize = Callable[[Sequence[str], Sequence[str] | None], np.ndarray]


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
        if card.kind == TOKENS:  # a fine-tuned language model reads labelled text files
            if data in DATASETS or Path(data).suffix not in TEXT_SUFFIXES:
                raise DataError(f"{data}: {card.describe()} reads text: a "
                                f"{'/'.join(TEXT_SUFFIXES)} file")
            kind = card.kind
        else:
            kind = _kind_of(data)
        if card.kind != TOKENS and (kind == "text") != (card.kind == "text"):
            raise DataError(f"{data} is {kind} data; the checkpoint's model reads "
                            f"{card.kind} data ({card.describe()})")
        self._names: list[str] | None = None  # class names found in the file (text labels)
        self._selected: np.ndarray | None = None
        self._table: CsvTable | None = None  # a CSV file's header, once read

    # -- reading ---------------------------------------------------------------------------
    def _rows(self) -> Iterator[Row]:
        if self.card.kind == TOKENS:
            return self._labelled_text_rows()
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
        if self._table is None:  # the header, read and checked once
            self._table = CsvTable(Path(self.data), self.label_column, need_label=self.labels,
                                   label_hint="evaluating needs labels; choose the column with "
                                   "--label-column")
        return ((row.cells, row.label, row.place) for row in self._table)

    def _labelled_text_rows(self) -> Iterator[Row]:
        """A language model's text (and second text), with the training run's columns."""
        config = self.card.config
        rows = read_labelled_text(Path(self.data), config.text_column,
                                  self.label_column if self.labels else None,
                                  config.text_pair_column)
        none: list[str | None] = [None] * len(rows.texts)
        pairs: list[str | None] = list(rows.pairs) if rows.pairs else none
        labels: list[str | None] = list(rows.labels) if rows.labels else none
        return (((text, pair), label, place) for text, pair, label, place
                in zip(rows.texts, pairs, labels, rows.where, strict=True))

    def _jsonl_rows(self) -> Iterator[Row]:
        return text_samples(Path(self.data), need_label=self.labels)

    def _npz_rows(self) -> Iterator[Row]:
        """``x`` and ``y`` streamed from the archive in blocks of rows (a Fortran-ordered
        ``x`` is read whole)."""
        path = Path(self.data)
        with format_hint(NPZ_FORMAT), open_npz(path) as archive:
            headers = npz_headers(path, archive)
            blocks = zip(row_blocks(path, archive, headers["x"]),
                         row_blocks(path, archive, headers["y"], key="y"), strict=True)
            for (start, x), (_, y) in blocks:
                for i in range(len(x)):
                    yield x[i], int(y[i, 0]), f"{path}: x[{start + i}]"

    # -- preparing -------------------------------------------------------------------------
    def _label_names(self) -> list[str] | None:
        """Class names when the file's labels are text (numbered in sorted order, as training
        numbered them), else None. One pass over the labels, only for labelled files."""
        if self._names is None:
            names = class_names({str(label) for _, label, _ in self._rows() if label is not None})
            self._names = names or []
        return self._names or None

    def _label_ids(self, rows: list[Row]) -> np.ndarray:
        card = self.card
        if card.kind == TOKENS:  # the names the model was trained with, never renumbered
            return np.array(label_ids([str(r[1]) for r in rows], [r[2] for r in rows],
                                      card.class_names), dtype=np.int64)
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
            number = class_id(str(label), place)
            if number >= card.num_classes:
                raise DataError(f"{place}: label {number} is outside the trained classes "
                                f"0..{card.num_classes - 1} ({card.describe()})")
            ids[i] = number
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
        return Batch(number, np.asarray(positions, dtype=np.int64),
                     prepare_rows(self.card, rows, self._table),
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


def model_tokenizer(card: ModelCard) -> Tokenize:
    """The tokenizer of the model ``card``'s run fine-tuned (``hf:``/``keras-hub:`` DIR),
    truncating to the run's ``--max-length``, as training tokenized."""
    model, length = card.config.model, card.config.max_length
    encode = encoder_for(model)
    return lambda texts, pairs: encode(model, texts, pairs, length)


def prepare_rows(card: ModelCard, rows: Sequence[Row], table: CsvTable | None = None,
                 tokenize: Tokenize | None = None) -> np.ndarray:
    """Rows as the checkpoint's model takes them, prepared as training prepared its data:
    features standardised in float32 with the checkpoint's statistics (``table``: the CSV
    file the cells came from), byte tokens for text, and for a language model (rows
    ``((text, second text or None), label, place)``) the batch tokenized together, padded to
    its longest row, int64. ``predict``, ``evaluate`` and ``serve`` all prepare through here;
    ``tokenize`` replaces the model directory's tokenizer (an export's own)."""
    if card.kind == "text":
        return datasets.encode_texts([str(r[0]) for r in rows])
    if card.kind == TOKENS:
        texts = [str(r[0][0]) for r in rows]
        pairs = [str(r[0][1]) for r in rows] if card.config.text_pair_column else None
        return (tokenize or model_tokenizer(card))(texts, pairs).astype(np.int64)
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
                                hint=NONFINITE_HINT)
        else:
            if table is None:
                raise TypeError("cells of a CSV row are prepared with the CsvTable read")
            out[i] = table.values(cells, place, detail=False)
    if card.mean is not None and card.std is not None:
        out = ((out - card.mean) / card.std).astype(np.float32)
    return out
