"""CSV files of numbers and a label column: the header checked, every cell a finite float32.

Built on ``csvfile``'s rows. ``CsvTable`` reads and checks the header when made and streams the
rows on each pass (evaluate reads a file in batches, several times); ``read_csv`` is training's
whole read, every cell parsed and checked. Every problem is one ``DataError`` naming the file,
the line and the column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvdtrain.data.csvfile import csv_header, csv_rows
from hvdtrain.data.schema import (
    NONFINITE_HINT,
    format_hint,
    is_finite_float32,
    labels_as_ints,
    not_finite,
)
from hvdtrain.errors import DataError

CSV_FORMAT = ("a header row of column names, then one row per sample: numbers, and the label "
              "column (--label-column)")
LABEL_COLUMN_HINT = "choose one with --label-column"
NUMBERS_HINT = "every column but the label must hold numbers"


@dataclass(frozen=True)
class Columns:
    names: tuple[str, ...]  # as in the header, stripped
    label: str  # the label column's name
    label_at: int | None  # its position; None when the file has no such column

    @property
    def features(self) -> list[str]:
        return [name for i, name in enumerate(self.names) if i != self.label_at]


@dataclass(frozen=True)
class TableRow:
    place: str  # file:line
    cells: list[str]  # the feature cells, unparsed, in column order
    label: str | None  # stripped; None when the file has no label column


def columns(path: Path, header: list[str], label_column: str, need_label: bool = True,
            label_hint: str = LABEL_COLUMN_HINT) -> Columns:
    """The header checked: not empty, no name twice, the label column (when ``need_label``;
    ``label_hint`` says how to choose it) and at least one feature column besides it."""
    if not any(header):
        raise DataError(f"{path}: empty; needs a header row and at least one data row")
    for column, name in enumerate(header):
        if name in header[:column]:
            raise DataError(f"{path}:1: column {name!r} appears twice in the header")
    label_at = header.index(label_column) if label_column in header else None
    if label_at is None and need_label:
        raise DataError(f"{path}: no label column {label_column!r} (columns: "
                        f"{', '.join(header)})", hint=label_hint)
    if label_at is not None and len(header) < 2:
        raise DataError(f"{path}: no feature columns besides {label_column!r}")
    return Columns(tuple(header), label_column, label_at)


def parse_number(cell: str, place: str, column: str, detail: bool = True) -> float:
    """A feature cell as a finite float32 value. ``detail``: say what a value that is not one
    is (``NaN``, ``infinite``, too large: training's wording); otherwise evaluate's wording,
    ``is not a finite float32``."""
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{place}: non-numeric value {cell.strip()!r} in column {column!r}",
                        hint=NUMBERS_HINT) from None
    if not is_finite_float32(value):
        what = not_finite(value) if detail else "not a finite float32"
        raise DataError(f"{place}: column {column!r} is {what} ({cell.strip()!r})",
                        hint=NONFINITE_HINT)
    return value


class CsvTable:
    """A CSV file of features and a label column: the header read and checked now, the rows
    streamed on every pass. ``need_label``: a row without a label is an error (training,
    evaluate); otherwise the label column may be missing (predict)."""

    def __init__(self, path: Path, label_column: str, need_label: bool = True,
                 label_hint: str = LABEL_COLUMN_HINT) -> None:
        self.path, self.need_label = path, need_label
        self.columns = columns(path, csv_header(path), label_column, need_label, label_hint)

    def __iter__(self) -> Iterator[TableRow]:
        at = self.columns.label_at
        rows = csv_rows(self.path)
        next(rows)  # the header, checked already
        for number, row in rows:
            place = f"{self.path}:{number}"
            label = row[at].strip() if at is not None else None
            if self.need_label and not label:
                raise DataError(f"{place}: empty label in column {self.columns.label!r}")
            yield TableRow(place, [cell for i, cell in enumerate(row) if i != at], label)

    def values(self, cells: list[str], place: str, detail: bool = True) -> list[float]:
        """A row's feature cells (``TableRow.cells``) as numbers, every cell checked
        (``parse_number``)."""
        return [parse_number(cell, place, name, detail)
                for cell, name in zip(cells, self.columns.features, strict=True)]


def read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Every cell parsed and checked: (features float32 (samples, columns), class ids int64).
    Errors without a hint of their own get the format's (``CSV_FORMAT``)."""
    with format_hint(CSV_FORMAT):
        table = CsvTable(path, label_column)
        features, labels, places = [], [], []
        for row in table:
            features.append(table.values(row.cells, row.place))
            labels.append(str(row.label))
            places.append(row.place)
        if not features:
            raise DataError(f"{path}: needs a header row and at least one data row")
        return np.array(features, dtype=np.float32), labels_as_ints(labels, places)
