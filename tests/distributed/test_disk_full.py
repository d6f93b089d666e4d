"""A full disk, through the real launcher, both frameworks: one line, a clean stop, nothing half
written.

The run directory is a small tmpfs (``tests.helpers.small_fs``, root only) that holds the first
checkpoint and ``best.ckpt`` but not the second epoch's checkpoint. Before this was handled,
rank 0 died there with torch's raw ``basic_ios::clear: iostream error`` traceback, rank 1 with a
``HorovodInternalError`` stack, and the job exited 1. Now: a note before the run that the
checkpoints will not fit; then every rank stops with the same one-line ``CheckpointError``
(exit 7) naming the file, the space left and the last complete checkpoint to ``--resume``
from; the partial file is gone and the earlier checkpoint is intact. ``predict`` and
``export`` onto a full disk: exit 9, one line, no partial output (and no orphan sidecar).

One training run per framework (module-scoped); its surviving checkpoint feeds predict and
export.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hvdtrain.catalog import FRAMEWORKS
from hvdtrain.launch.protocol import RunLayout
from hvdtrain.training.checkpoint import read_checkpoint_meta
from tests.helpers.jobs import REPO, hvdtrain, run_job
from tests.helpers.small_fs import small_filesystem

pytestmark = pytest.mark.distributed

KIB = 1024
# the mlp on breast-cancer: ~0.9 MiB a checkpoint (torch and TensorFlow alike), so 2.3 MiB holds
# epoch-0001.ckpt, best.ckpt and the logs, and fills up during epoch-0002.ckpt
RUN_FS = 2400 * KIB
EXPORTS = {"torch": ("torchscript", "model.pt"), "tensorflow": ("keras", "model.keras")}
CHECKPOINT_EXIT, OUTPUT_EXIT = 7, 9


@pytest.fixture(scope="module", params=FRAMEWORKS.names())
def full_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:
    framework = request.param
    work = tmp_path_factory.mktemp(f"disk-full-{framework}")
    with small_filesystem(work / "fs", RUN_FS) as fs:
        run_dir = fs / "run"
        done = run_job(hvdtrain("train", "-np", "2", "--framework", framework, "--data",
                                "breast-cancer", "--epochs", "3", "--run-dir", str(run_dir)),
                       cwd=REPO, timeout=240)
        yield {"framework": framework, "run_dir": run_dir, "done": done, "work": work}


def _no_traceback(text: str) -> None:
    for bad in ("Traceback", "HorovodInternalError", "basic_ios", "unexpected pos"):
        assert bad not in text, text[-3000:]


def test_a_full_disk_at_the_second_checkpoint_stops_every_rank_with_one_line(
        full_run: dict[str, Any]) -> None:
    done, run_dir = full_run["done"], full_run["run_dir"]
    checkpoints = run_dir / "checkpoints"
    err = done.stderr
    assert done.returncode == CHECKPOINT_EXIT, err[-3000:]
    # before the run: the checkpoints will not fit
    assert f"hvdtrain: warning: low disk space: {run_dir} has " in err, err[-3000:]
    # one line: the file, the space left, the last complete checkpoint; the hint resumes it
    errors = [line for line in err.splitlines()
              if line.startswith("hvdtrain: error: no space left")]
    assert errors == [
        f"hvdtrain: error: no space left on device writing {checkpoints}/epoch-0002.ckpt ("
        + errors[0].split(" (", 1)[1]], err[-3000:]
    assert " free there without the partial file); last complete checkpoint: " \
           f"{checkpoints}/epoch-0001.ckpt" in errors[0]
    assert f"--resume {checkpoints}/epoch-0001.ckpt --run-dir {run_dir}" in err
    assert "hvdtrain: rank 0 on " in err and " failed first (exit code 7)" in err
    _no_traceback(err + done.stdout)
    # rank 0 told the others (no HorovodInternalError), and left first; rank 1 raised the
    # same error a moment later, unless mpirun ended it first for rank 0's exit
    exits = RunLayout(run_dir).exits()
    assert (exits[0].rank, exits[0].exit_code) == (0, CHECKPOINT_EXIT), exits
    assert exits[1].exit_code == CHECKPOINT_EXIT or exits[1].signal is not None, exits
    assert f"writing {checkpoints}/epoch-0002.ckpt" in (run_dir / "logs" / "rank-0.err"
                                                        ).read_text()
    for rank in (0, 1):
        _no_traceback((run_dir / "logs" / f"rank-{rank}.err").read_text())
    # the earlier checkpoint is intact, nothing partial is left anywhere
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "epoch-0001.ckpt"]
    assert read_checkpoint_meta(checkpoints / "epoch-0001.ckpt")["epoch"] == 1
    assert [p for p in run_dir.rglob("*") if p.name.startswith(".tmp")] == []
    assert not (run_dir / "summary.json").exists()


def test_predict_onto_a_full_disk_is_one_line_and_no_file(full_run: dict[str, Any]) -> None:
    checkpoint = full_run["run_dir"] / "checkpoints" / "epoch-0001.ckpt"
    # 569 rows of about 30 bytes; 4 KiB fills up after a few of the 9 rounds
    with small_filesystem(full_run["work"] / "out", 4 * KIB) as out:
        output = out / "predictions.csv"
        done = run_job(hvdtrain("predict", "--checkpoint", str(checkpoint), "--data",
                                "breast-cancer", "--split", "all", "--batch-size", "32",
                                "--output", str(output), "-np", "2"), cwd=REPO, timeout=240)
        assert done.returncode == OUTPUT_EXIT, done.stderr[-3000:]
        errors = [line for line in done.stderr.splitlines() if "no space left" in line]
        assert len(errors) == 1, done.stderr[-3000:]  # rank 0's, shown once
        assert errors[0].startswith(f"hvdtrain: error: no space left on device writing "
                                    f"{output} (")
        assert " failed first (exit code 9)" in done.stderr and "rank 0 on " in done.stderr
        _no_traceback(done.stderr + done.stdout)
        assert list(out.iterdir()) == []


def test_export_onto_a_full_disk_is_one_line_and_no_file(full_run: dict[str, Any]) -> None:
    checkpoint = full_run["run_dir"] / "checkpoints" / "epoch-0001.ckpt"
    fmt, name = EXPORTS[full_run["framework"]]
    with small_filesystem(full_run["work"] / "export", 64 * KIB) as out:
        done = run_job(hvdtrain("export", "--checkpoint", str(checkpoint), "--format", fmt,
                                "--output", str(out / name)), cwd=REPO, timeout=240)
        assert done.returncode == OUTPUT_EXIT, done.stderr[-3000:]
        assert f"hvdtrain: error: no space left on device writing {out / name} (" \
               in done.stderr, done.stderr[-3000:]
        _no_traceback(done.stderr + done.stdout)
        assert list(out.iterdir()) == []  # neither the model nor its sidecar
