"""JSON Lines files: each non-blank line one JSON value, streamed, with its line number.

``jsonl_values`` is the raw layer (any JSON value; what it means is the caller's: text formats
build on it); ``text_samples`` reads the classification format, objects with ``text`` and
``label``, and ``read_jsonl`` is training's whole read. Standard library only (NumPy is
imported by ``read_jsonl``'s labels, on use).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvdtrain.data.schema import LABEL_HINT, first_line, format_hint, labels_as_ints
from hvdtrain.errors import DataError

if TYPE_CHECKING:
    import numpy as np

JSONL_FORMAT = 'one JSON object per line: {"text": "...", "label": 0 or "a class name"}'

# (line number, the line's JSON value)
JsonlValue = tuple[int, Any]
# (text, the label as text or None when not read, file:line)
TextSample = tuple[str, str | None, str]


def jsonl_values(path: Path) -> Iterator[JsonlValue]:
    """``(line, value)`` for every line that is not blank, streamed (a byte order mark is
    skipped). ``DataError``: the file cannot be read (``file: cannot read (...)``), or a line
    is not JSON (``file:line: not valid JSON (...)``)."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({first_line(exc)})"
                                    ) from None
                yield number, value
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None


def text_samples(path: Path, need_label: bool = True) -> Iterator[TextSample]:
    """Objects with a string ``text`` and a ``label`` (a class id or a class name), streamed;
    without ``need_label`` the label is not read (``None``) and may be missing. Errors name
    ``file:line``; those without a hint of their own get ``JSONL_FORMAT``."""
    with format_hint(JSONL_FORMAT):
        for number, item in jsonl_values(path):
            place = f"{path}:{number}"
            if (not isinstance(item, dict) or "text" not in item
                    or (need_label and "label" not in item)):
                wanted = "'text' and 'label'" if need_label else "'text'"
                raise DataError(f"{place}: each line needs {wanted}")
            text = item["text"]
            if not isinstance(text, str):
                raise DataError(f"{place}: 'text' must be a string, got {type(text).__name__}")
            if not need_label:
                yield text, None, place
                continue
            label = item["label"]
            if isinstance(label, bool) or not isinstance(label, (int, float, str)):
                raise DataError(f"{place}: 'label' must be a class id or a class name, got "
                                f"{json.dumps(label)}", hint=LABEL_HINT)
            yield text, str(label), place


def read_jsonl(path: Path) -> tuple[list[str], np.ndarray]:
    """Every sample: (texts, class ids int64)."""
    texts, raw, places = [], [], []
    with format_hint(JSONL_FORMAT):
        for text, label, place in text_samples(path):
            texts.append(text)
            raw.append(str(label))
            places.append(place)
        if not texts:
            raise DataError(f"{path}: no samples")
        return texts, labels_as_ints(raw, places)
