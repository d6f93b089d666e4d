"""What every format shares: class labels as ids, what a finite float32 is, and the hints.

Labels are class ids ``0..k-1`` or class names; names are numbered in sorted order, the same in
training and in evaluate, so a checkpoint's class ``i`` is the ``i``-th name. Feature values
must be finite and fit float32 (what the models compute in). Importing this module imports
no NumPy (the raw CSV and JSONL readers build on it); ``labels_as_ints`` imports it on use.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hvdtrain.errors import DataError

if TYPE_CHECKING:
    import numpy as np

NONFINITE_HINT = "NaN and infinite values cannot be trained on: drop or impute them first"
LABEL_HINT = ("labels are class ids 0, 1, ..., k-1 (integers) or class names (any text, "
              "taken in sorted order)")
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max, without NumPy


def not_finite(value: float) -> str:
    """What a value that is not a finite float32 is: ``NaN``, ``infinite`` or too large."""
    return "NaN" if math.isnan(value) else "infinite" if math.isinf(value) else (
        f"{value:g}, too large for float32")


def is_finite_float32(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def class_names(labels: Collection[str]) -> list[str] | None:
    """The class names in sorted order when any label is not a number; None when every label
    is one (then they are class ids, see ``class_id``)."""
    if all(is_number(value) for value in labels):
        return None
    return sorted(set(labels))


def class_id(value: str, place: str) -> int:
    """A numeric label as a class id; ``place`` (``file:line``) names it in errors."""
    number = float(value)
    if not math.isfinite(number) or number != int(number):
        raise DataError(f"{place}: label {value!r} is not a class id", hint=LABEL_HINT)
    if number < 0:
        raise DataError(f"{place}: label {value!r} is negative; class ids start at 0",
                        hint=LABEL_HINT)
    return int(number)


def labels_as_ints(raw: Sequence[str], where: Sequence[str]) -> np.ndarray:
    """Class ids (int64) from the label cells: all numbers → checked class ids; otherwise
    class names, numbered in sorted order. ``where[i]`` names label i in errors."""
    import numpy as np

    names = class_names(raw)
    if names is not None:
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[value] for value in raw], dtype=np.int64)
    return np.array([class_id(value, place) for value, place in zip(raw, where, strict=True)],
                    dtype=np.int64)


def first_line(exc: BaseException) -> str:
    """An exception's message as one short line (for a one-line ``DataError``)."""
    return ((str(exc).strip().splitlines() or [exc.__class__.__name__])[0])[:200]


@contextmanager
def format_hint(hint: str) -> Iterator[None]:
    """Errors without a hint of their own get the file format's."""
    try:
        yield
    except DataError as exc:
        if exc.hint:
            raise
        raise DataError(exc.message, hint=hint) from None
