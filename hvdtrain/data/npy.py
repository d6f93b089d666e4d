"""``.npz`` archives of ``.npy`` arrays ``x`` (samples, features...) and ``y`` (samples,).

Everything is checked from the headers before any value is read (shapes, dtypes), then values
are read in pieces, so memory stays small however large ``x`` is: ``scan_member`` streams a
whole array in chunks of bytes (the launcher's check: every value finite, nothing truncated),
``row_blocks`` reads a range of rows of ``x`` in blocks (evaluate and predict, which stream
their input). ``read_npz`` loads both arrays whole for training. Every problem is one
``DataError`` naming the file and the place (``x[i, j]``).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from hvdtrain.data.schema import (
    FLOAT32_MAX,
    LABEL_HINT,
    NONFINITE_HINT,
    first_line,
    format_hint,
    not_finite,
)
from hvdtrain.errors import DataError

NPZ_FORMAT = ("numpy.savez(path, x=features shaped (samples, ...), y=integer class ids shaped "
              "(samples,))")
CHUNK_BYTES = 1 << 24  # what scan_member reads at a time
CHUNK_ROWS = 4096  # rows in one block of row_blocks


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype[Any]

    @property
    def row_size(self) -> int:
        """Values in one row (one sample): the product of the dimensions after the first."""
        return math.prod(self.shape[1:])


def read_header(handle: IO[bytes]) -> NpyHeader:
    """The header of the ``.npy`` data at ``handle``, which is left where the values start."""
    version = np.lib.format.read_magic(handle)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read(handle)
    return NpyHeader(tuple(int(d) for d in shape), bool(fortran_order), np.dtype(dtype))


def open_npz(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({first_line(exc)})",
                        hint=NPZ_FORMAT) from None


def npz_headers(path: Path, archive: zipfile.ZipFile) -> dict[str, NpyHeader]:
    """The headers of ``x`` and ``y``, checked (numbers, integer class ids, one ``y`` per row
    of ``x``, at least one feature), from the headers alone."""
    members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
    if "x" not in members or "y" not in members:
        raise DataError(f"{path}: needs arrays 'x' and 'y' (has "
                        f"{', '.join(sorted(members)) or 'no arrays'})",
                        hint=NPZ_FORMAT)
    headers = {}
    for key in ("x", "y"):
        try:
            with archive.open(members[key]) as handle:
                headers[key] = read_header(handle)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: array {key!r} is not a readable .npy array "
                            f"({first_line(exc)})") from None
    x, y = headers["x"], headers["y"]
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x has dtype {x.dtype}; it must hold numbers (int or float)")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: y has dtype {y.dtype}; it must hold integer class ids",
                        hint="save y.astype(int); " + LABEL_HINT)
    if len(x.shape) < 2 or len(y.shape) != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: x must be (n, features...) and y (n,), got x {x.shape} and "
                        f"y {y.shape}")
    if x.row_size == 0:
        raise DataError(f"{path}: x has no features (shape {x.shape})")
    return headers


def first_nonfinite(values: np.ndarray) -> int | None:
    """Flat index of the first value that is not a finite float32, or None."""
    if values.dtype.kind != "f":
        return None  # integers are always finite (and int64 fits float32's range)
    bad = ~np.isfinite(values)
    if values.dtype.itemsize > 4:
        with np.errstate(invalid="ignore"):
            bad |= np.abs(values) > FLOAT32_MAX
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def _bad_value(path: Path, key: str, flat: int, header: NpyHeader, value: float) -> DataError:
    index = np.unravel_index(flat, header.shape, order="F" if header.fortran_order else "C")
    at = ", ".join(str(int(i)) for i in index)
    return DataError(f"{path}: {key}[{at}] is {not_finite(float(value))}", hint=NONFINITE_HINT)


def scan_member(path: Path, archive: zipfile.ZipFile, key: str, header: NpyHeader,
                keep: bool, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """Stream array ``key`` in chunks (memory stays small however large it is), checking that
    every value is finite and the array is complete; returns the values (flat, in the file's
    order) if ``keep``, else an empty array."""
    dtype, itemsize = header.dtype, header.dtype.itemsize
    expected, seen, rest = math.prod(header.shape), 0, b""
    kept = [np.zeros(0, dtype)]
    try:
        with archive.open(f"{key}.npy") as handle:
            read_header(handle)
            while chunk := handle.read(chunk_bytes):
                chunk = rest + chunk
                usable = len(chunk) - len(chunk) % itemsize
                values, rest = np.frombuffer(chunk[:usable], dtype=dtype), chunk[usable:]
                bad = first_nonfinite(values)
                if bad is not None:
                    raise _bad_value(path, key, seen + bad, header, values[bad])
                if keep:
                    kept.append(values)
                seen += len(values)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: array {key!r} cannot be read ({first_line(exc)})") from None
    if seen != expected or rest:
        raise DataError(f"{path}: array {key!r} is truncated ({seen} of {expected} values)")
    return np.concatenate(kept)


def row_blocks(path: Path, archive: zipfile.ZipFile, header: NpyHeader, key: str = "x",
               start: int = 0, stop: int | None = None, chunk_rows: int = CHUNK_ROWS
               ) -> Iterator[tuple[int, np.ndarray]]:
    """Rows ``start`` to ``stop`` (exclusive; None: the last) of array ``key``, in blocks of
    at most ``chunk_rows``: ``(first row, values shaped (rows, row_size))`` in the file's dtype,
    values unchecked. A C-ordered array streams (the rows before ``start`` are skipped, not
    kept); a Fortran-ordered one, whose rows are not contiguous, is read whole."""
    stop = header.shape[0] if stop is None else min(stop, header.shape[0])
    width = header.row_size
    try:
        with archive.open(f"{key}.npy") as handle:
            if header.fortran_order:
                whole = np.lib.format.read_array(handle, allow_pickle=False)
                whole = whole.reshape(len(whole), width)
                for at in range(start, stop, chunk_rows):
                    yield at, whole[at:min(at + chunk_rows, stop)]
                return
            read_header(handle)
            row_bytes = header.dtype.itemsize * width
            handle.seek(start * row_bytes, 1)  # relative to the values' start
            at = start
            while at < stop:
                rows = min(chunk_rows, stop - at)
                chunk = handle.read(rows * row_bytes)
                if len(chunk) != rows * row_bytes:
                    raise DataError(f"{path}: array {key!r} is truncated at row {at}")
                yield at, np.frombuffer(chunk, dtype=header.dtype).reshape(rows, width)
                at += rows
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: array {key!r} cannot be read ({first_line(exc)})") from None


def check_class_ids(path: Path, y: np.ndarray) -> None:
    negative = np.flatnonzero(y < 0)
    if negative.size:
        raise DataError(f"{path}: y[{int(negative[0])}] is {int(y[negative[0]])}; class ids "
                        "start at 0", hint=LABEL_HINT)


def inspect_npz(path: Path) -> tuple[int, tuple[int, ...]]:
    """Check a .npz file completely without loading ``x`` whole: (samples, feature shape)."""
    with format_hint(NPZ_FORMAT), open_npz(path) as archive:
        headers = npz_headers(path, archive)
        scan_member(path, archive, "x", headers["x"], keep=False)
        y = scan_member(path, archive, "y", headers["y"], keep=True)
        check_class_ids(path, y)
    return headers["x"].shape[0], headers["x"].shape[1:]


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays, checked: (x float32 (samples, features), y int64)."""
    with format_hint(NPZ_FORMAT):
        with open_npz(path) as archive:
            headers = npz_headers(path, archive)
        try:
            with np.load(path, allow_pickle=False) as loaded:
                x, y = loaded["x"], loaded["y"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"{path}: not a readable .npz file ({first_line(exc)})") from None
        flat = x.reshape(-1, order="F" if headers["x"].fortran_order else "C")
        bad = first_nonfinite(flat)
        if bad is not None:
            raise _bad_value(path, "x", bad, headers["x"], flat[bad])
        check_class_ids(path, y)
        return x.reshape(len(x), -1).astype(np.float32), y.astype(np.int64)
