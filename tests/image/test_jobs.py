"""Jobs in one container: the default job, data and run directory on a volume, and a failing
rank's exit code as the container's. Every container runs with ``--network none``."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.image_lab import TEST_TIMEOUT_S, USER_ID, BuiltImage, Containers, note
from tests.helpers.jobs import read_summary

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S)  # the first test waits for the builds

IDENTICAL = "parameters identical on all ranks: True"


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def _last_line_with(text: str, words: str) -> str:
    lines = [line for line in text.splitlines() if words in line]
    return lines[-1] if lines else ""


def _tail(text: str, chars: int = 3000) -> str:
    return text[-chars:]


def chown_to_image_user(path: Path) -> None:
    """A mounted directory must be writable by the image's user (uid 1000)."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, USER_ID, USER_ID)


def test_the_default_job_trains_two_ranks(image: BuiltImage, containers: Containers) -> None:
    """``podman run IMAGE``: the image's CMD, the default 2-rank job."""
    started = time.monotonic()
    done = containers.run("default", "--rm", "--network", "none", image.name, timeout=900)
    seconds = time.monotonic() - started
    out = _output(done)
    last = _last_line_with(out, "parameters identical")
    assert done.returncode == 0, f"podman run {image.name} exited {done.returncode}:\n{_tail(out)}"
    assert "val_acc" in out, f"no epoch line (val_acc) in the default job's output:\n{_tail(out)}"
    assert IDENTICAL in last, f"last line on parameters: {last!r}\n{_tail(out)}"
    note(f"default job: exit 0 in {seconds:.0f} s; {last[:160]}")


def _write_csv(path: Path, rows: int = 400, features: int = 6) -> None:
    """A small separable CSV data set with a ``label`` column."""
    rng = random.Random(0)
    lines = [",".join(f"f{i}" for i in range(features)) + ",label"]
    for _ in range(rows):
        x = [rng.gauss(0, 1) for _ in range(features)]
        lines.append(",".join(f"{v:.5f}" for v in x) + f",{int(x[0] + 0.5 * x[1] > 0)}")
    path.write_text("\n".join(lines) + "\n")


def test_data_and_run_directory_on_a_volume(image: BuiltImage, containers: Containers,
                                            tmp_path: Path) -> None:
    """Training data read from, and the run directory written to, a mounted directory, as
    the image's non-root user."""
    data = tmp_path / "data"
    data.mkdir()
    _write_csv(data / "x.csv")
    chown_to_image_user(data)
    done = containers.run(
        "volume", "--rm", "--network", "none", "-v", f"{data}:/data", image.name,
        "train", "--data", "/data/x.csv", "--label-column", "label", "--epochs", "2",
        "--run-dir", "/data/run", timeout=600)
    out = _output(done)
    assert done.returncode == 0, f"training on the volume exited {done.returncode}:\n{_tail(out)}"
    summary_file = data / "run" / "summary.json"
    assert summary_file.is_file(), f"no summary.json in the mounted run directory:\n{_tail(out)}"
    owner = summary_file.stat().st_uid
    assert owner == USER_ID, f"{summary_file} is owned by uid {owner}, not the image's {USER_ID}"
    summary = read_summary(data / "run")
    assert summary["world_size"] == 2, summary
    note(f"volume: summary.json written by uid {owner}: world_size {summary['world_size']}, "
         f"epochs {summary.get('epochs_run')}, val_accuracy {summary.get('val_accuracy')}")


def test_a_failing_ranks_exit_code_is_the_containers(image: BuiltImage,
                                                     containers: Containers) -> None:
    """``launch -np 2``: rank 1 exits 3, so the container exits 3 and the output names rank 1."""
    program = ("import sys, os; "
               "sys.exit(3 if os.environ.get('OMPI_COMM_WORLD_RANK') == '1' else 0)")
    done = containers.run("fail", "--rm", "--network", "none", image.name,
                          "launch", "-np", "2", "--", "python", "-c", program, timeout=300)
    out = _output(done)
    assert done.returncode == 3, f"container exited {done.returncode}, expected 3:\n{_tail(out)}"
    assert "rank 1" in out, f"the output does not name the failing rank 1:\n{_tail(out)}"
    note(f"rank exit code: rank 1 exits 3 -> container exits 3: "
         f"{_last_line_with(out, 'rank 1')[:160]}")
