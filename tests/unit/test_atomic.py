"""The one atomic-write helper: complete or absent, and a full disk as one clear error.

The full-disk cases fill a real small tmpfs (``tests.small_fs``, root only), with the failure
modes of the libraries hvdtrain writes through: an ``OSError`` with ENOSPC (Python, NumPy) and
an error with no errno at all (torch's ``basic_ios::clear: iostream error``).
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from hvdtrain import atomic
from hvdtrain.atomic import atomic_output, atomic_write, atomic_write_text, human_bytes
from hvdtrain.errors import CheckpointError, HvdtrainError, OutputError
from hvdtrain.training.checkpoint import CheckpointStore
from tests.small_fs import small_filesystem

KIB = 1024


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
