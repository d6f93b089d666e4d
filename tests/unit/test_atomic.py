"""The one atomic-write helper: complete or absent, and a full disk as one clear error.

The full-disk cases fill a real small tmpfs (``tests.helpers.small_fs``, root only), with
the failure modes of the libraries hvdtrain writes through: an ``OSError`` with ENOSPC
(Python, NumPy) and an error with no errno at all (torch's ``basic_ios::clear: iostream
error``).
"""

from __future__ import annotations

import ast
import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from hvdtrain import atomic
from hvdtrain.atomic import atomic_output, atomic_write, atomic_write_text, human_bytes
from hvdtrain.errors import CheckpointError, HvdtrainError, OutputError
from hvdtrain.launch.protocol import RankStart, RunLayout
from hvdtrain.launch.restarts import RestartRecord, _write_records
from hvdtrain.training.checkpoint import CheckpointStore
from tests.helpers.small_fs import small_filesystem

KIB = 1024
PACKAGE = Path(atomic.__file__).parent


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_the_file_appears_complete_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert not target.exists()  # not before it is complete
        tmp.write_text("a,b\n")

    atomic_write(target, write)
    assert target.read_text() == "a,b\n"
    assert _names(tmp_path) == ["out.csv"]
    # hidden, same directory, and not ending like the target: no glob or scan finds it
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".tmp-")
    assert not seen[0].name.endswith(".csv")


def test_keep_suffix_for_writers_that_check_it(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "model.keras", keep_suffix=True) as tmp:
        assert tmp.suffix == ".keras" and tmp.name.startswith(".tmp-")
        tmp.write_bytes(b"k")
    assert _names(tmp_path) == ["model.keras"]


def test_a_directory_output_replaces_the_old_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "saved"
    (target / "variables").mkdir(parents=True)
    (target / "old.pb").write_text("old")
    with atomic_output(target) as tmp:
        (tmp / "variables").mkdir(parents=True)
        (tmp / "saved_model.pb").write_text("new")
    assert sorted(p.name for p in target.rglob("*")) == ["saved_model.pb", "variables"]
    assert _names(tmp_path) == ["saved"]


def test_a_bug_propagates_unchanged_and_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")

    def bug(tmp: Path) -> None:
        tmp.write_text("half")
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        atomic_write(target, bug)
    assert target.read_text() == "old" and _names(tmp_path) == ["summary.json"]


def test_an_hvdtrain_error_is_not_reworded(tmp_path: Path) -> None:
    def refuse(tmp: Path) -> None:
        tmp.write_text("half")
        raise CheckpointError("already explained")

    with pytest.raises(CheckpointError, match="already explained"):
        atomic_write(tmp_path / "x", refuse)
    assert _names(tmp_path) == []


def test_enospc_is_a_disk_full_output_error(tmp_path: Path) -> None:
    def full(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 3000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError) as caught:
        atomic_write(tmp_path / "preds.csv", full)
    error = caught.value
    assert error.disk_full and error.exit_code == 9
    assert error.message.startswith(f"no space left on device writing {tmp_path}/preds.csv "
                                    "(the filesystem filled up after 2.9 KiB; ")
    assert error.message.endswith(" free there without the partial file)")
    assert _names(tmp_path) == []


def test_a_permission_error_says_so(tmp_path: Path) -> None:
    def denied(tmp: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))

    with pytest.raises(OutputError, match=r"cannot write .*out.bin: Permission denied"):
        atomic_write(tmp_path / "out.bin", denied)


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536 * KIB, 5 << 30)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "5.0 GiB"]


def _fill(tmp: Path, chunk: int = 64 * KIB) -> None:
    with tmp.open("wb") as handle:
        while True:
            handle.write(b"\0" * chunk)
            handle.flush()


def test_a_real_full_disk_names_the_file_and_removes_it(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", 256 * KIB) as fs:
        (fs / "keep.txt").write_text("kept")
        with pytest.raises(OutputError) as caught:
            atomic_write(fs / "big.bin", _fill)
        assert caught.value.disk_full
        assert f"writing {fs}/big.bin (the filesystem filled up after" in caught.value.message
        assert caught.value.free is not None and caught.value.free > 200 * KIB  # freed again
        assert _names(fs) == ["keep.txt"]


def test_a_library_error_without_errno_on_a_full_disk_is_still_a_full_disk(
        tmp_path: Path) -> None:
    """torch.save on a full disk: RuntimeError('basic_ios::clear: iostream error')."""

    def torch_like(tmp: Path) -> None:
        try:
            _fill(tmp)
        except OSError:
            raise RuntimeError("basic_ios::clear: iostream error") from None

    with small_filesystem(tmp_path / "fs", 128 * KIB) as fs:
        with pytest.raises(OutputError, match="no space left on device writing"):
            atomic_write(fs / "epoch-0002.ckpt", torch_like)
        assert _names(fs) == []


def test_a_checkpoint_that_does_not_fit_names_the_last_complete_one(tmp_path: Path) -> None:
    """The first checkpoint (and best.ckpt) fit, the second does not: exit 7, the newest
    complete checkpoint and how to resume from it; no partial file."""
    with small_filesystem(tmp_path / "fs", 256 * KIB) as fs:
        store = CheckpointStore(fs / "run" / "checkpoints", keep=3)

        def sized(n: int):  # type: ignore[no-untyped-def]
            return lambda path: path.write_bytes(b"c" * n)

        store.save(1, sized(100 * KIB), is_best=True)
        with pytest.raises(CheckpointError) as caught:
            store.save(2, sized(100 * KIB), is_best=True)
        error = caught.value
        checkpoints = fs / "run" / "checkpoints"
        assert error.exit_code == 7
        assert error.message.startswith(f"no space left on device writing "
                                        f"{checkpoints}/epoch-0002.ckpt (")
        assert error.message.endswith(f"; last complete checkpoint: "
                                      f"{checkpoints}/epoch-0001.ckpt")
        assert error.hint is not None
        assert f"--resume {checkpoints}/epoch-0001.ckpt --run-dir {fs / 'run'}" in error.hint
        assert _names(checkpoints) == ["best.ckpt", "epoch-0001.ckpt"]


def test_text_and_errors_are_hvdtrain_errors(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "s.json", "{}")
    assert (tmp_path / "s.json").read_text() == "{}"
    assert issubclass(OutputError, HvdtrainError)
    assert atomic.FULL_BELOW >= 64 * KIB  # a buffer's worth at least


def test_the_file_then_its_directory_is_fsynced_around_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The content is on disk before the rename, and the rename before the call returns."""
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        steps.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic_write_text(tmp_path / "summary.json", "{}")
    assert steps == ["fsync file", "replace", "fsync dir"]


def test_writers_of_one_target_at_once_never_share_a_temporary(tmp_path: Path) -> None:
    """Ranks of one host write the same rules file, the rank wrapper and the supervisor's
    relay the same record: every write completes, the file is one of them whole."""
    target, failures = tmp_path / "rank-0.start.json", []
    texts = [json.dumps({"writer": n, "pad": "x" * 4000}) for n in range(8)]

    def write(text: str) -> None:
        try:
            for _ in range(20):
                atomic_write_text(target, text)
        except Exception as exc:  # reported below, from the main thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and target.read_text() in texts
    assert _names(tmp_path) == ["rank-0.start.json"]


def test_protocol_records_are_written_whole_with_no_leftover(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run")
    layout.prepare()
    layout.write_start(RankStart(0, "node-1", 10, 11, 1.5))
    layout.write_record("start", {"event": "start", "rank": 1, "host": "node-2", "pid": 20,
                                  "child_pid": 21, "time": 2.5})
    assert sorted(layout.starts()) == [0, 1]
    assert _names(layout.ranks_dir) == ["rank-0.start.json", "rank-1.start.json"]


def test_the_restart_path_replaces_summary_json_instead_of_rewriting_it(
        tmp_path: Path) -> None:
    """A reader (or a crash) mid-way sees the old summary or the new one, never half: the
    file is a new one (a new inode), not the old one truncated and written again."""
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"val_accuracy": 0.9}))
    before = summary.stat().st_ino
    record = RestartRecord(0, "now", "rank 1 died", "b", (), 2, 2, "epoch-0001.ckpt")
    _write_records(RunLayout(tmp_path), [record])
    assert summary.stat().st_ino != before
    data = json.loads(summary.read_text())
    assert data["val_accuracy"] == 0.9 and data["restarts"][0]["reason"] == "rank 1 died"
    assert json.loads((tmp_path / "restarts.json").read_text()) == data["restarts"]
    assert _names(tmp_path) == ["restarts.json", "summary.json"]


def _renames(tree: ast.Module) -> list[tuple[int, str]]:
    """Calls that rename over a file: ``os.replace``/``os.rename`` (also imported bare) and
    ``Path.replace``/``Path.rename`` (one argument; ``str.replace`` takes two)."""
    from_os = {alias.asname or alias.name for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module == "os"
               for alias in node.names if alias.name in ("replace", "rename")}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in from_os:
            found.append((node.lineno, func.id))
        elif isinstance(func, ast.Attribute) and func.attr in ("replace", "rename"):
            on_os = isinstance(func.value, ast.Name) and func.value.id == "os"
            if on_os or (len(node.args) == 1 and not node.keywords):
                found.append((node.lineno, ast.unparse(func)))
    return found


def test_the_scan_finds_every_way_to_rename_over_a_file() -> None:
    source = ("import os\nfrom os import replace as swap\nos.replace(a, b)\nos.rename(a, b)\n"
              "tmp.replace(target)\nPath(x).rename(y)\nswap(a, b)\n"
              "name.replace('_', '-')\ndataclasses.replace(obj, a=1)\n")
    assert [line for line, _ in _renames(ast.parse(source))] == [3, 4, 5, 6, 7]


def test_atomic_is_the_only_module_that_renames_over_a_file() -> None:
    """One writer: a second one (a fixed ``.tmp`` name, no fsync) cannot drift back in.
    Write through ``hvdtrain.atomic`` instead."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        renames = _renames(ast.parse(path.read_text(), str(path)))
        if renames and path != PACKAGE / "atomic.py":
            found[str(path.relative_to(PACKAGE.parent))] = renames
    assert found == {}
    assert _renames(ast.parse((PACKAGE / "atomic.py").read_text()))  # the scan still sees it
