"""Labelled text for fine-tuning language models: ``.jsonl``, ``.csv`` and ``.tsv`` files.

One reader for every step that reads a user's sentences (the launcher's check, training,
evaluate, predict and serving): the text, an optional second text (sentence pairs), and the
label, from the columns the user names. Labels are class names or ids; they map to ids in
sorted order (numerically when every label is a whole number), and the names travel with the
model (checkpoint, exports, predictions), so an evaluation set is read with the training
set's mapping and a label it never saw is an error naming the file and line.

Every problem is one ``DataError`` naming ``file:line``: undecodable bytes, an empty text, a
missing column, a single class. Nothing here imports a framework or NumPy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.data.csvfile import csv_rows
from hvdtrain.data.jsonl import jsonl_values
from hvdtrain.data.schema import format_hint
from hvdtrain.errors import DataError

TEXT_SUFFIXES = (".jsonl", ".csv", ".tsv")
FORMAT = ('one JSON object per line ({"text": ..., "label": ...}), or a CSV/TSV file with a '
          "header row; name the columns with --text-column, --label-column and "
          "--text-pair-column")


@dataclass(frozen=True)
class LabelledText:
    texts: list[str]
    pairs: list[str] | None  # the second text of each row, with --text-pair-column
    labels: list[str] | None  # raw label cells; None where the file has no labels (predict)
    where: list[str]  # "file:line" of each row


def _check_utf8(path: Path) -> None:
    """A line that is not UTF-8 is an error naming it (the readers below would only say the
    file could not be read)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for number, line in enumerate(raw.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{number}: not UTF-8 text (byte {exc.start + 1} of the "
                            "line)", hint="save the file as UTF-8") from None


def _records(path: Path) -> tuple[list[str] | None, list[tuple[int, dict[str, object]]]]:
    """The columns (None for JSON Lines, whose objects each have their own) and every row as
    (line, {column: value}), read by ``hvdtrain.data``'s JSON Lines and CSV readers (TSV: the
    CSV reader with tabs)."""
    _check_utf8(path)
    records: list[tuple[int, dict[str, object]]] = []
    with format_hint(FORMAT):
        if path.suffix == ".jsonl":
            for number, value in jsonl_values(path):
                if not isinstance(value, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object")
                records.append((number, value))
            return None, records
        rows = csv_rows(path, "\t" if path.suffix == ".tsv" else ",")
        header = next(rows)[1]
        if not header:
            raise DataError(f"{path}: empty file")
        return header, [(number, dict(zip(header, cells, strict=True)))
                        for number, cells in rows]


def read_labelled_text(path: Path, text_column: str = "text", label_column: str | None = "label",
                       pair_column: str | None = None) -> LabelledText:
    """The rows of ``path``; ``label_column=None`` reads texts only (predict)."""
    if path.suffix not in TEXT_SUFFIXES:
        raise DataError(f"{path}: a text file must be {', '.join(TEXT_SUFFIXES)}")
    columns, records = _records(path)
    wanted = [("--text-column", text_column), ("--label-column", label_column),
              ("--text-pair-column", pair_column)]
    for flag, column in wanted:
        if columns is not None and column is not None and column not in columns:
            raise DataError(f"{path}: no column {column!r} ({flag}); its columns are "
                            f"{', '.join(columns)}")
    if not records:
        raise DataError(f"{path}: no samples", hint=FORMAT)
    texts: list[str] = []
    pairs: list[str] | None = [] if pair_column else None
    labels: list[str] | None = [] if label_column else None
    where: list[str] = []
    for number, record in records:
        place = f"{path}:{number}"
        for flag, column in wanted:
            if column is not None and record.get(column) is None:
                raise DataError(f"{place}: no {column!r} ({flag})", hint=FORMAT)
        texts.append(_text(record[text_column], place, text_column))
        if pairs is not None and pair_column:
            pairs.append(_text(record[pair_column], place, pair_column))
        if labels is not None and label_column:
            labels.append(_label(record[label_column], place))
        where.append(place)
    return LabelledText(texts, pairs, labels, where)


def _text(value: object, place: str, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{place}: {column!r} must be text, got {json.dumps(value)}")
    if not value.strip():
        raise DataError(f"{place}: {column!r} is empty")
    return value


def _label(value: object, place: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{place}: the label must be a class name or id, got "
                        f"{json.dumps(value)}")
    text = str(value).strip()
    if not text:
        raise DataError(f"{place}: the label is empty")
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    return text


def label_names(labels: Sequence[str], source: str) -> tuple[str, ...]:
    """The classes of a training set, in id order: numerically when every label is a whole
    number, else sorted by name. One class only is an error."""
    names = set(labels)
    if len(names) < 2:
        raise DataError(f"{source}: only one class ({next(iter(names))!r}); a classifier "
                        "needs at least two", hint="check --label-column")
    if all(name.lstrip("-").isdigit() for name in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def label_ids(labels: Sequence[str], where: Sequence[str], names: Sequence[str]) -> list[int]:
    """Class ids of ``labels`` under a model's ``names``; a label it does not know is an error
    naming its file and line."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for label, place in zip(labels, where, strict=True):
        if label not in index:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise DataError(f"{place}: label {label!r} is not one the model was trained on "
                            f"({shown})")
        ids.append(index[label])
    return ids
