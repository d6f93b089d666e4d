"""Checkpoint files without a framework: atomic writes, retention, resolving --resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvdtrain.atomic import atomic_write
from hvdtrain.errors import CheckpointError, OutputError
from hvdtrain.training.checkpoint import CheckpointStore, refuse_to_overwrite


def _writer(text: str):  # type: ignore[no-untyped-def]
    return lambda path: path.write_text(text)


def test_keeps_the_last_k_plus_best(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    for epoch in range(1, 5):
        store.save(epoch, _writer(f"e{epoch}"), is_best=epoch == 2)
    assert [e for e, _ in store.epoch_files()] == [3, 4]
    assert (tmp_path / "checkpoints" / "best.ckpt").read_text() == "e2"
    latest = store.resolve("latest")
    assert latest is not None and latest.read_text() == "e4"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "epoch-0001.ckpt"
    target.write_text("good")

    def crash(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OutputError, match=r"cannot write .*epoch-0001\.ckpt: disk full"):
        atomic_write(target, crash)
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.ckpt"]


def test_resolve_errors_are_clear(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="--resume latest: no checkpoint in"):
        store.resolve("latest")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        store.resolve(str(tmp_path / "nope.ckpt"))


def test_a_fresh_run_never_overwrites_another_runs_checkpoints(tmp_path: Path) -> None:
    refuse_to_overwrite(tmp_path, None)  # empty: fine
    CheckpointStore(tmp_path / "checkpoints").save(1, _writer("x"), is_best=False)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        refuse_to_overwrite(tmp_path, None)
    refuse_to_overwrite(tmp_path, "latest")  # resuming it is fine
