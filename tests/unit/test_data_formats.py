"""``hvdtrain.data``: one reader per format, the same for training, the launcher's check,
evaluate/predict and serving. Good files, every error with its ``file:line`` (or ``x[i, j]``),
and row-range reads equal to whole reads. NumPy only, no ML framework."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hvdtrain.data import csvfile, jsonl, npy, schema, tabular
from hvdtrain.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "hvdtrain" / "data"


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _raises(fragment: str) -> pytest.RaisesContext[DataError]:
    """A ``DataError`` whose message contains ``fragment`` (taken literally)."""
    import re

    return pytest.raises(DataError, match=re.escape(fragment))


# -- csvfile: raw rows ------------------------------------------------------------------------
def test_csv_rows_header_first_blank_lines_skipped_numbers_are_the_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "\ufeff a , b\n1,2\n\n , \n3,x\n")
    assert list(csvfile.csv_rows(path)) == [(1, ["a", "b"]), (2, ["1", "2"]), (5, ["3", "x"])]
    assert csvfile.csv_header(path) == ["a", "b"]
    assert csvfile.csv_header(_write(tmp_path / "e.csv", "")) == []


@pytest.mark.parametrize(("content", "fragment"), [
    ("a,b\n1,2\n3\n", "d.csv:3: 1 values, header has 2"),
    ("a,b\n1,2\n\n4,5,6\n", "d.csv:4: 3 values, header has 2"),
    (b"a,b\n1,\xff\n", "d.csv: cannot read CSV ("),
])
def test_csv_rows_errors(tmp_path: Path, content: str | bytes, fragment: str) -> None:
    with _raises(fragment):
        list(csvfile.csv_rows(_write(tmp_path / "d.csv", content)))


# -- jsonl: raw values, text samples ----------------------------------------------------------
def test_jsonl_values_any_json_with_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '\ufeff{"a": 1}\n\n[1, 2]\n  \n"s"\n')
    assert list(jsonl.jsonl_values(path)) == [(1, {"a": 1}), (3, [1, 2]), (5, "s")]


@pytest.mark.parametrize(("content", "fragment"), [
    ('{"a": 1}\n{oops\n', "d.jsonl:2: not valid JSON (Expecting property name"),
    (b'{"a": "\xff"}\n', "d.jsonl: cannot read ("),
])
def test_jsonl_values_errors(tmp_path: Path, content: str | bytes, fragment: str) -> None:
    with _raises(fragment):
        list(jsonl.jsonl_values(_write(tmp_path / "d.jsonl", content)))


def test_text_samples_with_and_without_labels(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n\n'
                  '{"text": "b", "label": "yes", "x": 0}\n{"text": "c", "label": 2.0}\n')
    place = f"{path}:"
    assert list(jsonl.text_samples(path)) == [("a", "1", place + "1"), ("b", "yes", place + "3"),
                                              ("c", "2.0", place + "4")]
    unlabelled = _write(tmp_path / "u.jsonl", '{"text": "a"}\n{"text": "b", "label": null}\n')
    assert [s[:2] for s in jsonl.text_samples(unlabelled, need_label=False)] == [
        ("a", None), ("b", None)]  # predict: a label, if any, is not read


@pytest.mark.parametrize(("line", "need_label", "fragment"), [
    ('{"text": "x"}', True, "d.jsonl:2: each line needs 'text' and 'label'"),
    ('["text", "label"]', True, "d.jsonl:2: each line needs 'text' and 'label'"),
    ('{"label": 0}', False, "d.jsonl:2: each line needs 'text'"),
    ('{"text": 5, "label": 0}', True, "d.jsonl:2: 'text' must be a string, got int"),
    ('{"text": ["a"]}', False, "d.jsonl:2: 'text' must be a string, got list"),
    ('{"text": "x", "label": null}', True,
     "d.jsonl:2: 'label' must be a class id or a class name, got null"),
    ('{"text": "x", "label": true}', True,
     "d.jsonl:2: 'label' must be a class id or a class name, got true"),
    ('{"text": "x", "label": [1]}', True,
     "d.jsonl:2: 'label' must be a class id or a class name, got [1]"),
])
def test_text_samples_errors(tmp_path: Path, line: str, need_label: bool,
                             fragment: str) -> None:
    path = _write(tmp_path / "d.jsonl", '{"text": "ok", "label": 0}\n' + line + "\n")
    with _raises(fragment) as caught:
        list(jsonl.text_samples(path, need_label=need_label))
    assert caught.value.hint in (jsonl.JSONL_FORMAT, schema.LABEL_HINT)


def test_read_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", "".join(json.dumps({"text": f"t{i}", "label": label})
                                                + "\n" for i, label in enumerate("bab")))
    texts, labels = jsonl.read_jsonl(path)
    assert texts == ["t0", "t1", "t2"] and labels.tolist() == [1, 0, 1]
    with _raises("e.jsonl: no samples") as caught:
        jsonl.read_jsonl(_write(tmp_path / "e.jsonl", "\n\n"))
    assert caught.value.hint == jsonl.JSONL_FORMAT
    with _raises("f.jsonl:2: label '-1' is negative; class ids start at 0"):
        jsonl.read_jsonl(_write(tmp_path / "f.jsonl", '{"text": "a", "label": 0}\n'
                                '{"text": "b", "label": -1}\n'))


# -- schema: labels and values ----------------------------------------------------------------
def test_labels_as_class_ids_or_names() -> None:
    assert schema.class_names(["0", "1.0", " 2"]) is None
    assert schema.class_names(["b", "1", "a", "b"]) == ["1", "a", "b"]
    assert schema.labels_as_ints(["2", "0.0", "1"], ["f:1", "f:2", "f:3"]).tolist() == [2, 0, 1]
    assert schema.labels_as_ints(["no", "yes", "no"], ["f:1", "f:2", "f:3"]).tolist() == [0, 1, 0]
    assert schema.class_id("3.0", "f:9") == 3


@pytest.mark.parametrize(("value", "fragment"), [
    ("0.5", "f:7: label '0.5' is not a class id"),
    ("nan", "f:7: label 'nan' is not a class id"),
    ("-inf", "f:7: label '-inf' is not a class id"),
    ("-2", "f:7: label '-2' is negative; class ids start at 0"),
])
def test_class_id_errors(value: str, fragment: str) -> None:
    with _raises(fragment) as caught:
        schema.class_id(value, "f:7")
    assert caught.value.hint == schema.LABEL_HINT


def test_finite_float32() -> None:
    assert float(np.finfo(np.float32).max) == schema.FLOAT32_MAX
    assert schema.is_finite_float32(schema.FLOAT32_MAX)
    assert not schema.is_finite_float32(1e39) and not schema.is_finite_float32(float("nan"))
    assert [schema.not_finite(v) for v in (float("nan"), float("-inf"), 1e39)] == [
        "NaN", "infinite", "1e+39, too large for float32"]


def test_format_hint_only_where_there_is_none() -> None:
    with pytest.raises(DataError) as caught, schema.format_hint("the format"):
        raise DataError("plain")
    assert caught.value.hint == "the format"
    with pytest.raises(DataError) as caught, schema.format_hint("the format"):
        raise DataError("own", hint="its own")
    assert caught.value.hint == "its own"


# -- tabular: numbers and a label column -------------------------------------------------------
def test_read_csv_good(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,target,b\n1,yes,2\n\n3,no,4.5\n-5e3,yes,0\n")
    x, y = tabular.read_csv(path, "target")
    assert x.dtype == np.float32 and x.tolist() == [[1, 2], [3, 4.5], [-5000, 0]]
    assert y.tolist() == [1, 0, 1]


def test_csv_table_streams_rows_and_may_lack_the_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b\n1,2\n3,4\n")
    table = tabular.CsvTable(path, "label", need_label=False)
    assert table.columns.features == ["a", "b"] and table.columns.label_at is None
    rows = list(table)
    assert [(r.place, r.cells, r.label) for r in rows] == [
        (f"{path}:2", ["1", "2"], None), (f"{path}:3", ["3", "4"], None)]
    assert table.values(rows[1].cells, rows[1].place) == [3.0, 4.0]
    assert list(table) == rows  # every pass reads the file again
    labelled = tabular.CsvTable(_write(tmp_path / "e.csv", "label,a\n,1\n"), "label",
                                need_label=False)
    assert [(r.cells, r.label) for r in labelled] == [(["1"], "")]  # predict: labels unread


@pytest.mark.parametrize(("content", "fragment", "hint"), [
    ("", "d.csv: empty; needs a header row and at least one data row", tabular.CSV_FORMAT),
    (" , \n1,2\n", "d.csv: empty; needs a header row", tabular.CSV_FORMAT),
    ("a,label,a\n1,0,2\n", "d.csv:1: column 'a' appears twice in the header",
     tabular.CSV_FORMAT),
    ("a,b\n1,2\n", "d.csv: no label column 'label' (columns: a, b)", "choose one with "
     "--label-column"),
    ("label\n1\n", "d.csv: no feature columns besides 'label'", tabular.CSV_FORMAT),
    ("a,label\n", "d.csv: needs a header row and at least one data row", tabular.CSV_FORMAT),
    ("a,label\n1,0\n2\n", "d.csv:3: 1 values, header has 2", tabular.CSV_FORMAT),
    ("a,label\n1,0\n2, \n", "d.csv:3: empty label in column 'label'", tabular.CSV_FORMAT),
    ("a,label\n1,0\nabc,1\n", "d.csv:3: non-numeric value 'abc' in column 'a'",
     "every column but the label must hold numbers"),
    ("a,b,label\n1,2,0\nnan,1,1\n", "d.csv:3: column 'a' is NaN ('nan')", schema.NONFINITE_HINT),
    ("a,b,label\n1,-inf,0\n", "d.csv:2: column 'b' is infinite ('-inf')",
     schema.NONFINITE_HINT),
    ("a,label\n1e39,0\n", "d.csv:2: column 'a' is 1e+39, too large for float32 ('1e39')",
     schema.NONFINITE_HINT),
    ("a,label\n1,0\n2,0.5\n", "d.csv:3: label '0.5' is not a class id", schema.LABEL_HINT),
    ("a,label\n1,-1\n", "d.csv:2: label '-1' is negative; class ids start at 0",
     schema.LABEL_HINT),
    (b"a,label\n1,\xfe\n", "d.csv: cannot read CSV (", tabular.CSV_FORMAT),
])
def test_read_csv_errors(tmp_path: Path, content: str | bytes, fragment: str,
                         hint: str) -> None:
    with _raises(fragment) as caught:
        tabular.read_csv(_write(tmp_path / "d.csv", content), "label")
    assert caught.value.hint == hint


def test_evaluate_wording_of_a_value_that_is_not_a_finite_float32() -> None:
    with _raises("f:3: column 'c' is not a finite float32 ('inf')"):
        tabular.parse_number("inf", "f:3", "c", detail=False)
    assert tabular.parse_number(" 2.5 ", "f:3", "c") == 2.5


def test_a_label_column_the_caller_needs_with_its_hint(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b\n1,2\n")
    with _raises("d.csv: no label column 'y' (columns: a, b)") as caught:
        tabular.CsvTable(path, "y", label_hint="evaluating needs labels")
    assert caught.value.hint == "evaluating needs labels"


# -- npy: .npz archives -----------------------------------------------------------------------
def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _npy_bytes(shape: tuple[int, ...], values: np.ndarray, version: tuple[int, int] = (1, 0)
               ) -> bytes:
    """A .npy member whose header says ``shape`` whatever ``values`` holds (truncated ones)."""
    import io

    out = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(values.dtype), "fortran_order": False,
              "shape": shape}
    write = (np.lib.format.write_array_header_1_0 if version == (1, 0)
             else np.lib.format.write_array_header_2_0)
    write(out, header)
    return out.getvalue() + values.tobytes()


def test_headers_are_read_from_both_header_versions(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", _npy_bytes((4, 3), x, version=(2, 0)))
        archive.writestr("y.npy", _npy_bytes((4,), np.arange(4)))
    with npy.open_npz(path) as archive:
        headers = npy.npz_headers(path, archive)
    assert headers["x"] == npy.NpyHeader((4, 3), False, np.dtype(np.float32))
    assert headers["x"].row_size == 3
    assert np.array_equal(npy.read_npz(path)[0], x)


def test_read_and_inspect_npz(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(9, 2, 3))
    path = _npz(tmp_path / "d.npz", x=x, y=(np.arange(9) % 3).astype(np.uint8))
    assert npy.inspect_npz(path) == (9, (2, 3))
    read_x, read_y = npy.read_npz(path)
    assert read_x.dtype == np.float32 and np.array_equal(read_x, x.reshape(9, 6)
                                                         .astype(np.float32))
    assert read_y.dtype == np.int64 and read_y.tolist() == [0, 1, 2] * 3


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"features": np.ones((4, 2)), "y": np.zeros(4, np.int64)},
     "d.npz: needs arrays 'x' and 'y' (has features, y)"),
    ({}, "d.npz: needs arrays 'x' and 'y' (has no arrays)"),
    ({"x": np.array([["a", "b"]] * 4), "y": np.zeros(4, np.int64)},
     "d.npz: x has dtype <U1; it must hold numbers (int or float)"),
    ({"x": np.ones((4, 2)), "y": np.zeros(4)},
     "d.npz: y has dtype float64; it must hold integer class ids"),
    ({"x": np.ones(4), "y": np.zeros(4, np.int64)},
     "d.npz: x must be (n, features...) and y (n,), got x (4,) and y (4,)"),
    ({"x": np.ones((4, 2)), "y": np.zeros(3, np.int64)},
     "d.npz: x must be (n, features...) and y (n,), got x (4, 2) and y (3,)"),
    ({"x": np.ones((4, 0)), "y": np.zeros(4, np.int64)},
     "d.npz: x has no features (shape (4, 0))"),
    ({"x": np.ones((4, 2)), "y": np.array([0, 1, -2, 0])}, "d.npz: y[2] is -2; class ids start "
     "at 0"),
    ({"x": np.array([[1.0, 2.0], [3.0, np.nan]]), "y": np.zeros(2, np.int64)},
     "d.npz: x[1, 1] is NaN"),
    ({"x": np.array([[1.0, 1e39]]), "y": np.zeros(1, np.int64)},
     "d.npz: x[0, 1] is 1e+39, too large for float32"),
])
def test_npz_errors_the_check_and_the_load_agree_on(tmp_path: Path,
                                                    arrays: dict[str, np.ndarray],
                                                    fragment: str) -> None:
    path = _npz(tmp_path / "d.npz", **arrays)
    for read in (npy.inspect_npz, npy.read_npz):
        with _raises(fragment) as caught:
            read(path)  # type: ignore[operator]
        assert caught.value.hint is not None  # the format's when the error has none


def test_npz_that_cannot_be_read(tmp_path: Path) -> None:
    with _raises("d.npz: not a readable .npz file (") as caught:
        npy.inspect_npz(_write(tmp_path / "d.npz", b"not a zip"))
    assert caught.value.hint == npy.NPZ_FORMAT
    path = tmp_path / "e.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"not an array")
        archive.writestr("y.npy", _npy_bytes((1,), np.zeros(1, np.int64)))
    with _raises("e.npz: array 'x' is not a readable .npy array ("):
        npy.inspect_npz(path)


def _truncated(path: Path) -> Path:
    """``x`` says 10 rows of 3 and holds 5; ``y`` is whole."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", _npy_bytes((10, 3), np.ones((5, 3))))
        archive.writestr("y.npy", _npy_bytes((10,), np.zeros(10, np.int64)))
    return path


def test_truncated_arrays(tmp_path: Path) -> None:
    path = _truncated(tmp_path / "t.npz")
    with _raises("t.npz: array 'x' is truncated (15 of 30 values)"):
        npy.inspect_npz(path)
    with npy.open_npz(path) as archive:
        header = npy.npz_headers(path, archive)["x"]
        blocks = npy.row_blocks(path, archive, header, chunk_rows=2)
        assert [next(blocks)[0], next(blocks)[0]] == [0, 2]
        with _raises("t.npz: array 'x' is truncated at row 4"):
            next(blocks)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("compressed", [False, True])
def test_row_ranges_equal_whole_reads(tmp_path: Path, order: str, compressed: bool) -> None:
    x = np.asarray(np.random.default_rng(1).normal(size=(23, 2, 3)), order=order)
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=np.arange(23) % 2)
    whole = x.reshape(23, 6)
    with npy.open_npz(path) as archive:
        headers = npy.npz_headers(path, archive)
        assert headers["x"].fortran_order == (order == "F")
        for start, stop, chunk_rows in [(0, None, 4096), (0, None, 5), (7, 16, 4), (22, 23, 3),
                                        (5, 5, 2), (20, 99, 8)]:
            blocks = list(npy.row_blocks(path, archive, headers["x"], start=start, stop=stop,
                                         chunk_rows=chunk_rows))
            assert all(len(block) <= chunk_rows for _, block in blocks)
            assert [at for at, _ in blocks] == list(range(start, min(stop or 23, 23),
                                                          chunk_rows))
            rows = (np.concatenate([block for _, block in blocks]) if blocks
                    else np.zeros((0, 6)))
            assert np.array_equal(rows, whole[start:stop]), (start, stop, chunk_rows)
        y = np.concatenate([b for _, b in npy.row_blocks(path, archive, headers["y"], key="y",
                                                         chunk_rows=5)])
        assert y.shape == (23, 1) and y[:, 0].tolist() == (np.arange(23) % 2).tolist()
    assert np.array_equal(npy.read_npz(path)[0], whole.astype(np.float32))


def test_scanning_in_chunks_finds_what_a_whole_read_finds(tmp_path: Path) -> None:
    x = np.ones((40, 5), dtype=np.float64)
    x[29, 3] = np.inf
    path = _npz(tmp_path / "d.npz", x=x, y=np.zeros(40, np.int64))
    with npy.open_npz(path) as archive:
        headers = npy.npz_headers(path, archive)
        for chunk_bytes in (7, 64, 1 << 20):  # chunks that split values, and one whole read
            with _raises("d.npz: x[29, 3] is infinite"):
                npy.scan_member(path, archive, "x", headers["x"], keep=False,
                                chunk_bytes=chunk_bytes)
        y = npy.scan_member(path, archive, "y", headers["y"], keep=True, chunk_bytes=9)
        assert y.tolist() == [0] * 40
    assert npy.first_nonfinite(np.array([1, 2], np.int64)) is None
    assert npy.first_nonfinite(np.array([1.0, 4e38, np.nan])) == 1


# -- what the package may import --------------------------------------------------------------
def test_data_imports_only_the_standard_library_numpy_and_errors() -> None:
    """Every reader runs in the launcher before any framework is loaded, and in the server."""
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    problems = []
    for path in sorted(DATA.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                inside = name == "hvdtrain.errors" or name.startswith("hvdtrain.data")
                if not inside and name.split(".")[0] not in allowed:
                    problems.append(f"{path.name}:{node.lineno} imports {name}")
    assert problems == []


def test_the_raw_readers_load_no_numpy() -> None:
    code = ("import sys\nimport hvdtrain.data.csvfile, hvdtrain.data.jsonl, "
            "hvdtrain.data.schema\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'torch', 'tensorflow', 'click', 'sklearn')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
