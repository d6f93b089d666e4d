"""The launcher's free-space note: a run whose checkpoints cannot fit is told before it starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hvdtrain.config import TrainConfig
from hvdtrain.train_launcher import diskspace
from hvdtrain.train_launcher.diskspace import (
    BUILTIN_INPUTS,
    checkpoint_bytes,
    input_shape,
    parameter_count,
    peak_checkpoints,
    space_note,
)
from hvdtrain.train_launcher.validate import validate_run
from hvdtrain.training.datasets import load_dataset
from tests.helpers.small_fs import small_filesystem

MIB = 1 << 20
CONFIG = TrainConfig(data="breast-cancer", epochs=10)  # mlp, adam, keep 3, every epoch


@pytest.mark.parametrize("name", list(BUILTIN_INPUTS))
def test_the_built_in_data_shapes_are_the_loaders(name: str) -> None:
    data = load_dataset(name, 0, 0.2, "label")
    assert BUILTIN_INPUTS[name] == (data.num_features, data.image_shape, data.num_outputs)


def test_parameter_counts_of_the_built_in_models() -> None:
    # in→256→256→out, weights and biases
    assert parameter_count("mlp", 30, None, 1) == 30 * 256 + 256 + 256 * 256 + 256 + 257
    assert parameter_count("cnn", 64, (1, 8, 8), 10) == (
        9 * 32 + 32 + 9 * 32 * 64 + 64 + 64 * 16 * 128 + 128 + 128 * 10 + 10)
    assert parameter_count("transformer", 64, None, 1) is not None
    assert parameter_count("my_models:factory", 30, None, 1) is None


def test_a_checkpoint_is_parameters_and_optimizer_slots() -> None:
    params = parameter_count("mlp", 30, None, 1)
    assert params is not None
    assert checkpoint_bytes(CONFIG) == 4 * params * 3 + diskspace.META_BYTES  # adam: 2 slots
    sgd = checkpoint_bytes(replace(CONFIG, optimizer="sgd"))
    assert sgd == 4 * params * 2 + diskspace.META_BYTES
    user = replace(CONFIG, model="my_models:factory")
    assert checkpoint_bytes(user) is None  # not built on the launcher for this


def test_resuming_measures_the_checkpoint_itself(tmp_path: Path) -> None:
    ckpt = tmp_path / "epoch-0004.ckpt"
    ckpt.write_bytes(b"x" * 12345)
    user = replace(CONFIG, model="my_models:factory")
    assert checkpoint_bytes(user, ckpt) == 12345


def test_shapes_of_user_files_from_their_headers(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,c,label\n1,2,3,0\n")
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((5, 3, 4), np.float32), y=np.zeros(5, np.int64))
    assert input_shape(replace(CONFIG, data=str(csv))) == (3, None, 1)
    assert input_shape(replace(CONFIG, data=str(npz))) == (12, None, 1)
    assert input_shape(replace(CONFIG, data=str(tmp_path / "t.jsonl"))) == (64, None, 1)


@pytest.mark.parametrize(("changes", "peak"), [
    ({}, 6),  # keep 3 + the next one, best.ckpt + its replacement
    ({"epochs": 1}, 3),
    ({"keep_checkpoints": 1}, 4),
    ({"checkpoint_every_steps": 50}, 7),
    ({"checkpoint_every": 0}, 0),
    ({"checkpoint_every": 0, "checkpoint_every_steps": 50}, 4),
])
def test_peak_checkpoint_files(changes: dict[str, Any], peak: int) -> None:
    assert peak_checkpoints(replace(CONFIG, **changes)) == peak


def _free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(diskspace, "free_bytes", lambda _path: free)


def test_the_note_says_what_is_free_and_what_is_needed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    size = checkpoint_bytes(CONFIG)
    assert size is not None
    _free(monkeypatch, 2 * MIB)
    note = space_note(CONFIG, tmp_path / "run")
    assert note is not None
    assert note.startswith(f"warning: low disk space: {tmp_path / 'run'} has 2.0 MiB free, but its "
                           "checkpoints may take about ")
    assert "(6 files of about " in note and "--keep-checkpoints 3" in note
    assert "exit 7" in note
    _free(monkeypatch, 6 * size)
    assert space_note(CONFIG, tmp_path / "run") is None  # exactly enough
    _free(monkeypatch, 0)
    assert space_note(replace(CONFIG, checkpoint_every=0), tmp_path) is None  # none written
    assert space_note(replace(CONFIG, model="my_models:factory"), tmp_path) is None


def test_a_resumed_runs_own_checkpoints_count_as_room(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("epoch-0001.ckpt", "epoch-0002.ckpt", "epoch-0003.ckpt", "best.ckpt"):
        (checkpoints / name).write_bytes(b"c" * 1000)
    _free(monkeypatch, 2000)  # + 4000 held by the run itself = the 6 files it needs
    assert space_note(CONFIG, tmp_path / "run", checkpoints / "epoch-0003.ckpt") is None
    _free(monkeypatch, 1999)
    assert space_note(CONFIG, tmp_path / "run", checkpoints / "epoch-0003.ckpt") is not None


def test_validate_run_notes_a_small_filesystem(tmp_path: Path) -> None:
    """The real thing: a 1 MiB tmpfs cannot hold 6 checkpoints of the mlp (~0.9 MiB each);
    not said when no rank runs on this host (the run directory is then another host's)."""
    with small_filesystem(tmp_path / "fs", MIB) as fs:
        notes = validate_run(CONFIG, fs / "run")
        assert len(notes) == 1
        assert notes[0].startswith(f"warning: low disk space: {fs / 'run'} has ")
        assert validate_run(CONFIG, fs / "run", data_may_be_elsewhere=True) == []
    assert validate_run(CONFIG, tmp_path / "roomy") == []
