"""The rows of a CSV file with a header row, streamed, each with its line number.

The raw layer every CSV reader builds on (numeric tables: ``tabular``; text formats later):
cells come as the file has them, as strings; what they mean is the caller's. Standard library
only.
"""

from __future__ import annotations

import csv
from collections.abc import Generator
from pathlib import Path

from hvdtrain.errors import DataError

# (line number, cells): the number of the row in the file, counting the header as 1
CsvRow = tuple[int, list[str]]


def csv_rows(path: Path, delimiter: str = ",") -> Generator[CsvRow, None, None]:
    """The header first, as ``(1, names)`` with the names stripped (``[]`` for an empty file),
    then every data row that has a non-blank cell, as ``(line, cells)``, streamed.

    A byte order mark is not part of the first name. ``DataError``: the file cannot be read
    (``file: cannot read CSV (...)``), or a data row has another number of cells than the
    header (``file:line: 3 values, header has 4``)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            yield 1, header
            for number, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue  # blank lines are not samples
                if len(row) != len(header):
                    raise DataError(f"{path}:{number}: {len(row)} values, header has "
                                    f"{len(header)}")
                yield number, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None


def csv_header(path: Path) -> list[str]:
    """The column names (stripped; ``[]`` for an empty file), reading only the first row."""
    rows = csv_rows(path)
    try:
        return next(rows)[1]
    finally:
        rows.close()
